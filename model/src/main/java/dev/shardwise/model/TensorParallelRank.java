package dev.shardwise.model;

import dev.shardwise.core.tensor.Tensor;

/**
 * A tensor-parallel rank's place (tp and its rank) without a group, for declaring the parameter slices of any rank
 * (Shoeybi et al. 2019's split) where no collective runs: memory reports, checkpoint layouts and cost models. Its
 * collectives refuse.
 */
public record TensorParallelRank(int size, int tpRank) implements TensorParallel {

    /** @throws IllegalArgumentException if tpRank is outside [0, size) */
    public TensorParallelRank {
        if (size < 1 || tpRank < 0 || tpRank >= size) {
            throw new IllegalArgumentException("tp rank " + tpRank + " of " + size + " does not exist");
        }
    }

    /** {@link TensorParallel#NONE} for tp = 1, else rank {@code tpRank} of {@code size}. */
    public static TensorParallel of(int size, int tpRank) {
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
