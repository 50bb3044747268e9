package dev.shardwise.train;

import dev.shardwise.core.tensor.Tensor;
import dev.shardwise.model.TensorParallel;

/**
 * A tensor-parallel rank's place (tp and its rank) without a group, for declaring the parameter slices of any rank
 * (Shoeybi et al. 2019's split) where no collective runs: memory reports and checkpoint layouts. Its collectives
 * refuse.
 */
record TensorParallelRank(int size, int tpRank) implements TensorParallel {

    /** @throws IllegalArgumentException if tpRank is outside [0, size) */
    TensorParallelRank {
        if (size < 1 || tpRank < 0 || tpRank >= size) {
            throw new IllegalArgumentException("tp rank " + tpRank + " of " + size + " does not exist");
        }
    }

    /** {@link TensorParallel#NONE} for tp = 1, else rank {@code tpRank} of {@code size}. */
    static TensorParallel of(int size, int tpRank) {
        return size == 1 ? TensorParallel.NONE : new TensorParallelRank(size, tpRank);
    }

    @Override
    public void allReduceSum(Tensor buffer) {
        throw new UnsupportedOperationException("a declaration-only tensor-parallel rank runs no collectives");
    }

    @Override
    public void allReduceMax(Tensor buffer) {
        throw new UnsupportedOperationException("a declaration-only tensor-parallel rank runs no collectives");
    }

    @Override
    public void allGather(Tensor output, Tensor input) {
        throw new UnsupportedOperationException("a declaration-only tensor-parallel rank runs no collectives");
    }

    @Override
    public void reduceScatterSum(Tensor output, Tensor input) {
        throw new UnsupportedOperationException("a declaration-only tensor-parallel rank runs no collectives");
    }
}
