package dev.shardwise.data;

/**
 * Splits text into the chunks that byte-level BPE merges within (never across), in the spirit of GPT-2's
 * pre-tokenization regex (Radford et al. 2019) but made to work on text without spaces, such as Chinese.
 *
 * <p>Rules, applied left to right (version {@value #VERSION}; a saved tokenizer records it, because any change
 * changes the tokens):
 * <ul>
 *   <li>an English contraction suffix ({@code 's 't 're 've 'm 'll 'd}, any case) is a chunk;</li>
 *   <li>a run of whitespace is a chunk, except that a final U+0020 space before a non-space character is
 *       split off and becomes the prefix of the next chunk (GPT-2's " word" tokens);</li>
 *   <li>after that optional space: a run of letters (with combining marks) of at most {@value #MAX_LETTERS},
 *       a run of CJK ideographs or kana of at most {@value #MAX_CJK} (CJK text has no spaces, so an uncapped
 *       run would make whole lines into chunks; four characters still lets frequent words merge), a run of
 *       digits of at most {@value #MAX_DIGITS} (as cl100k does), or a run of other characters (punctuation,
 *       symbols, controls) of at most {@value #MAX_OTHER}.</li>
 * </ul>
 * Chunks partition the input exactly, so concatenating them gives the input back.
 */
final class Pretokenizer {
    static final String VERSION = "shardwise-chunks-v1";
    static final int MAX_LETTERS = 64;
    static final int MAX_CJK = 4;
    static final int MAX_DIGITS = 3;
    static final int MAX_OTHER = 32;

    private static final int SPACE = 0, LETTER = 1, CJK = 2, DIGIT = 3, OTHER = 4;

    private Pretokenizer() {}

    /** Receives one chunk, the char range {@code [from, to)} of the text. */
    @FunctionalInterface
    interface ChunkSink {
        void accept(int from, int to);
    }

    /** Calls {@code sink} for every chunk of {@code text}, in order. */
    static void split(String text, ChunkSink sink) {
        int n = text.length();
        int i = 0;
        while (i < n) {
            int cp = text.codePointAt(i);
            int cls = classOf(cp);
            if (cp == '\'') {
                int end = contractionEnd(text, i);
                if (end > 0) {
                    sink.accept(i, end);
                    i = end;
                    continue;
                }
            }
            if (cls == SPACE) {
                int j = i;
                int last = i;
                while (j < n) {
                    int c = text.codePointAt(j);
                    if (classOf(c) != SPACE) break;
                    last = j;
                    j += Character.charCount(c);
                }
                if (j < n && text.charAt(last) == ' ') {
                    if (last > i) sink.accept(i, last);   // the run without its final space
                    int end = runEnd(text, last + 1);      // the space starts the next chunk: " word"
                    sink.accept(last, end);
                    i = end;
                } else {
                    sink.accept(i, j);
                    i = j;
                }
                continue;
            }
            int end = runEnd(text, i);
            sink.accept(i, end);
            i = end;
        }
    }

    /** End of the capped run of one character class that starts at {@code runStart < text.length()}. */
    private static int runEnd(String text, int runStart) {
        int n = text.length();
        int cls = classOf(text.codePointAt(runStart));
        int max = switch (cls) {
            case LETTER -> MAX_LETTERS;
            case CJK -> MAX_CJK;
            case DIGIT -> MAX_DIGITS;
            default -> MAX_OTHER;
        };
        int j = runStart;
        int count = 0;
        while (j < n && count < max) {
            int c = text.codePointAt(j);
            int k = classOf(c);
            boolean same = k == cls || (cls == LETTER && isMark(c));
            if (!same || (cls == OTHER && c == '\'' && j > runStart && contractionEnd(text, j) > 0)) break;
            j += Character.charCount(c);
            count++;
        }
        return j;
    }

    /** End of a contraction suffix starting with the apostrophe at {@code i}, or -1. */
    private static int contractionEnd(String text, int i) {
        int n = text.length();
        if (i + 1 >= n) return -1;
        char a = Character.toLowerCase(text.charAt(i + 1));
        if (a == 's' || a == 't' || a == 'm' || a == 'd') return i + 2;
        if (i + 2 < n) {
            char b = Character.toLowerCase(text.charAt(i + 2));
            if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return i + 3;
        }
        return -1;
    }

    private static boolean isMark(int cp) {
        int t = Character.getType(cp);
        return t == Character.NON_SPACING_MARK || t == Character.COMBINING_SPACING_MARK
                || t == Character.ENCLOSING_MARK;
    }

    private static int classOf(int cp) {
        if (cp < 0x80) {
            if (cp == ' ' || (cp >= 0x09 && cp <= 0x0D)) return SPACE;
            if ((cp | 0x20) >= 'a' && (cp | 0x20) <= 'z') return LETTER;
            if (cp >= '0' && cp <= '9') return DIGIT;
            return OTHER;
        }
        if (Character.isWhitespace(cp) || Character.isSpaceChar(cp)) return SPACE;
        if (Character.isLetter(cp)) {
            Character.UnicodeScript script = Character.UnicodeScript.of(cp);
            return script == Character.UnicodeScript.HAN || script == Character.UnicodeScript.HIRAGANA
                    || script == Character.UnicodeScript.KATAKANA ? CJK : LETTER;
        }
        int t = Character.getType(cp);
        if (t == Character.DECIMAL_DIGIT_NUMBER || t == Character.LETTER_NUMBER || t == Character.OTHER_NUMBER) {
            return DIGIT;
        }
        if (isMark(cp)) return LETTER;
        return OTHER;
    }
}
