package dev.shardwise.cli.bench;

import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;
import dev.shardwise.parallel.pipeline.StageWork;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.locks.LockSupport;

/**
 * Fixed-duration stand-in for a pipeline stage, for {@code bench pipeline}: each compute returns its duration after
 * it was called, sleeping what its own bookkeeping left (so ranks sharing few cores do not slow each other down);
 * each forward holds a stand-in activation charged to the rank's memory pool until its (mb, chunk) is released; and
 * real [B·T, C] tensors cross the pipeline group carrying values the receiving stage checks: forward of model part
 * k sends mb·1000 + k, its backward sends −(mb·1000 + k). The message buffers of each (mb, chunk) are allocated on
 * first use and kept for later steps (as a trainer keeps its communication buffers); {@link #close} frees them.
 * ReduceGradients and OptimizerStep take no time. Used on its rank's thread only.
 *
 * <p>A released activation is freed at the start of the rank's next compute (or at ReduceGradients), inside that
 * compute's fixed duration: freeing a pool allocation closes a shared Arena, a JVM-wide handshake that takes ~60 µs
 * and up to milliseconds on a loaded machine, and would otherwise sit between instructions and count as bubble.
 * Every compute frees before it allocates, so the pool's peak (taken at allocation) is what freeing at release
 * gives.
 */
final class StandInStageWork implements StageWork, AutoCloseable {
    /** Rows and columns of the tensors sent, [B·T, C]: 64 x 64 f32, 16 KiB per message. */
    static final int ROWS = 64;
    static final int COLUMNS = 64;

    private final int stages;
    private final int chunks;
    private final int stage;
    private final MemoryPool memory;
    private final long forwardNanos;
    private final long backwardInputNanos;
    private final long backwardWeightNanos;
    private final long activationBytes;
    private final Map<Long, MemoryPool.Allocation> activations = new HashMap<>();
    private final List<MemoryPool.Allocation> released = new ArrayList<>();   // freed by the next compute
    private final Map<Long, Tensor[]> buffers = new HashMap<>();   // per (mb, chunk): input, output, input grad, output grad; kept

    /**
     * @param forwardNanos        one chunk's forward; a whole Backward sleeps backwardInputNanos + backwardWeightNanos
     * @param activationBytes     the stand-in activation one forward of one chunk keeps alive until release
     */
    StandInStageWork(int stages, int chunks, int stage, MemoryPool memory, long forwardNanos, long backwardInputNanos,
                     long backwardWeightNanos, long activationBytes) {
        this.stages = stages;
        this.chunks = chunks;
        this.stage = stage;
        this.memory = memory;
        this.forwardNanos = forwardNanos;
        this.backwardInputNanos = backwardInputNanos;
        this.backwardWeightNanos = backwardWeightNanos;
        this.activationBytes = activationBytes;
    }

    @Override
    public void forward(int mb, int chunk) {
        long deadline = System.nanoTime() + forwardNanos;
        freeReleased();
        int part = chunk * stages + stage;
        if (part > 0) expect(buffers(mb, chunk)[0], mb * 1000 + part - 1, "input", mb, chunk);
        activations.put(key(mb, chunk), memory.allocate(MemoryCategory.ACTIVATIONS, activationBytes));
        buffers(mb, chunk)[1].fill(mb * 1000 + part);
        sleepUntil(deadline);
    }

    @Override
    public void backward(int mb, int chunk) {
        long deadline = System.nanoTime() + backwardInputNanos + backwardWeightNanos;
        inputGradient(mb, chunk, deadline);
    }

    @Override
    public void backwardInput(int mb, int chunk) {
        inputGradient(mb, chunk, System.nanoTime() + backwardInputNanos);
    }

    private void inputGradient(int mb, int chunk, long deadline) {
        freeReleased();
        int part = chunk * stages + stage;
        if (part < chunks * stages - 1) expect(buffers(mb, chunk)[3], -(mb * 1000 + part + 1), "output gradient", mb, chunk);
        buffers(mb, chunk)[2].fill(-(mb * 1000 + part));
        sleepUntil(deadline);
    }

    @Override
    public void backwardWeight(int mb, int chunk) {
        long deadline = System.nanoTime() + backwardWeightNanos;
        freeReleased();
        sleepUntil(deadline);
    }

    @Override public Tensor inputBuffer(int mb, int chunk) { return buffers(mb, chunk)[0]; }
    @Override public Tensor output(int mb, int chunk) { return buffers(mb, chunk)[1]; }
    @Override public Tensor inputGradient(int mb, int chunk) { return buffers(mb, chunk)[2]; }
    @Override public Tensor outputGradientBuffer(int mb, int chunk) { return buffers(mb, chunk)[3]; }

    @Override
    public void release(int mb, int chunk) {
        MemoryPool.Allocation a = activations.remove(key(mb, chunk));
        if (a != null) released.add(a);
    }

    private void freeReleased() {
        released.forEach(MemoryPool.Allocation::close);
        released.clear();
    }

    @Override public void reduceGradients() {
        freeReleased();
    }
    @Override public void optimizerStep() { }

    @Override
    public void close() {
        freeReleased();
        activations.values().forEach(MemoryPool.Allocation::close);
        activations.clear();
        buffers.values().forEach(b -> { for (Tensor t : b) t.close(); });
        buffers.clear();
    }

    private Tensor[] buffers(int mb, int chunk) {
        return buffers.computeIfAbsent(key(mb, chunk), k -> new Tensor[]{
                Tensor.allocate(memory, MemoryCategory.BUFFERS, DType.F32, ROWS, COLUMNS),
                Tensor.allocate(memory, MemoryCategory.BUFFERS, DType.F32, ROWS, COLUMNS),
                Tensor.allocate(memory, MemoryCategory.BUFFERS, DType.F32, ROWS, COLUMNS),
                Tensor.allocate(memory, MemoryCategory.BUFFERS, DType.F32, ROWS, COLUMNS)});
    }

    private static long key(int mb, int chunk) {
        return ((long) mb << 32) | chunk;
    }

    private void expect(Tensor received, double value, String what, int mb, int chunk) {
        for (float x : received.toFloatArray()) {
            if (x != value) {
                throw new IllegalStateException("bench pipeline: stage " + stage + " received " + x + " as the " + what
                        + " of micro-batch " + mb + " on chunk " + chunk + ", expected " + value
                        + "; the executor delivered the wrong message");
            }
        }
    }

    /** Sleeps until System.nanoTime() reaches {@code deadline}, however often parkNanos returns early. */
    private static void sleepUntil(long deadline) {
        for (long left = deadline - System.nanoTime(); left > 0; left = deadline - System.nanoTime()) LockSupport.parkNanos(left);
    }
}
