package dev.shardwise.data;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.Arrays;

/**
 * Streams documents into a temporary token file in the format {@link TokenDataset} documents. The header is
 * written last, so a file that was not {@link #finish() finished} never has a valid header. The caller renames
 * the finished temporary file into place ({@link AtomicFiles#commit}) or deletes it ({@link #abort}).
 */
final class TokenFileWriter implements AutoCloseable {
    static final byte[] MAGIC = "SWTOKENS".getBytes(StandardCharsets.US_ASCII);
    static final int VERSION = 1;
    static final int HEADER_BYTES = 128;
    static final int MAX_NAME_BYTES = 62;

    private final Path target;
    private final Path temp;
    private final FileChannel channel;
    private final Tokenizer tokenizer;
    private final int tokenBytes;
    private final ByteBuffer buffer = ByteBuffer.allocate(1 << 20).order(ByteOrder.LITTLE_ENDIAN);
    private long[] docStarts = new long[1024];
    private int documents;
    private long tokens;
    private boolean finished;

    /** Opens a temporary file beside {@code target}. */
    TokenFileWriter(Path target, Tokenizer tokenizer) throws IOException {
        this.target = target;
        this.tokenizer = tokenizer;
        this.tokenBytes = tokenBytesFor(tokenizer.vocabSize());
        this.temp = AtomicFiles.createTemp(target);
        FileChannel ch = null;
        try {
            ch = FileChannel.open(temp, StandardOpenOption.WRITE);
            ch.position(HEADER_BYTES);
        } catch (IOException e) {
            if (ch != null) ch.close();
            Files.deleteIfExists(temp);
            throw e;
        }
        this.channel = ch;
    }

    /** 2 (uint16) when every id fits, that is {@code vocabSize <= 65536}; else 4 (uint32). */
    static int tokenBytesFor(int vocabSize) {
        return vocabSize <= 65536 ? 2 : 4;
    }

    /**
     * Appends one document: its tokens, then the tokenizer's end-of-text id.
     *
     * @throws IllegalArgumentException if a token is outside the tokenizer's vocabulary
     */
    void addDocument(int[] docTokens) throws IOException {
        if (documents + 1 >= docStarts.length) docStarts = Arrays.copyOf(docStarts, docStarts.length * 2);
        docStarts[documents] = tokens;
        int vocab = tokenizer.vocabSize();
        for (int t : docTokens) {
            if (t < 0 || t >= vocab) {
                throw new IllegalArgumentException("tokenizer " + tokenizer.name() + " produced id " + t
                        + " outside its vocabulary [0, " + vocab + ")");
            }
            put(t);
        }
        put(tokenizer.endOfText());
        tokens += docTokens.length + 1L;
        documents++;
    }

    private void put(int t) throws IOException {
        if (buffer.remaining() < 4) flush();
        if (tokenBytes == 2) buffer.putShort((short) t); else buffer.putInt(t);
    }

    private void flush() throws IOException {
        buffer.flip();
        while (buffer.hasRemaining()) channel.write(buffer);
        buffer.clear();
    }

    long tokens() { return tokens; }

    int documents() { return documents; }

    Path target() { return target; }

    /** Writes the document index and the header, forces the file to disk and closes it. */
    AtomicFiles.Move finish() throws IOException {
        flush();
        // The index starts at the next multiple of 8 after the tokens; the gap reads as zeros.
        long indexOffset = align8(HEADER_BYTES + tokens * tokenBytes);
        channel.position(indexOffset);
        docStarts[documents] = tokens;
        for (int d = 0; d <= documents; d++) {
            if (buffer.remaining() < 8) flush();
            buffer.putLong(docStarts[d]);
        }
        flush();
        ByteBuffer h = ByteBuffer.allocate(HEADER_BYTES).order(ByteOrder.LITTLE_ENDIAN);
        h.put(MAGIC);                       // 0
        h.putInt(VERSION);                  // 8
        h.putInt(HEADER_BYTES);             // 12
        h.putInt(tokenBytes);               // 16
        h.putInt(tokenizer.vocabSize());    // 20
        h.putInt(tokenizer.endOfText());    // 24
        h.putInt(0);                        // 28 reserved
        h.putLong(tokens);                  // 32
        h.putLong(documents);               // 40
        h.putLong(indexOffset);             // 48
        h.putLong(tokenizer.fingerprint()); // 56
        byte[] name = tokenizer.name().getBytes(StandardCharsets.UTF_8);
        int nameLen = Math.min(name.length, MAX_NAME_BYTES);
        h.putShort((short) nameLen);        // 64
        h.put(name, 0, nameLen);            // 66 .. 127, zero padded
        h.clear();
        channel.position(0);
        while (h.hasRemaining()) channel.write(h);
        channel.force(true);
        channel.close();
        finished = true;
        return new AtomicFiles.Move(temp, target);
    }

    static long align8(long x) {
        return (x + 7) & ~7L;
    }

    /** Closes and deletes the temporary file (also after {@link #finish}, until it was renamed). */
    void abort() throws IOException {
        channel.close();
        Files.deleteIfExists(temp);
    }

    @Override
    public void close() throws IOException {
        if (!finished) abort();
    }
}
