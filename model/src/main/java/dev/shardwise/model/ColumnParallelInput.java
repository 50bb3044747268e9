package dev.shardwise.model;

import dev.shardwise.core.memory.StepArena;
import dev.shardwise.core.tensor.Tensor;

/**
 * The input side of a layer's column-parallel linears: Shoeybi et al. 2019's f (forward identity, backward
 * all-reduce: the input is replicated on every tp rank) or, under sequence parallelism, Korthikanti et al. 2022's
 * g (forward all-gather along the sequence, backward reduce-scatter: the input is this rank's T/tp positions of each
 * sequence). The layer asks for the whole input before its column-parallel products and hands back their partial
 * input gradient after them; every linear reading the same input (SwiGLU's gate and up, the fused qkv) shares one
 * gather and one reduction.
 *
 * <p>Shapes: x [N, C] replicated or [N/tp, C] sequence-parallel -> whole [N, C]; N = B·T. Communication per use:
 * forward none, or one all-gather of [N, C] ((tp-1)/tp·N·C elements received per rank); backward one all-reduce
 * (2·(tp-1)/tp·N·C elements sent per rank, ring) or one reduce-scatter ((tp-1)/tp·N·C).
 */
final class ColumnParallelInput {
    private final TensorParallel tp;

    ColumnParallelInput(TensorParallel tp) {
        this.tp = tp;
    }

    /** Whether the input is a sequence shard that {@link #whole} gathers. */
    boolean sharded() {
        return tp.sequenceParallel();
    }

    /**
     * The whole input [N, C]: x itself when replicated, else every rank's shard gathered along the sequence into a
     * new tensor in {@code arena} (forward's scratch, or backward's arena when the queued dW reads it).
     */
    Tensor whole(StepArena arena, Tensor x, int sequences) {
        if (!sharded()) return x;
        Tensor whole = arena.allocateForOverwrite(x.dtype(), x.dim(0) * tp.size(), x.dim(1));
        tp.gatherFromSequenceRegionForward(whole, x, sequences);
        return whole;
    }

    /**
     * Where the column-parallel linears write their partial input gradient [N, C]: dx itself when replicated, else
     * a new tensor in {@code arena} that {@link #reduceGradient} reduce-scatters into dx [N/tp, C].
     */
    Tensor gradientBuffer(StepArena arena, Tensor dx) {
        if (!sharded()) return dx;
        return arena.allocateForOverwrite(dx.dtype(), dx.dim(0) * tp.size(), dx.dim(1));
    }

    /**
     * Finishes the input gradient from the ranks' partial ones: all-reduces dx [N, C] in place (f's backward), or
     * reduce-scatters {@code partial} [N, C] into dx [N/tp, C] (g's backward).
     */
    void reduceGradient(Tensor dx, Tensor partial, int sequences) {
        if (!sharded()) tp.copyToRegionBackward(dx);
        else tp.gatherFromSequenceRegionBackward(dx, partial, sequences);
    }
}
