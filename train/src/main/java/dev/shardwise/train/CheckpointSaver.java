package dev.shardwise.train;

import dev.shardwise.core.exec.ComputePool;
import dev.shardwise.core.tensor.Tensor;
import dev.shardwise.model.ParameterSet;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;

/**
 * One rank's checkpoint saving, synchronous or asynchronous (DLRover's flash checkpoint): asynchronously, the rank
 * copies its pieces into host buffers (reused from save to save) and goes on training while a writer thread
 * persists them and, on the leader, commits the checkpoint once every rank's shard is on disk. A save still in
 * flight when the next is due is waited for first; {@link #finish} (and {@link #close}) waits for the last one, so
 * a run never ends before its last checkpoint is committed.
 *
 * <p>Called from the rank's own thread only. The host buffers live outside the rank's memory pool (on a GPU they
 * would be pinned host memory); their size is the rank's shard of values and moments.
 */
final class CheckpointSaver implements AutoCloseable {
    private final RunCheckpoints checkpoints;
    private final RunCheckpoints.Place place;
    private final boolean async;
    private ExecutorService writer;       // created on the first asynchronous save
    private Future<?> pending;
    private Arena hostArena;
    private MemorySegment host;           // host buffers, reused while large enough

    CheckpointSaver(RunCheckpoints checkpoints, RunCheckpoints.Place place, boolean async) {
        this.checkpoints = checkpoints;
        this.place = place;
        this.async = async;
    }

    /**
     * Collective over every rank: saves the checkpoint of {@code state.step()}; returns the nanoseconds training was
     * held up (the whole save when synchronous; waiting for the previous save, a barrier and the copy to host
     * buffers when asynchronous).
     */
    long save(boolean leader, Path dir, ParameterSet params, OptimizerState optimizer, TrainState state, TrainingData data)
            throws IOException {
        long start = System.nanoTime();
        if (!async) {
            checkpoints.save(leader, dir, params, optimizer, state, data, place);
            return System.nanoTime() - start;
        }
        finish();
        Path tmp = RunCheckpoints.begin(leader, dir, state.step(), place);
        List<OptimizerState.Holding> copies = new ArrayList<>();
        optimizer.forSave(place.dpRank(), place.dpSize(), held -> copies.addAll(copy(held)));
        Map<String, Object> metadata = leader ? checkpoints.metadata(optimizer, state, data) : null;
        if (writer == null) {
            writer = Executors.newSingleThreadExecutor(r -> {
                Thread t = new Thread(r, "checkpoint-writer-" + place.globalRank());
                t.setDaemon(true);
                return t;
            });
        }
        pending = writer.submit(() -> {
            try {
                RunCheckpoints.writeShard(tmp, place.globalRank(), params, copies, place.writtenElsewhere());
            } catch (IOException | RuntimeException e) {
                RunCheckpoints.markFailed(tmp, place.globalRank(), e);
                throw e;
            }
            if (leader) checkpoints.commitWhenComplete(dir, tmp, place.worldSize(), metadata);
            return null;
        });
        return System.nanoTime() - start;
    }

    /** Bytes per piece of the copy to host buffers that one kernel thread takes (4 MiB: many per thread, little overhead). */
    private static final long COPY_CHUNK_BYTES = 4L << 20;

    /** The holdings copied into the host buffers, at the same flat places, by the rank's kernel threads. */
    private List<OptimizerState.Holding> copy(List<OptimizerState.Holding> held) {
        long bytes = 0;
        for (OptimizerState.Holding h : held) bytes += h.data().numel() * h.data().dtype().byteSize();
        if (host == null || host.byteSize() < bytes) {
            if (hostArena != null) hostArena.close();
            hostArena = Arena.ofShared();
            host = hostArena.allocate(Math.max(1, bytes), 64);
        }
        List<OptimizerState.Holding> copies = new ArrayList<>();
        List<long[]> chunks = new ArrayList<>();   // {holding, source byte, host byte, bytes}: copied by the rank's kernel threads
        long at = 0;
        for (int i = 0; i < held.size(); i++) {
            Tensor t = held.get(i).data();
            long n = t.numel() * t.dtype().byteSize();
            for (long done = 0; done < n; done += COPY_CHUNK_BYTES) {
                chunks.add(new long[]{i, t.byteOffset() + done, at + done, Math.min(COPY_CHUNK_BYTES, n - done)});
            }
            copies.add(new OptimizerState.Holding(held.get(i).kind(), held.get(i).flatStart(), Tensor.wrap(host.asSlice(at, n),
                    t.dtype(), Math.toIntExact(t.numel()))));
            at += n;
        }
        MemorySegment target = host;
        ComputePool.current().parallelFor(chunks.size(), c -> {
            long[] k = chunks.get(c);
            MemorySegment.copy(held.get((int) k[0]).data().segment(), k[1], target, k[2], k[3]);
        });
        return copies;
    }

    /**
     * Waits for the save in flight, if any, to be written (and on the leader, committed).
     *
     * @throws IOException if it failed, with its cause's message
     */
    void finish() throws IOException {
        if (pending == null) return;
        Future<?> p = pending;
        pending = null;
        try {
            p.get();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IOException("interrupted while waiting for a checkpoint to be written", e);
        } catch (ExecutionException e) {
            if (e.getCause() instanceof IOException io) throw io;
            if (e.getCause() instanceof UncheckedIOException u) throw u.getCause();
            throw new IOException("writing a checkpoint failed: " + e.getCause(), e.getCause());
        }
    }

    /** Waits for the last save, then releases the writer thread and the host buffers. */
    @Override
    public void close() throws IOException {
        try {
            finish();
        } finally {
            if (writer != null) writer.shutdown();
            if (hostArena != null) hostArena.close();
        }
    }
}
