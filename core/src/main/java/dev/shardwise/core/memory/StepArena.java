package dev.shardwise.core.memory;

import dev.shardwise.core.exec.ComputePool;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;

import java.lang.foreign.MemorySegment;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * The activations of forward/backward passes: tensors charged to a rank's {@link MemoryPool} (as
 * {@link MemoryCategory#ACTIVATIONS} unless another category is named) that live until {@link #reset()}.
 * A reset keeps the memory and hands it out again to the next pass's requests of the same size, so a
 * training loop that repeats the same pass touches fresh pages only once (first-touch page faults and the
 * allocator's zeroing cost more than the layers' elementwise work). {@link #allocate} zeroes a reused block
 * (for kernels that accumulate into their output); {@link #allocateForOverwrite} does not, for outputs a
 * kernel writes in full (a GEMM with beta 0, an elementwise map, a norm): the zeroing of a training step's
 * activations, some 350 MB on GPT-2-small-like shapes, is memory traffic nothing reads. {@link #close()} frees
 * everything.
 *
 * <p>Tensors from {@link #allocate} are views: do not close them. Not thread-safe: one arena belongs to one
 * rank's training thread.
 */
public final class StepArena implements AutoCloseable {
    private record Key(MemoryCategory category, DType dtype, long numel) { }

    /** Bytes one task zeroes when a block is reused. */
    private static final long ZERO_PIECE_BYTES = 1 << 20;

    private final MemoryPool pool;
    private final List<Tensor> owned = new ArrayList<>();                 // every block this arena holds
    private final List<Map.Entry<Key, Tensor>> inUse = new ArrayList<>();
    private final Map<Key, ArrayDeque<Tensor>> free = new HashMap<>();

    public StepArena(MemoryPool pool) {
        this.pool = pool;
    }

    public MemoryPool pool() { return pool; }

    /** A zeroed activation tensor that lives until {@link #reset()} or {@link #close()}. */
    public Tensor allocate(DType dtype, int... shape) {
        return allocate(MemoryCategory.ACTIVATIONS, dtype, shape);
    }

    /** A zeroed tensor charged to {@code category} that lives until {@link #reset()} or {@link #close()}. */
    public Tensor allocate(MemoryCategory category, DType dtype, int... shape) {
        return take(category, dtype, shape, true);
    }

    /**
     * An activation tensor whose contents are unspecified (whatever an earlier pass left there, or zeros), for a
     * caller that writes every element before reading any; lives until {@link #reset()} or {@link #close()}.
     */
    public Tensor allocateForOverwrite(DType dtype, int... shape) {
        return take(MemoryCategory.ACTIVATIONS, dtype, shape, false);
    }

    private Tensor take(MemoryCategory category, DType dtype, int[] shape, boolean zeroed) {
        long numel = 1;
        for (int s : shape) numel *= s;
        Key key = new Key(category, dtype, numel);
        ArrayDeque<Tensor> reusable = free.get(key);
        Tensor block;
        if (reusable != null && !reusable.isEmpty()) {
            block = reusable.pop();
            if (zeroed) zero(block.segment().asSlice(block.byteOffset(), numel * dtype.byteSize()));
        } else {
            block = Tensor.allocate(pool, category, dtype, Math.toIntExact(numel));
            owned.add(block);
        }
        inUse.add(Map.entry(key, block));
        return block.view(shape);
    }

    /** Zeroes {@code segment} on the current compute pool's threads, in 1 MiB pieces. */
    private static void zero(MemorySegment segment) {
        long size = segment.byteSize();
        int pieces = (int) ((size + ZERO_PIECE_BYTES - 1) / ZERO_PIECE_BYTES);
        ComputePool.current().parallelFor(pieces, i -> {
            long start = i * ZERO_PIECE_BYTES;
            segment.asSlice(start, Math.min(ZERO_PIECE_BYTES, size - start)).fill((byte) 0);
        });
    }

    /** Ends a pass: every tensor handed out becomes invalid and its memory is kept for the next pass. */
    public void reset() {
        for (Map.Entry<Key, Tensor> e : inUse) free.computeIfAbsent(e.getKey(), k -> new ArrayDeque<>()).push(e.getValue());
        inUse.clear();
    }

    /** Frees every block this arena holds. */
    @Override
    public void close() {
        for (int i = owned.size() - 1; i >= 0; i--) owned.get(i).close();
        owned.clear();
        inUse.clear();
        free.clear();
    }
}
