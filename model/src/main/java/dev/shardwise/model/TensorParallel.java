package dev.shardwise.model;

import dev.shardwise.core.kernels.Vectors;
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
        @Override public void allGather(Tensor output, Tensor input) { Vectors.copy(output, input); }
        @Override public void reduceScatterSum(Tensor output, Tensor input) { Vectors.copy(output, input); }
    };

    /** tp, ranks in the tensor-parallel group. */
    int size();

    /** This rank's place in the tensor-parallel group, in [0, tp). */
    int tpRank();

    /** Replaces {@code buffer} (contiguous) on every rank by its element-wise sum over the group. */
    void allReduceSum(Tensor buffer);

    /** Replaces {@code buffer} (contiguous) on every rank by its element-wise maximum over the group. */
    void allReduceMax(Tensor buffer);

    /** output [tp·n] (contiguous) = every rank's input [n] (contiguous), concatenated in tp-rank order. */
    void allGather(Tensor output, Tensor input);

    /**
     * output [n] (contiguous) = piece {@code tpRank()} of Σ over the group of every rank's input [tp·n] (contiguous),
     * summed in rank order, so the ranks sharing an element get the same bits as an all-reduce would give them.
     */
    void reduceScatterSum(Tensor output, Tensor input);

    /**
     * Whether the layers run sequence-parallel (Korthikanti et al. 2022): the regions tensor parallelism leaves
     * replicated (norms, residual sums, the embedding's output) hold T/tp positions of each sequence per rank, and
     * the named pairs below replace f's and g's all-reduces. Fixed for the life of the object; false unless an
     * implementation says otherwise.
     */
    default boolean sequenceParallel() {
        return false;
    }

    /**
     * Forward of the all-gather before a column-parallel linear under sequence parallelism (backward:
     * {@link #gatherFromSequenceRegionBackward}, a reduce-scatter): {@code whole} [B·T, C] = every rank's
     * {@code shard} [B·T/tp, C], rank r's rows going to positions [r·T/tp, (r+1)·T/tp) of each of the B sequences.
     * One all-gather per sequence (contiguous rows on both sides, no staging copy); (tp-1)/tp·B·T·C elements
     * received per rank.
     */
    default void gatherFromSequenceRegionForward(Tensor whole, Tensor shard, int sequences) {
        int t = whole.dim(0) / sequences, local = shard.dim(0) / sequences;
        for (int b = 0; b < sequences; b++) allGather(whole.slice(0, b * t, t), shard.slice(0, b * local, local));
    }

    /**
     * Backward of {@link #gatherFromSequenceRegionForward} (forward: the all-gather): the ranks' partial gradients
     * of the gathered input, {@code dwhole} [B·T, C], are summed over the group in rank order and each rank keeps its
     * positions' rows, {@code dshard} [B·T/tp, C]. One reduce-scatter per sequence; (tp-1)/tp·B·T·C elements sent.
     */
    default void gatherFromSequenceRegionBackward(Tensor dshard, Tensor dwhole, int sequences) {
        reduceScatterSequences(dshard, dwhole, sequences);
    }

    /**
     * Forward of the reduce-scatter after a row-parallel linear under sequence parallelism, in place of g's
     * all-reduce (backward: {@link #reduceScatterToSequenceRegionBackward}, an all-gather): {@code shard}
     * [B·T/tp, C] = this rank's positions of Σ over the group of {@code partial} [B·T, C], summed in rank order.
     */
    default void reduceScatterToSequenceRegionForward(Tensor shard, Tensor partial, int sequences) {
        reduceScatterSequences(shard, partial, sequences);
    }

    /**
     * Backward of {@link #reduceScatterToSequenceRegionForward} (forward: the reduce-scatter): {@code dwhole}
     * [B·T, C] = every rank's {@code dshard} [B·T/tp, C] gathered along the sequence, as
     * {@link #gatherFromSequenceRegionForward} does.
     */
    default void reduceScatterToSequenceRegionBackward(Tensor dwhole, Tensor dshard, int sequences) {
        gatherFromSequenceRegionForward(dwhole, dshard, sequences);
    }

    private void reduceScatterSequences(Tensor shard, Tensor whole, int sequences) {
        int t = whole.dim(0) / sequences, local = shard.dim(0) / sequences;
        for (int b = 0; b < sequences; b++) reduceScatterSum(shard.slice(0, b * local, local), whole.slice(0, b * t, t));
    }

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
