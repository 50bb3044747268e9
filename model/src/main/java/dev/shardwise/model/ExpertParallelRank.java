package dev.shardwise.model;

import dev.shardwise.core.tensor.Tensor;

/**
 * An expert-parallel rank's place (ep and its rank) without a group, for declaring the experts any rank holds
 * (GShard's split: rank r holds experts [r·E/ep, (r+1)·E/ep) of each MoE block) where no all-to-all runs: memory
 * reports, checkpoint layouts and the planner's cost model. Its all-to-all refuses.
 */
public record ExpertParallelRank(int size, int epRank) implements ExpertParallel {

    /** @throws IllegalArgumentException if epRank is outside [0, size) */
    public ExpertParallelRank {
        if (size < 1 || epRank < 0 || epRank >= size) {
            throw new IllegalArgumentException("ep rank " + epRank + " of " + size + " does not exist");
        }
    }

    /** {@link ExpertParallel#NONE} for ep = 1, else rank {@code epRank} of {@code size}. */
    public static ExpertParallel of(int size, int epRank) {
        return size == 1 ? ExpertParallel.NONE : new ExpertParallelRank(size, epRank);
    }

    @Override
    public void allToAll(Tensor output, int[] receiveCounts, Tensor input, int[] sendCounts) {
        throw new UnsupportedOperationException("a declaration-only expert-parallel rank runs no all-to-all");
    }
}
