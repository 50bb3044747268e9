package dev.shardwise.infer.moefy;

import dev.shardwise.core.memory.StepArena;
import dev.shardwise.core.tensor.Tensor;
import dev.shardwise.model.FeedForwardSubstitute;

import java.util.List;

/**
 * MoEfication's ground-truth selection (Zhang et al. 2022), the bound a router aims at: each token runs the K experts
 * with the largest actual activation mass, found by first computing the whole FFN. It saves no compute (it exists
 * to measure how much of the loss gap is the router's); forward only.
 */
final class OracleExpertFeedForward implements FeedForwardSubstitute {
    private final List<ExpertWeights> blocks;
    private final int active;

    OracleExpertFeedForward(List<ExpertWeights> blocks, int active) {
        int e = blocks.getFirst().experts();
        if (active < 1 || active > e) throw new IllegalArgumentException("--active " + active + " must be between 1 and the " + e + " experts");
        this.blocks = List.copyOf(blocks);
        this.active = active;
    }

    @Override
    public Tensor forward(StepArena arena, int layer, Tensor x) {
        ExpertWeights w = blocks.get(layer);
        Tensor mass = arena.allocateForOverwrite(x.dtype(), x.dim(0), w.experts());
        w.forwardDense(arena, x, mass);
        return w.forwardSparse(arena, x, ExpertRouter.topK(mass, active));
    }
}
