package dev.shardwise.infer.moefy;

import dev.shardwise.core.memory.StepArena;
import dev.shardwise.core.tensor.Tensor;
import dev.shardwise.model.FeedForwardSubstitute;

import java.util.List;

/**
 * The MoEfied feed-forward branch (Zhang et al. 2022): in every block the router scores the E experts from the FFN
 * input, and each token runs only the neurons of its K best-scored experts ({@link ExpertWeights#forwardSparse}),
 * K/E of the dense FFN's multiply-adds. With K = E it computes the dense FFN (its terms summed expert by expert).
 * Installed into a model with {@code Gpt.substituteFeedForward}; forward only.
 */
public final class SparseExpertFeedForward implements FeedForwardSubstitute {
    private final List<ExpertWeights> blocks;
    private final List<ExpertRouter> routers;
    private final int active;
    private long nanos;   // wall time spent in forward, routers included

    /**
     * @param blocks  each block's experts, by block index
     * @param routers each block's router, by block index
     * @param active  K, experts each token runs
     * @throws IllegalArgumentException unless the lists have one entry per block and 1 <= K <= E
     */
    SparseExpertFeedForward(List<ExpertWeights> blocks, List<ExpertRouter> routers, int active) {
        if (blocks.size() != routers.size()) {
            throw new IllegalArgumentException(blocks.size() + " blocks of experts but " + routers.size() + " routers");
        }
        int e = blocks.getFirst().experts();
        if (active < 1 || active > e) {
            throw new IllegalArgumentException("--active " + active + " must be between 1 and the " + e + " experts");
        }
        this.blocks = List.copyOf(blocks);
        this.routers = List.copyOf(routers);
        this.active = active;
    }

    /** K. */
    public int active() { return active; }

    /** Seconds spent in {@link #forward} so far (routers and experts, all blocks). */
    public double seconds() { return nanos / 1e9; }

    /** x [N, C] -> y [N, C]: each row through its top-K experts by block {@code layer}'s router. */
    @Override
    public Tensor forward(StepArena arena, int layer, Tensor x) {
        long start = System.nanoTime();
        int[][] chosen = ExpertRouter.topK(routers.get(layer).scores(arena, x), active);
        Tensor y = blocks.get(layer).forwardSparse(arena, x, chosen);
        nanos += System.nanoTime() - start;
        return y;
    }
}
