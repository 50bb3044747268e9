package dev.shardwise.data;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.*;

class ByteLevelBpeTest {
    private static final String SHAKESPEARE = TestTexts.shakespeare(200_000);
    private static final ByteLevelBpe ENGLISH = BpeTrainer.train(List.of(SHAKESPEARE), 1024);

    private static void assertRoundTrip(Tokenizer t, String s, String label) {
        int[] ids = t.encode(s);
        String back = t.decode(ids);
        if (!back.equals(s)) {
            int i = 0;
            while (i < Math.min(s.length(), back.length()) && s.charAt(i) == back.charAt(i)) i++;
            fail(label + ": decode(encode(s)) differs from s at char " + i + " of " + s.length()
                    + " (decoded length " + back.length() + ")");
        }
    }

    @Test
    void roundTripsEnglish() {
        assertRoundTrip(ENGLISH, SHAKESPEARE, "shakespeare train slice");
        assertRoundTrip(ENGLISH, BundledCorpus.tinyShakespeare().val().text().substring(0, 20_000), "shakespeare val");
    }

    @Test
    void roundTripsChineseWithEnglishOrChineseMerges() {
        String tang = TestTexts.sharedSlice("tang_poems.val.txt", 30_000);
        String song = TestTexts.sharedSlice("song_ci.val.txt", 30_000);
        ByteLevelBpe chinese = BpeTrainer.train(List.of(tang), 2048);
        for (Tokenizer t : List.of(ENGLISH, chinese)) {
            assertRoundTrip(t, tang, t.name() + " on tang_poems");
            assertRoundTrip(t, song, t.name() + " on song_ci");
        }
        // Merges learned on Chinese must compress Chinese: fewer tokens than UTF-8 bytes by a wide margin.
        int bytes = song.getBytes(StandardCharsets.UTF_8).length;
        int tokens = chinese.encode(song).length;
        assertTrue(tokens < bytes / 2, "song_ci val: " + tokens + " tokens for " + bytes + " bytes, expected < half");
    }

    @Test
    void roundTripsUnusualStrings() {
        List<String> cases = new ArrayList<>(List.of("", " ", "\n\n\n", "a", "\u0000\u0001\u007f", "\uFFFD\uFFFD",
                "\uD800", "x\uDC00y", "\uDBFF\uDFFF", "\uD83D\uDE00 emoji 👍🏽 and ZWJ 👩‍👩‍👧", "e\u0301\u0301 café",
                "CRLF\r\nline\r\n", "tabs\t\tand  spaces   ", "<|endoftext|>", "don't 'tis I'LL we've",
                "1234567890 3.14159", "日本語のテキスト、カタカナ。", "한국어 텍스트", "Ελληνικά русский עברית العربية",
                "a".repeat(500), "中".repeat(100), "!".repeat(100)));
        SplittableRandom random = new SplittableRandom(7);
        for (int k = 0; k < 200; k++) {
            char[] c = new char[random.nextInt(1, 40)];
            for (int i = 0; i < c.length; i++) c[i] = (char) random.nextInt(0, 0x10000);   // any UTF-16 unit
            cases.add(new String(c));
        }
        for (String s : cases) assertRoundTrip(ENGLISH, s, "string " + s.codePoints().limit(20).boxed().toList());
    }

    @Test
    void encodesEndOfTextMarkupAsOrdinaryText() {
        int[] ids = ENGLISH.encode("a<|endoftext|>b");
        assertTrue(Arrays.stream(ids).noneMatch(id -> id == ENGLISH.endOfText()), Arrays.toString(ids));
        assertEquals("<|endoftext|>", ENGLISH.decode(new int[] {ENGLISH.endOfText()}));
        assertEquals(1023, ENGLISH.endOfText());
        assertEquals(1024, ENGLISH.vocabSize());
    }

    @Test
    void trainingIsDeterministic() {
        ByteLevelBpe again = BpeTrainer.train(List.of(SHAKESPEARE), 1024);
        assertArrayEquals(ENGLISH.toBytes(), again.toBytes(), "two trainings on the same text differ");
        assertEquals(ENGLISH.fingerprint(), again.fingerprint());
        ByteLevelBpe other = BpeTrainer.train(List.of(SHAKESPEARE.substring(0, 50_000)), 1024);
        assertNotEquals(ENGLISH.fingerprint(), other.fingerprint(), "different text, same fingerprint");
    }

    @Test
    void mergesCompressShakespeareBelowHalfATokenPerChar() {
        String val = BundledCorpus.tinyShakespeare().val().text();
        int[] ids = ENGLISH.encode(val);
        double perChar = ids.length / (double) val.length();
        assertTrue(perChar < 0.5, "vocab 1024 trained on 200 KB: " + perChar + " tokens/char on val, expected < 0.5");
        // More merges, fewer tokens.
        ByteLevelBpe small = BpeTrainer.train(List.of(SHAKESPEARE), 300);
        assertTrue(small.encode(val).length > ids.length, "vocab 300 should need more tokens than vocab 1024");
    }

    @Test
    void firstMergesAreTheMostFrequentEnglishPairs() {
        // In Shakespeare the most frequent byte pairs inside chunks start with a space or are 'e' pairs;
        // every merge's text must occur in the corpus.
        for (int id = 256; id < 300; id++) {
            String piece = new String(ENGLISH.tokenBytes(id), StandardCharsets.UTF_8);
            assertTrue(SHAKESPEARE.contains(piece), "merge " + id + " '" + piece + "' does not occur in the corpus");
        }
    }

    @Test
    void stopsEarlyWhenNoPairRepeats() {
        ByteLevelBpe tiny = BpeTrainer.train(List.of("abab"), 5000);
        // "abab": (a,b) twice -> merge; then (ab,ab) once -> stop.
        assertEquals(258, tiny.vocabSize(), "merges learned from 'abab'");
        assertArrayEquals(new int[] {256, 256}, tiny.encode("abab"));
    }

    @Test
    void rejectsVocabBelow257() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> BpeTrainer.train(List.of("x"), 256));
        assertTrue(e.getMessage().contains("257"), e.getMessage());
    }

    @Test
    void saveAndLoadRoundTrip(@TempDir Path dir) throws IOException {
        Path file = dir.resolve("tok.bpe");
        ENGLISH.save(file);
        ByteLevelBpe loaded = Tokenizers.load(file);
        assertEquals(ENGLISH.fingerprint(), loaded.fingerprint());
        assertEquals(ENGLISH.name(), loaded.name());
        assertEquals(ENGLISH.vocabSize(), loaded.vocabSize());
        assertArrayEquals(ENGLISH.encode(SHAKESPEARE), loaded.encode(SHAKESPEARE));
        assertEquals(ENGLISH.fingerprint(), Tokenizers.resolve(file.toString()).fingerprint());
        try (var files = Files.list(dir)) {
            assertEquals(List.of(file), files.toList(), "save left temporary files");
        }
    }

    @Test
    void loadRejectsDamagedFiles(@TempDir Path dir) throws IOException {
        Path file = dir.resolve("tok.bpe");
        ENGLISH.save(file);
        String text = Files.readString(file);

        Files.writeString(file, text.replace("name bpe-1024", "name bpe-1025"));
        assertLoadFails(file, "checksum");
        Files.writeString(file, text.substring(0, text.length() / 2));
        assertLoadFails(file, "sha256");
        Files.writeString(file, text.replace("shardwise-tokenizer 1", "shardwise-tokenizer 9"));
        assertLoadFails(file, "version");
        Files.writeString(file, "{\"model\": {}}\n");
        assertLoadFails(file, "does not start with");
        assertLoadFails(dir.resolve("missing.bpe"), "does not exist");
    }

    private static void assertLoadFails(Path file, String expected) {
        IOException e = assertThrows(IOException.class, () -> Tokenizers.load(file));
        assertTrue(e.getMessage().contains(expected) && e.getMessage().contains(file.toString()),
                "message for " + file.getFileName() + " should name the file and contain '" + expected + "': "
                        + e.getMessage());
    }
}
