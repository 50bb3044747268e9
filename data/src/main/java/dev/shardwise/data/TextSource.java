package dev.shardwise.data;

import java.io.IOException;
import java.nio.file.AccessDeniedException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;

/**
 * A named text to prepare: read from a file ({@link #read}) or given directly (a bundled corpus).
 *
 * @param name shown in messages and summaries, e.g. the file path
 * @param text the text, without a byte-order mark
 */
public record TextSource(String name, String text) {
    /** Files with more ill-formed UTF-8 sequences than this fraction of their bytes are refused as binary. */
    public static final double MAX_INVALID_FRACTION = 0.001;

    public TextSource {
        if (name == null || text == null) throw new NullPointerException("name and text must not be null");
    }

    /**
     * Reads a UTF-8 text file. A leading byte-order mark is dropped. A few ill-formed UTF-8 sequences (at most
     * {@link #MAX_INVALID_FRACTION} of the bytes) become U+FFFD; more than that, or any NUL byte, means the file
     * is not text and is refused.
     *
     * @throws IOException if the file is missing, a directory, unreadable, empty, or looks binary; the message
     *     names the file and says what to do
     */
    public static TextSource read(Path file) throws IOException {
        if (Files.isDirectory(file)) {
            throw new IOException("input " + file + " is a directory; pass the text files inside it");
        }
        byte[] bytes;
        try {
            bytes = Files.readAllBytes(file);
        } catch (NoSuchFileException e) {
            throw new IOException("input file " + file + " does not exist (looked in "
                    + file.toAbsolutePath().getParent() + "); check the path", e);
        } catch (AccessDeniedException e) {
            throw new IOException("input file " + file + " cannot be read: permission denied", e);
        } catch (OutOfMemoryError e) {
            throw new IOException("input file " + file + " (" + Files.size(file) + " bytes) does not fit in memory; "
                    + "split it into smaller files or raise -Xmx (SHARDWISE_JAVA_OPTS)", e);
        }
        if (bytes.length == 0) {
            throw new IOException("input file " + file + " is empty; pass a file with text in it");
        }
        int from = bytes.length >= 3 && (bytes[0] & 0xFF) == 0xEF && (bytes[1] & 0xFF) == 0xBB
                && (bytes[2] & 0xFF) == 0xBF ? 3 : 0;
        Utf8.Decoded d = Utf8.decode(bytes, from, bytes.length);
        if (d.nulBytes() > 0 || d.invalidSequences() > MAX_INVALID_FRACTION * bytes.length) {
            throw new IOException(String.format(
                    "input file %s does not look like UTF-8 text: it has %d NUL bytes and %d ill-formed UTF-8 "
                    + "sequences in %d bytes (allowed: no NUL bytes and at most %.1f%% ill-formed); pass a text "
                    + "file, converting it first if needed (iconv -f LATIN1 -t UTF-8 %s > %s.utf8.txt)",
                    file, d.nulBytes(), d.invalidSequences(), bytes.length, 100 * MAX_INVALID_FRACTION,
                    file, file.getFileName()));
        }
        return new TextSource(file.toString(), d.text());
    }
}
