package dev.shardwise.train;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

/** Test helper: a checkpoint's tensors assembled whole, by name, whatever layout and format wrote it. */
final class CheckpointContents {
    private CheckpointContents() { }

    /** Every tensor of checkpoint {@code dir}, whole, as bytes, by name (checksums verified). */
    static Map<String, byte[]> read(Path dir) throws IOException {
        CheckpointIndex index = CheckpointIndex.open(dir);
        index.verify();
        Map<String, byte[]> out = new TreeMap<>();
        Map<String, FileChannel> open = new HashMap<>();
        try (Arena arena = Arena.ofConfined()) {
            for (Map.Entry<String, CheckpointIndex.TensorInfo> e : index.tensors().entrySet()) {
                long n = e.getValue().numel(), bytes = n * CheckpointIndex.pieceElementBytes(e.getValue().dtype());
                MemorySegment segment = arena.allocate(Math.max(1, bytes), 64);
                index.read(e.getKey(), e.getValue().dtype(), e.getValue().shape(), List.of(new CheckpointIndex.Span(0, n, segment, 0)), open);
                out.put(e.getKey(), segment.asSlice(0, bytes).toArray(ValueLayout.JAVA_BYTE));
            }
        } finally {
            for (FileChannel c : open.values()) c.close();
        }
        return out;
    }

    /** Asserts two checkpoints hold the same tensors with the same bytes. */
    static void assertSame(Path expected, Path actual, String what) throws IOException {
        Map<String, byte[]> a = read(expected), b = read(actual);
        assertEquals(a.keySet(), b.keySet(), what + ": tensor names");
        for (String name : a.keySet()) assertArrayEquals(a.get(name), b.get(name), what + ": tensor " + name);
    }
}
