package dev.shardwise.infer.moefy;

import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.memory.StepArena;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;
import dev.shardwise.model.FeedForwardSubstitute;

import java.lang.foreign.MemorySegment;
import java.util.List;

/**
 * Runs every block's FFN densely while recording what a router learns from (MoEfication, Zhang et al. 2022): the
 * first M rows of each block's FFN input x [M, C] and of its experts' activation mass [M, E]. Owns the two record
 * tensors per block ({@link #close()} frees them). Not thread-safe.
 */
final class HiddenStateCollector implements FeedForwardSubstitute, AutoCloseable {
    private final List<ExpertWeights> blocks;
    private final Tensor[] inputs, masses;   // per block [M, C], [M, E]
    private final int[] filled;

    HiddenStateCollector(List<ExpertWeights> blocks, int hidden, int rows, MemoryPool pool) {
        this.blocks = List.copyOf(blocks);
        int l = blocks.size(), e = blocks.getFirst().experts();
        DType dt = blocks.getFirst().dtype();
        inputs = new Tensor[l];
        masses = new Tensor[l];
        filled = new int[l];
        for (int i = 0; i < l; i++) {
            inputs[i] = Tensor.allocate(pool, MemoryCategory.BUFFERS, dt, rows, hidden);
            masses[i] = Tensor.allocate(pool, MemoryCategory.BUFFERS, dt, rows, e);
        }
    }

    /** Whether every block has recorded its M rows. */
    boolean full() {
        for (int i = 0; i < filled.length; i++) if (filled[i] < inputs[i].dim(0)) return false;
        return true;
    }

    /** Rows recorded so far by block 0 (every block records the same count). */
    int rows() { return filled[0]; }

    /** Block {@code layer}'s recorded inputs [rows(), C]. */
    Tensor inputs(int layer) { return inputs[layer].slice(0, 0, filled[layer]); }

    /** Block {@code layer}'s recorded expert masses [rows(), E]. */
    Tensor masses(int layer) { return masses[layer].slice(0, 0, filled[layer]); }

    @Override
    public Tensor forward(StepArena arena, int layer, Tensor x) {
        int n = x.dim(0), take = Math.min(n, inputs[layer].dim(0) - filled[layer]);
        Tensor mass = arena.allocateForOverwrite(x.dtype(), n, blocks.get(layer).experts());
        Tensor y = blocks.get(layer).forwardDense(arena, x, mass);
        if (take > 0) {
            copyRows(inputs[layer], filled[layer], x, take);
            copyRows(masses[layer], filled[layer], mass, take);
            filled[layer] += take;
        }
        return y;
    }

    private static void copyRows(Tensor into, int at, Tensor from, int rows) {
        long bytes = (long) rows * from.dim(1) * from.dtype().byteSize();
        MemorySegment.copy(from.segment(), from.byteOffset(), into.segment(),
                into.byteOffset() + (long) at * into.dim(1) * into.dtype().byteSize(), bytes);
    }

    @Override
    public void close() {
        for (Tensor t : inputs) t.close();
        for (Tensor t : masses) t.close();
    }
}
