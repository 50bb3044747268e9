package dev.shardwise.train;

import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.zip.CRC32C;

/**
 * One rank's shard file of a {@code shardwise-checkpoint-2} checkpoint: pieces appended one after another, each a
 * tensor's elements at some runs of global offsets, with a CRC-32C; {@link #finish} fsyncs the file and returns its
 * manifest entry ({"file", "bytes", "pieces"}). Written straight from the rank's own tensors, no copy.
 */
final class ShardWriter implements AutoCloseable {
    private final String name;
    private final FileChannel out;
    private final List<Map<String, Object>> pieces = new ArrayList<>();
    private long offset;

    ShardWriter(Path file) throws IOException {
        this.name = file.getFileName().toString();
        this.out = FileChannel.open(file, StandardOpenOption.CREATE, StandardOpenOption.TRUNCATE_EXISTING, StandardOpenOption.WRITE);
    }

    /**
     * Appends a piece of {@code tensor}: for each run in order, its {@code length} elements, read from
     * {@code segment} at {@code localZero + localStart · elementBytes} (the byte where local element 0 would be).
     */
    void write(String tensor, List<GlobalRuns.Run> runs, MemorySegment segment, long localZero, int elementBytes) throws IOException {
        CRC32C crc = new CRC32C();
        long bytes = 0;
        for (GlobalRuns.Run r : runs) {
            ByteBuffer buffer = segment.asSlice(localZero + r.localStart() * elementBytes, r.length() * elementBytes).asByteBuffer();
            crc.update(buffer.duplicate());
            while (buffer.hasRemaining()) out.write(buffer);
            bytes += r.length() * elementBytes;
        }
        Map<String, Object> piece = new LinkedHashMap<>();
        piece.put("tensor", tensor);
        piece.put("runs", compress(runs));
        piece.put("offset", offset);
        piece.put("bytes", bytes);
        piece.put("crc32c", HexFormat.of().toHexDigits((int) crc.getValue()));
        pieces.add(piece);
        offset += bytes;
    }

    /** Runs as [start, length, count, stride]: consecutive runs of one length at a constant stride become one entry. */
    static List<List<Long>> compress(List<GlobalRuns.Run> runs) {
        List<List<Long>> out = new ArrayList<>();
        long start = 0, length = 0, count = 0, stride = 0;
        for (GlobalRuns.Run r : runs) {
            if (count > 0 && r.length() == length && (count == 1 ? r.globalStart() > start : r.globalStart() == start + count * stride)) {
                if (count == 1) stride = r.globalStart() - start;
                count++;
                continue;
            }
            if (count > 0) out.add(List.of(start, length, count, count == 1 ? 0 : stride));
            start = r.globalStart();
            length = r.length();
            count = 1;
            stride = 0;
        }
        if (count > 0) out.add(List.of(start, length, count, count == 1 ? 0 : stride));
        return out;
    }

    /** Forces the file to disk and closes it; returns its manifest entry. */
    Map<String, Object> finish() throws IOException {
        out.force(true);
        out.close();
        Map<String, Object> entry = new LinkedHashMap<>();
        entry.put("file", name);
        entry.put("bytes", offset);
        entry.put("pieces", pieces);
        return entry;
    }

    @Override
    public void close() throws IOException {
        if (out.isOpen()) out.close();
    }
}
