package dev.shardwise.model;

import dev.shardwise.core.tensor.Tensor;

/**
 * The collectives tensor parallelism (Shoeybi et al. 2019) needs from its tensor-parallel group, as the model
 * sees them: {@code model} owns this interface and {@code parallel} implements it over a communicator, so the
 * model never depends on {@code comm}. Layers call the named pairs (Megatron's f and g), whose names say what runs
 * forward and what runs backward; the primitives beneath them are sums and maxima over the group, in a fixed order,
 * with every rank receiving the same bits.
 *
 * <p>Used by one rank's training thread; every call blocks until every rank of the group has made it, so all ranks
 * must make the same calls in the same order.
 */
public interface TensorParallel {

    /** One rank: every collective is the identity. */
    TensorParallel NONE = new TensorParallel() {
        @Override public int size() { return 1; }
        @Override public int tpRank() { return 0; }
        @Override public void allReduceSum(Tensor buffer) { }
        @Override public void allReduceMax(Tensor buffer) { }
    };

    /** tp, ranks in the tensor-parallel group. */
    int size();

    /** This rank's place in the tensor-parallel group, in [0, tp). */
    int tpRank();

    /** Replaces {@code buffer} (contiguous) on every rank by its element-wise sum over the group. */
    void allReduceSum(Tensor buffer);

    /** Replaces {@code buffer} (contiguous) on every rank by its element-wise maximum over the group. */
    void allReduceMax(Tensor buffer);

    /**
     * Backward of f, copy to the tensor-parallel region (forward: identity, nothing to call): the gradient of a
     * replicated input that every rank fed into its own shard is the sum of the ranks' partial gradients, an
     * all-reduce of {@code dx} [N, C] in place: 2·(tp-1)/tp·N·C elements sent per rank (ring).
     */
    default void copyToRegionBackward(Tensor dx) {
        allReduceSum(dx);
    }

    /**
     * Forward of g, reduce from the tensor-parallel region (backward: identity, nothing to call): the ranks' partial
     * outputs y [N, C] (row-parallel products) are summed in place by an all-reduce: 2·(tp-1)/tp·N·C elements sent per
     * rank (ring).
     */
    default void reduceFromRegionForward(Tensor y) {
        allReduceSum(y);
    }

    /**
     * {@code whole / tp}, for every shard size: {@code field} names the config field (e.g. {@code heads}),
     * {@code what} says where it lives and what it is.
     *
     * @throws IllegalArgumentException naming the field, its value and the tp values that work, if tp does not divide it
     */
    default int divide(int whole, String field, String what) {
        int tp = size();
        if (whole % tp != 0) {
            StringBuilder ok = new StringBuilder();
            for (int d = 1; d <= whole; d++) if (whole % d == 0) ok.append(ok.isEmpty() ? "" : ", ").append(d);
            throw new IllegalArgumentException("tp=" + tp + " does not divide " + field + "=" + whole + " (" + what + "); use tp in {"
                    + ok + "}");
        }
        return whole / tp;
    }
}
