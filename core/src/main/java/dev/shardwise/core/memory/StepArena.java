package dev.shardwise.core.memory;

import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;

import java.util.ArrayList;
import java.util.List;

/**
 * The activations of one forward/backward pass: tensors allocated from a rank's {@link MemoryPool} under
 * {@link MemoryCategory#ACTIVATIONS} (or another category) and all freed together by {@link #close()}.
 * Layers allocate their outputs and saved state here; the trainer closes the arena after backward.
 *
 * <p>Not thread-safe: one arena belongs to one rank's training thread.
 */
public final class StepArena implements AutoCloseable {
    private final MemoryPool pool;
    private final List<Tensor> tensors = new ArrayList<>();

    public StepArena(MemoryPool pool) {
        this.pool = pool;
    }

    public MemoryPool pool() { return pool; }

    /** A zeroed activation tensor that lives until {@link #close()}. */
    public Tensor allocate(DType dtype, int... shape) {
        return allocate(MemoryCategory.ACTIVATIONS, dtype, shape);
    }

    /** A zeroed tensor charged to {@code category} that lives until {@link #close()}. */
    public Tensor allocate(MemoryCategory category, DType dtype, int... shape) {
        Tensor t = Tensor.allocate(pool, category, dtype, shape);
        tensors.add(t);
        return t;
    }

    /** Frees every tensor allocated here, newest first. The arena can be reused afterwards. */
    @Override
    public void close() {
        for (int i = tensors.size() - 1; i >= 0; i--) tensors.get(i).close();
        tensors.clear();
    }
}
