package dev.shardwise.data;

import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.Arrays;
import java.util.HexFormat;

/**
 * A memory-mapped token file, as written by {@link DatasetPreparer}: a flat sequence of token ids (documents,
 * each followed by the end-of-text id) plus an index of where each document starts.
 *
 * <p>File format, version 1, all numbers little-endian:
 * <pre>
 * offset size  field
 *      0    8  magic "SWTOKENS" (ASCII)
 *      8    4  version = 1
 *     12    4  header size in bytes = 128
 *     16    4  bytes per token: 2 (uint16, used when vocab size &lt;= 65536) or 4 (uint32)
 *     20    4  vocabulary size V; every token is in [0, V)
 *     24    4  end-of-text id
 *     28    4  reserved, 0
 *     32    8  N, number of tokens (including one end-of-text per document)
 *     40    8  D, number of documents
 *     48    8  byte offset of the document index = 128 + N*tokenBytes rounded up to a multiple of 8
 *     56    8  tokenizer fingerprint ({@link Tokenizer#fingerprint()})
 *     64    2  length L of the tokenizer name (at most 62)
 *     66    L  tokenizer name, UTF-8; zero padding up to byte 128
 *    128       N tokens
 *  index       D + 1 int64 token offsets: document d is tokens [start[d], start[d+1]), its last token
 *              the end-of-text id; start[0] = 0 and start[D] = N. The file ends right after the index.
 * </pre>
 *
 * <p>Opening checks the magic, version, field ranges and that the file size matches the header exactly, so
 * a truncated or foreign file fails with a message saying so. Token values are not scanned. Reads are safe
 * from several threads; {@link #close()} unmaps the file, after which no thread may use it.
 */
public final class TokenDataset implements AutoCloseable {
    private static final ValueLayout.OfShort U16 =
            ValueLayout.JAVA_SHORT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
    private static final ValueLayout.OfInt U32 = ValueLayout.JAVA_INT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
    private static final ValueLayout.OfLong I64 = ValueLayout.JAVA_LONG_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);

    private final Path path;
    private final Arena arena;
    private final MemorySegment file;
    private final int tokenBytes;
    private final int vocabSize;
    private final int endOfText;
    private final long size;
    private final long documents;
    private final long indexOffset;
    private final long fingerprint;
    private final String tokenizerName;

    private TokenDataset(Path path, Arena arena, MemorySegment file) throws IOException {
        this.path = path;
        this.arena = arena;
        this.file = file;
        long bytes = file.byteSize();
        if (bytes < TokenFileWriter.HEADER_BYTES) {
            if (bytes >= 8 && !hasMagic(file)) throw notATokenFile(path);
            throw corrupt("it has " + bytes + " bytes, fewer than the 128-byte header (truncated)");
        }
        if (!hasMagic(file)) throw notATokenFile(path);
        int version = file.get(U32, 8);
        if (version != TokenFileWriter.VERSION) {
            throw corrupt("it has format version " + version + "; this Shardwise reads version "
                    + TokenFileWriter.VERSION + " (re-run shardwise prepare)");
        }
        int headerBytes = file.get(U32, 12);
        tokenBytes = file.get(U32, 16);
        vocabSize = file.get(U32, 20);
        endOfText = file.get(U32, 24);
        size = file.get(I64, 32);
        documents = file.get(I64, 40);
        indexOffset = file.get(I64, 48);
        fingerprint = file.get(I64, 56);
        int nameLen = file.get(U16, 64) & 0xFFFF;
        if (headerBytes != TokenFileWriter.HEADER_BYTES) corruptField("header size", headerBytes);
        if (tokenBytes != 2 && tokenBytes != 4) corruptField("bytes per token (2 or 4)", tokenBytes);
        if (vocabSize <= 0 || (tokenBytes == 2 && vocabSize > 65536)) corruptField("vocabulary size", vocabSize);
        if (endOfText < 0 || endOfText >= vocabSize) corruptField("end-of-text id", endOfText);
        if (size < 0 || documents < 0 || documents > size) corruptField("token/document count", size);
        if (nameLen > TokenFileWriter.MAX_NAME_BYTES) corruptField("tokenizer name length", nameLen);
        if (indexOffset != TokenFileWriter.align8(TokenFileWriter.HEADER_BYTES + size * tokenBytes)) {
            corruptField("index offset", indexOffset);
        }
        long expected = indexOffset + 8 * (documents + 1);
        if (bytes != expected) {
            throw corrupt("its header promises " + size + " tokens and " + documents + " documents, which take "
                    + expected + " bytes, but the file has " + bytes + (bytes < expected ? " (truncated)" : ""));
        }
        byte[] name = file.asSlice(66, nameLen).toArray(ValueLayout.JAVA_BYTE);
        tokenizerName = new String(name, StandardCharsets.UTF_8);
        if (file.get(I64, indexOffset) != 0 || file.get(I64, indexOffset + 8 * documents) != size) {
            throw corrupt("its document index does not span [0, " + size + ")");
        }
    }

    /**
     * Maps the token file at {@code path}.
     *
     * @throws IOException if it cannot be read, is not a token file, has another format version, or is
     *     truncated or damaged; the message names the file and says what to do
     */
    public static TokenDataset open(Path path) throws IOException {
        Arena arena = Arena.ofShared();
        try (FileChannel ch = FileChannel.open(path, StandardOpenOption.READ)) {
            MemorySegment seg = ch.map(FileChannel.MapMode.READ_ONLY, 0, ch.size(), arena);
            return new TokenDataset(path, arena, seg);
        } catch (NoSuchFileException e) {
            arena.close();
            throw new IOException("token file " + path + " does not exist; create it with: shardwise prepare "
                    + "INPUT.txt -o " + (path.getParent() == null ? "." : path.getParent()), e);
        } catch (IOException | RuntimeException e) {
            arena.close();
            throw e;
        }
    }

    /** Number of tokens N. */
    public long size() { return size; }

    /** Number of documents D. */
    public long documentCount() { return documents; }

    /** Token offset where document {@code d} starts, for {@code 0 <= d <= D} ({@code d = D} gives N). */
    public long documentStart(long d) {
        if (d < 0 || d > documents) {
            throw new IndexOutOfBoundsException("document " + d + " is outside [0, " + documents + "] in " + path);
        }
        return file.get(I64, indexOffset + 8 * d);
    }

    public int vocabSize() { return vocabSize; }

    public int endOfText() { return endOfText; }

    /** Bytes per stored token: 2 (uint16) or 4 (uint32). */
    public int tokenBytes() { return tokenBytes; }

    public String tokenizerName() { return tokenizerName; }

    public long tokenizerFingerprint() { return fingerprint; }

    public Path path() { return path; }

    /**
     * Checks that this file was made with {@code tokenizer}.
     *
     * @throws IllegalArgumentException if the fingerprints differ, naming both tokenizers
     */
    public void checkTokenizer(Tokenizer tokenizer) {
        if (tokenizer.fingerprint() != fingerprint || tokenizer.vocabSize() != vocabSize) {
            throw new IllegalArgumentException("token file " + path + " was made with tokenizer '" + tokenizerName
                    + "' (vocab " + vocabSize + ", fingerprint " + HexFormat.of().toHexDigits(fingerprint)
                    + "), not with '" + tokenizer.name() + "' (vocab " + tokenizer.vocabSize() + ", fingerprint "
                    + HexFormat.of().toHexDigits(tokenizer.fingerprint()) + "); use the tokenizer it was "
                    + "prepared with or prepare it again");
        }
    }

    /** Token {@code i}, {@code 0 <= i < size()}. */
    public int get(long i) {
        if (i < 0 || i >= size) {
            throw new IndexOutOfBoundsException("token " + i + " is outside [0, " + size + ") in " + path);
        }
        long at = TokenFileWriter.HEADER_BYTES + i * tokenBytes;
        return tokenBytes == 2 ? file.get(U16, at) & 0xFFFF : file.get(U32, at);
    }

    /**
     * Copies tokens {@code [start, start + length)} into {@code dst[dstOffset ..]}.
     *
     * @throws IndexOutOfBoundsException if the range is outside the file or does not fit {@code dst}
     */
    public void read(long start, int[] dst, int dstOffset, int length) {
        if (start < 0 || length < 0 || start + length > size) {
            throw new IndexOutOfBoundsException("tokens [" + start + ", " + (start + length) + ") are outside [0, "
                    + size + ") in " + path);
        }
        java.util.Objects.checkFromIndexSize(dstOffset, length, dst.length);
        long at = TokenFileWriter.HEADER_BYTES + start * tokenBytes;
        if (tokenBytes == 4) {
            MemorySegment.copy(file, U32, at, dst, dstOffset, length);
        } else {
            for (int k = 0; k < length; k++) dst[dstOffset + k] = file.get(U16, at + 2L * k) & 0xFFFF;
        }
    }

    /** Tokens {@code [start, start + length)} as a new array (a window of T+1 tokens: {@code length = T + 1}). */
    public int[] window(long start, int length) {
        int[] out = new int[length];
        read(start, out, 0, length);
        return out;
    }

    /**
     * Copies tokens {@code [start, start + dst.numel())} into {@code dst}, a contiguous I32 tensor of any shape
     * (e.g. {@code [T+1]}), in row-major order.
     *
     * @throws IllegalArgumentException if {@code dst} is not a contiguous I32 tensor
     */
    public void read(long start, Tensor dst) {
        if (dst.dtype() != DType.I32 || !dst.isContiguous()) {
            throw new IllegalArgumentException("dst must be a contiguous I32 tensor, got " + dst.describe());
        }
        long n = dst.numel();
        if (n > Integer.MAX_VALUE) throw new IllegalArgumentException("dst " + dst.describe() + " is too large");
        int[] tmp = window(start, (int) n);
        MemorySegment.copy(tmp, 0, dst.segment(), ValueLayout.JAVA_INT, dst.byteOffset(), tmp.length);
    }

    /** Unmaps the file. */
    @Override
    public void close() {
        arena.close();
    }

    @Override
    public String toString() {
        return "TokenDataset[" + path + ", " + size + " tokens, " + documents + " documents, vocab " + vocabSize
                + " (" + tokenizerName + "), uint" + (8 * tokenBytes) + "]";
    }

    private static boolean hasMagic(MemorySegment file) {
        return file.byteSize() >= 8
                && Arrays.equals(file.asSlice(0, 8).toArray(ValueLayout.JAVA_BYTE), TokenFileWriter.MAGIC);
    }

    private static IOException notATokenFile(Path path) {
        return new IOException("token file " + path + " is not a Shardwise token file (it does not start with "
                + "\"SWTOKENS\"); create one with: shardwise prepare INPUT.txt -o DIR");
    }

    private IOException corrupt(String what) {
        return new IOException("token file " + path + " is damaged: " + what + "; prepare it again with "
                + "shardwise prepare");
    }

    private void corruptField(String field, long value) throws IOException {
        throw corrupt("its header has an invalid " + field + " (" + value + ")");
    }
}
