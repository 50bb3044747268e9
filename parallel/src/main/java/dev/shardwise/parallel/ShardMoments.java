package dev.shardwise.parallel;

import dev.shardwise.core.kernels.Vectors;
import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.function.BiConsumer;
import java.util.function.Consumer;

/**
 * Where the AdamW moments m and v of one rank's shard [S] live: in the rank's memory (OPTIMIZER_STATE), or
 * offloaded to a memory-mapped file on disk (ZeRO-Infinity's idea, Rajbhandari et al. 2021) so the optimizer
 * state costs the rank no resident memory of its own; the update then streams the moments through a bounded
 * staging buffer (BUFFERS), one chunk at a time.
 *
 * <p>Both give bit-identical updates: the arithmetic is the same, only where m and v are read from differs.
 */
public sealed interface ShardMoments extends AutoCloseable permits ShardMoments.Resident, ShardMoments.OnDisk {

    /** Makes the moments of an [S] shard, zeroed. */
    @FunctionalInterface
    interface Factory {
        ShardMoments create(MemoryPool pool, DType dtype, int size) throws IOException;
    }

    /**
     * A window of the moments, elements [start, end) of the shard, that the update may read and write.
     * {@link #m} and {@link #v} take shard coordinates.
     */
    record Chunk(int start, int end, Tensor mWindow, Tensor vWindow) {
        public Tensor m(int from, int length) { return mWindow.slice(0, from - start, length); }
        public Tensor v(int from, int length) { return vWindow.slice(0, from - start, length); }
    }

    /** Moments in the rank's memory, charged to OPTIMIZER_STATE: 8 bytes per fp32 shard element. */
    static Factory resident() {
        return (pool, dtype, size) -> {
            Tensor m = Tensor.allocate(pool, MemoryCategory.OPTIMIZER_STATE, dtype, size);
            try {
                return new Resident(m, Tensor.allocate(pool, MemoryCategory.OPTIMIZER_STATE, dtype, size));
            } catch (RuntimeException e) {
                m.close();
                throw e;
            }
        };
    }

    /**
     * Moments in a memory-mapped file created in {@code directory} (deleted on close), streamed through a staging
     * buffer of {@code chunkElements} elements per moment (BUFFERS). Nothing is charged to OPTIMIZER_STATE: the
     * pages are the operating system's to keep or evict.
     *
     * @throws IllegalArgumentException if {@code chunkElements < 1}
     */
    static Factory onDisk(Path directory, int chunkElements) {
        if (chunkElements < 1) throw new IllegalArgumentException("chunkElements must be >= 1, got " + chunkElements);
        return (pool, dtype, size) -> OnDisk.create(directory, pool, dtype, size, chunkElements);
    }

    /** Runs {@code body} over the whole shard, chunk by chunk in order; changes to a chunk's moments are kept. */
    void update(Consumer<Chunk> body);

    /** Gives {@code body} the whole moments [S] to read (for checkpoints). */
    void read(BiConsumer<Tensor, Tensor> body);

    /** Gives {@code body} the whole moments [S] to overwrite (from a checkpoint). */
    void write(BiConsumer<Tensor, Tensor> body);

    @Override
    void close();

    /** In memory: one chunk, the moments themselves. */
    final class Resident implements ShardMoments {
        private final Tensor m, v;

        private Resident(Tensor m, Tensor v) {
            this.m = m;
            this.v = v;
        }

        @Override
        public void update(Consumer<Chunk> body) {
            body.accept(new Chunk(0, Math.toIntExact(m.numel()), m, v));
        }

        @Override
        public void read(BiConsumer<Tensor, Tensor> body) { body.accept(m, v); }

        @Override
        public void write(BiConsumer<Tensor, Tensor> body) { body.accept(m, v); }

        @Override
        public void close() {
            m.close();
            v.close();
        }
    }

    /** In a memory-mapped file [m | v], staged through two [chunk] buffers. */
    final class OnDisk implements ShardMoments {
        private final Path file;
        private final Arena arena;
        private final Tensor m, v;            // wrapped views of the mapping, not charged to the pool
        private final Tensor stageM, stageV;  // [chunk] BUFFERS
        private final int size;

        private OnDisk(Path file, Arena arena, Tensor m, Tensor v, Tensor stageM, Tensor stageV, int size) {
            this.file = file;
            this.arena = arena;
            this.m = m;
            this.v = v;
            this.stageM = stageM;
            this.stageV = stageV;
            this.size = size;
        }

        static OnDisk create(Path directory, MemoryPool pool, DType dtype, int size, int chunkElements) throws IOException {
            Files.createDirectories(directory);
            Path file = Files.createTempFile(directory, "shardwise-adam-" + pool.rankName().replace(' ', '-') + "-", ".bin");
            long bytes = 2L * size * dtype.byteSize();
            Arena arena = Arena.ofShared();
            try (FileChannel channel = FileChannel.open(file, StandardOpenOption.READ, StandardOpenOption.WRITE)) {
                // A new file grows to the mapping's size filled with zeros (sparse): the moments start at 0, and no page
                // is touched until the first update streams through it.
                MemorySegment mapped = channel.map(FileChannel.MapMode.READ_WRITE, 0, Math.max(bytes, 1), arena);
                long half = (long) size * dtype.byteSize();
                Tensor m = Tensor.wrap(mapped.asSlice(0, half), dtype, size);
                Tensor v = Tensor.wrap(mapped.asSlice(half, half), dtype, size);
                int chunk = Math.max(1, Math.min(chunkElements, size));
                Tensor stageM = Tensor.allocate(pool, MemoryCategory.BUFFERS, dtype, chunk);
                Tensor stageV;
                try {
                    stageV = Tensor.allocate(pool, MemoryCategory.BUFFERS, dtype, chunk);
                } catch (RuntimeException e) {
                    stageM.close();
                    throw e;
                }
                return new OnDisk(file, arena, m, v, stageM, stageV, size);
            } catch (IOException | RuntimeException e) {
                arena.close();
                Files.deleteIfExists(file);
                throw new IOException("cannot map the optimizer state file " + file + " (" + bytes + " bytes): " + e.getMessage()
                        + "; choose a directory on a disk with room (--offload-optimizer DIR)", e);
            }
        }

        @Override
        public void update(Consumer<Chunk> body) {
            int chunk = Math.toIntExact(stageM.numel());
            for (int start = 0; start < size; start += chunk) {
                int length = Math.min(chunk, size - start);
                Tensor sm = stageM.slice(0, 0, length), sv = stageV.slice(0, 0, length);
                Vectors.copy(sm, m.slice(0, start, length));
                Vectors.copy(sv, v.slice(0, start, length));
                body.accept(new Chunk(start, start + length, sm, sv));
                Vectors.copy(m.slice(0, start, length), sm);
                Vectors.copy(v.slice(0, start, length), sv);
            }
        }

        @Override
        public void read(BiConsumer<Tensor, Tensor> body) { body.accept(m, v); }

        @Override
        public void write(BiConsumer<Tensor, Tensor> body) { body.accept(m, v); }

        /** The file holding the moments (deleted on close). */
        public Path file() { return file; }

        @Override
        public void close() {
            stageM.close();
            stageV.close();
            arena.close();
            try {
                Files.deleteIfExists(file);
            } catch (IOException e) {
                throw new java.io.UncheckedIOException("cannot delete the optimizer state file " + file, e);
            }
        }
    }
}
