package dev.shardwise.data;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.Arrays;
import java.util.HexFormat;
import java.util.List;
import java.util.concurrent.ConcurrentHashMap;

/**
 * Byte-level byte-pair encoding (Sennrich et al. 2016, "Neural Machine Translation of Rare Words with Subword
 * Units"; byte-level as in GPT-2, Radford et al. 2019): ids 0..255 are the 256 byte values, ids
 * {@code 256 .. 256+M-1} are the merges in the order they were learned, and the last id is
 * {@code <|endoftext|>}, so {@code vocabSize() = 257 + M}.
 *
 * <p>Encoding splits the text into chunks ({@link Pretokenizer}), turns each chunk into its UTF-8 bytes
 * (unpaired surrogates in their generalized 3-byte form, see {@link Utf8}) and applies the merges inside the
 * chunk, lowest rank first. Because every byte is a token, {@code decode(encode(s)).equals(s)} for every
 * string {@code s}. Encoded chunks are cached (bounded); instances are immutable apart from that cache and
 * safe for concurrent use.
 *
 * <p>Saved form ({@link #save}, read by {@link Tokenizers#load}), UTF-8 text, one item per line:
 * <pre>
 * shardwise-tokenizer 1
 * type byte-level-bpe
 * name bpe-8192
 * pretokenizer shardwise-chunks-v1
 * special &lt;|endoftext|&gt; 8191
 * merges 7935
 * 32 116          one line per merge: left id, right id; the merge on line k (from 0) makes id 256 + k
 * ...
 * sha256 &lt;hex digest of all the bytes above&gt;
 * </pre>
 */
public final class ByteLevelBpe implements Tokenizer {
    /** The end-of-text special token's text. */
    public static final String END_OF_TEXT = "<|endoftext|>";
    static final String MAGIC = "shardwise-tokenizer 1";
    private static final int CACHE_LIMIT = 1 << 16;   // entries; cleared when full

    private final String name;
    private final int[] mergeLeft;
    private final int[] mergeRight;
    private final byte[][] tokenBytes;
    private final PairMap ranks;                       // pair -> merged id (lower id = earlier merge)
    private final long fingerprint;
    private final ConcurrentHashMap<String, int[]> cache = new ConcurrentHashMap<>();

    /**
     * A tokenizer from its merges: merge {@code k} joins ids {@code left[k]} and {@code right[k]}, both below
     * {@code 256 + k}, into id {@code 256 + k}.
     *
     * @throws IllegalArgumentException if the arrays differ in length or a merge refers to a later id
     */
    ByteLevelBpe(String name, int[] left, int[] right) {
        if (left.length != right.length) {
            throw new IllegalArgumentException("merge lists differ in length: " + left.length + " vs " + right.length);
        }
        this.name = name;
        this.mergeLeft = left.clone();
        this.mergeRight = right.clone();
        int m = left.length;
        tokenBytes = new byte[257 + m][];
        for (int b = 0; b < 256; b++) tokenBytes[b] = new byte[] {(byte) b};
        ranks = new PairMap(m);
        for (int k = 0; k < m; k++) {
            int id = 256 + k;
            if (left[k] < 0 || left[k] >= id || right[k] < 0 || right[k] >= id) {
                throw new IllegalArgumentException("merge " + k + " (" + left[k] + ", " + right[k]
                        + ") refers to an id not below " + id + "; merges must only join earlier ids");
            }
            byte[] a = tokenBytes[left[k]];
            byte[] b = tokenBytes[right[k]];
            byte[] ab = Arrays.copyOf(a, a.length + b.length);
            System.arraycopy(b, 0, ab, a.length, b.length);
            tokenBytes[id] = ab;
            long key = PairMap.pack(left[k], right[k]);
            if (ranks.get(key) == 0) ranks.put(key, id);   // a duplicate merge can never fire; keep the first
        }
        tokenBytes[256 + m] = END_OF_TEXT.getBytes(StandardCharsets.UTF_8);
        fingerprint = computeFingerprint(left, right);
    }

    @Override public String name() { return name; }
    @Override public int vocabSize() { return tokenBytes.length; }
    @Override public int endOfText() { return tokenBytes.length - 1; }
    @Override public long fingerprint() { return fingerprint; }

    /** Number of merges learned, {@code vocabSize() - 257}. */
    public int mergeCount() { return mergeLeft.length; }

    /** This tokenizer under another name (same ids and fingerprint). */
    public ByteLevelBpe withName(String newName) {
        return new ByteLevelBpe(checkName(newName), mergeLeft, mergeRight);
    }

    /** The bytes token {@code id} stands for (the UTF-8 of {@code <|endoftext|>} for the special token). */
    public byte[] tokenBytes(int id) {
        checkId(id);
        return tokenBytes[id].clone();
    }

    @Override
    public int[] encode(String text) {
        IntList out = new IntList(Math.max(16, text.length() / 3));
        Pretokenizer.split(text, (from, to) -> {
            String chunk = text.substring(from, to);
            int[] ids = cache.get(chunk);
            if (ids == null) {
                ids = encodeChunk(Utf8.encode(chunk));
                if (cache.size() >= CACHE_LIMIT) cache.clear();
                cache.put(chunk, ids);
            }
            out.addAll(ids);
        });
        return out.toArray();
    }

    /** Applies the merges to one chunk's bytes, lowest rank (earliest merge) first. */
    int[] encodeChunk(byte[] bytes) {
        int[] sym = new int[bytes.length];
        for (int i = 0; i < bytes.length; i++) sym[i] = bytes[i] & 0xFF;
        int n = sym.length;
        while (n > 1) {
            int best = Integer.MAX_VALUE;
            for (int i = 0; i + 1 < n; i++) {
                long r = ranks.get(PairMap.pack(sym[i], sym[i + 1]));
                if (r != 0 && r < best) best = (int) r;
            }
            if (best == Integer.MAX_VALUE) break;
            int a = mergeLeft[best - 256];
            int b = mergeRight[best - 256];
            int w = 0;
            for (int i = 0; i < n; i++) {
                if (i + 1 < n && sym[i] == a && sym[i + 1] == b) {
                    sym[w++] = best;
                    i++;
                } else {
                    sym[w++] = sym[i];
                }
            }
            n = w;
        }
        return Arrays.copyOf(sym, n);
    }

    @Override
    public String decode(int[] tokens) {
        int len = 0;
        for (int t : tokens) {
            checkId(t);
            len += tokenBytes[t].length;
        }
        byte[] all = new byte[len];
        int at = 0;
        for (int t : tokens) {
            byte[] b = tokenBytes[t];
            System.arraycopy(b, 0, all, at, b.length);
            at += b.length;
        }
        return Utf8.decode(all);
    }

    /**
     * Writes this tokenizer to {@code file} in the saved form described above, atomically (a temporary file in
     * the same directory, fsync, rename).
     *
     * @throws IOException if the file cannot be written; the message names the file
     */
    public void save(Path file) throws IOException {
        AtomicFiles.write(file, toBytes());
    }

    byte[] toBytes() {
        StringBuilder sb = new StringBuilder(mergeLeft.length * 10 + 200);
        sb.append(MAGIC).append('\n');
        sb.append("type byte-level-bpe\n");
        sb.append("name ").append(name).append('\n');
        sb.append("pretokenizer ").append(Pretokenizer.VERSION).append('\n');
        sb.append("special ").append(END_OF_TEXT).append(' ').append(endOfText()).append('\n');
        sb.append("merges ").append(mergeLeft.length).append('\n');
        for (int k = 0; k < mergeLeft.length; k++) {
            sb.append(mergeLeft[k]).append(' ').append(mergeRight[k]).append('\n');
        }
        byte[] body = sb.toString().getBytes(StandardCharsets.UTF_8);
        byte[] tail = ("sha256 " + HexFormat.of().formatHex(sha256(body)) + "\n").getBytes(StandardCharsets.UTF_8);
        byte[] all = Arrays.copyOf(body, body.length + tail.length);
        System.arraycopy(tail, 0, all, body.length, tail.length);
        return all;
    }

    /** Parses the saved form; {@code file} is only used in messages. */
    static ByteLevelBpe fromBytes(byte[] bytes, Path file) throws IOException {
        String text = new String(bytes, StandardCharsets.UTF_8);
        int sumAt = text.lastIndexOf("sha256 ");
        if (sumAt < 0 || (sumAt > 0 && text.charAt(sumAt - 1) != '\n')) {
            throw corrupt(file, "it has no final 'sha256' line (truncated?)");
        }
        String expected = text.substring(sumAt + 7).strip();
        byte[] body = text.substring(0, sumAt).getBytes(StandardCharsets.UTF_8);
        String actual = HexFormat.of().formatHex(sha256(body));
        if (!actual.equals(expected)) {
            throw corrupt(file, "its checksum does not match (file says " + expected + ", content hashes to "
                    + actual + "); it was edited or damaged");
        }
        List<String> lines = text.substring(0, sumAt).lines().toList();
        if (lines.size() < 6) throw corrupt(file, "it has only " + lines.size() + " header lines, expected 6");
        expectLine(lines.get(1), "type byte-level-bpe", file);
        String name = value(lines.get(2), "name", file);
        String pre = value(lines.get(3), "pretokenizer", file);
        if (!pre.equals(Pretokenizer.VERSION)) {
            throw corrupt(file, "it uses pre-tokenizer '" + pre + "', but this Shardwise only knows '"
                    + Pretokenizer.VERSION + "'; retrain the tokenizer or use the Shardwise version that made it");
        }
        int merges = parseInt(value(lines.get(5), "merges", file), file, 6);
        String special = value(lines.get(4), "special", file);
        if (!special.equals(END_OF_TEXT + " " + (256 + merges))) {
            throw corrupt(file, "line 5 is 'special " + special + "', expected 'special " + END_OF_TEXT + " "
                    + (256 + merges) + "'");
        }
        if (lines.size() != 6 + merges) {
            throw corrupt(file, "it declares " + merges + " merges but has " + (lines.size() - 6));
        }
        int[] left = new int[merges];
        int[] right = new int[merges];
        for (int k = 0; k < merges; k++) {
            String line = lines.get(6 + k);
            int sp = line.indexOf(' ');
            if (sp < 0) throw corrupt(file, "line " + (7 + k) + " is '" + line + "', expected two ids");
            left[k] = parseInt(line.substring(0, sp), file, 7 + k);
            right[k] = parseInt(line.substring(sp + 1), file, 7 + k);
        }
        try {
            return new ByteLevelBpe(name, left, right);
        } catch (IllegalArgumentException e) {
            throw corrupt(file, e.getMessage());
        }
    }

    static String checkName(String name) {
        if (name.isEmpty() || name.length() > 60 || !name.matches("[A-Za-z0-9._+-]+")) {
            throw new IllegalArgumentException("tokenizer name '" + name
                    + "' must be 1 to 60 characters from A-Z a-z 0-9 . _ + -");
        }
        return name;
    }

    private void checkId(int id) {
        if (id < 0 || id >= tokenBytes.length) {
            throw new IllegalArgumentException("token id " + id + " is outside [0, " + tokenBytes.length
                    + ") of tokenizer " + name);
        }
    }

    private static void expectLine(String line, String expected, Path file) throws IOException {
        if (!line.equals(expected)) throw corrupt(file, "found '" + line + "' where '" + expected + "' belongs");
    }

    private static String value(String line, String key, Path file) throws IOException {
        if (!line.startsWith(key + " ")) throw corrupt(file, "found '" + line + "' where '" + key + " ...' belongs");
        return line.substring(key.length() + 1);
    }

    private static int parseInt(String s, Path file, int lineNo) throws IOException {
        try {
            return Integer.parseInt(s.strip());
        } catch (NumberFormatException e) {
            throw corrupt(file, "line " + lineNo + " has '" + s + "' where a number belongs");
        }
    }

    private static IOException corrupt(Path file, String what) {
        return new IOException("tokenizer file " + file + " cannot be read: " + what
                + "; re-create it with: shardwise prepare --train-tokenizer ...");
    }

    private static long computeFingerprint(int[] left, int[] right) {
        StringBuilder sb = new StringBuilder("byte-level-bpe\n").append(Pretokenizer.VERSION).append('\n')
                .append(END_OF_TEXT).append('\n');
        for (int k = 0; k < left.length; k++) sb.append(left[k]).append(' ').append(right[k]).append('\n');
        return leadingLong(sha256(sb.toString().getBytes(StandardCharsets.UTF_8)));
    }

    static long leadingLong(byte[] digest) {
        long v = 0;
        for (int i = 0; i < 8; i++) v = (v << 8) | (digest[i] & 0xFF);
        return v;
    }

    static byte[] sha256(byte[] bytes) {
        try {
            return MessageDigest.getInstance("SHA-256").digest(bytes);
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException("this JDK lacks SHA-256, which every Java SE platform must provide", e);
        }
    }

    @Override
    public String toString() {
        return "ByteLevelBpe[" + name + ", vocab " + vocabSize() + "]";
    }

    /** A growable int array. */
    static final class IntList {
        private int[] a;
        private int n;

        IntList(int capacity) { a = new int[Math.max(4, capacity)]; }

        void add(int v) {
            if (n == a.length) a = Arrays.copyOf(a, a.length * 2);
            a[n++] = v;
        }

        void addAll(int[] v) {
            if (n + v.length > a.length) a = Arrays.copyOf(a, Math.max(a.length * 2, n + v.length));
            System.arraycopy(v, 0, a, n, v.length);
            n += v.length;
        }

        int size() { return n; }

        int get(int i) { return a[i]; }

        int[] toArray() { return Arrays.copyOf(a, n); }
    }
}
