package dev.shardwise.parallel;

import dev.shardwise.comm.Communicator;
import dev.shardwise.comm.ReduceOp;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.tensor.Tensor;
import dev.shardwise.model.Gpt;
import dev.shardwise.model.ParameterSet;

/**
 * Data parallelism (PyTorch DDP, Li et al. 2020): every rank of the data-parallel group holds a full replica,
 * runs forward and backward on its own share of the global batch, and the gradients are averaged over the group
 * before the optimizer step, so every replica applies the same update and stays identical.
 *
 * <p>Communication: one all-reduce (average) per bucket of about {@link #bucketElements} gradient elements over
 * the dp group, 2·(dp−1)/dp·4·P bytes sent per rank and step. Reductions add in rank order, so a layout is
 * bit-reproducible from run to run; bucket boundaries do not change the result (the all-reduce is elementwise).
 *
 * <p>Overlapped (built with the model's {@link ParameterSet}): as backward finishes each parameter unit (through
 * the model's {@link Gpt.Hooks}), the unit's gradients join the open bucket; a full bucket's all-reduce starts at
 * once on the rank's thread while backward goes on on a helper thread ({@link LastBackwardOverlap}). Units finish in
 * reverse flat order, so a bucket is a contiguous range; the embeddings finish last (the tied wte's gradient is
 * complete only after the embedding's backward) and close the final bucket. Under gradient accumulation only the
 * last micro-batch's backward reduces. {@link #reduce} then waits for what is still in flight: the exposed part.
 * Without the hooks (or not overlapped) {@link #reduce} all-reduces every bucket after backward, from the end.
 */
public final class DataParallel implements GradientReduction, AutoCloseable {
    /** Default bucket size: 25 MiB of fp32 gradients, as PyTorch DDP's default bucket_cap_mb. */
    public static final int DEFAULT_BUCKET_ELEMENTS = 25 << 18;

    private final Communicator dp;
    private final int bucketElements;
    private final ScalarReduction scalar;
    private final ParameterSet params;         // null: not overlapped
    private final LastBackwardOverlap overlap;   // null: not overlapped
    private int bucketStart = -1, bucketEnd = -1;   // the open bucket [start, end) of the flat gradients, or -1
    private boolean posted;                    // this step's buckets were started during backward

    /**
     * Reduces after backward.
     *
     * @param dp             the data-parallel group (from {@link ProcessGroups#dp()})
     * @param bucketElements gradient elements per all-reduce
     * @param pool           charged for an 8-byte scratch scalar
     */
    public DataParallel(Communicator dp, int bucketElements, MemoryPool pool) {
        this(dp, bucketElements, pool, null);
    }

    /**
     * Overlaps the reduction with backward when {@code params} (the replica's parameters, whose flat gradients are
     * reduced) is given and the model runs with {@link #hooks()}; reduces after backward when it is null.
     */
    public DataParallel(Communicator dp, int bucketElements, MemoryPool pool, ParameterSet params) {
        if (bucketElements < 1) throw new IllegalArgumentException("bucketElements must be >= 1, got " + bucketElements);
        this.dp = dp;
        this.bucketElements = bucketElements;
        this.scalar = new ScalarReduction(dp, pool);
        this.params = params;
        this.overlap = params == null ? null : new LastBackwardOverlap(pool.rankName().replace(' ', '-') + "-dp", this::unitDone);
    }

    @Override
    public Gpt.Hooks hooks() {
        return overlap == null ? Gpt.Hooks.NONE : overlap;
    }

    @Override
    public void beginMicroBatch(int index, int count) {
        if (overlap != null) overlap.beginMicroBatch(index, count);
    }

    @Override
    public void backward(Runnable backward) {
        if (overlap != null) overlap.backward(backward);
        else backward.run();
    }

    /** The unit's gradients are final for this step (last micro-batch): add them to the bucket, start it if full. */
    private void unitDone(ParameterSet.Unit unit) {
        if (bucketStart >= 0 && unit.offset() + unit.size() != bucketStart) startBucket();
        if (bucketStart < 0) bucketEnd = unit.offset() + unit.size();
        bucketStart = unit.offset();
        if (bucketEnd - bucketStart >= bucketElements || unit.offset() == 0) startBucket();
    }

    private void startBucket() {
        Tensor bucket = params.grads().slice(0, bucketStart, bucketEnd - bucketStart);
        overlap.post(() -> {
            dp.allReduce(bucket, ReduceOp.AVG);
            return null;
        });
        bucketStart = bucketEnd = -1;
        posted = true;
    }

    /** Averages {@code grads} [P] over the data-parallel group: waits for the buckets started during backward, or reduces them all now. */
    @Override
    public void reduce(Tensor grads) {
        if (posted) {
            if (bucketStart >= 0) startBucket();
            overlap.drain();
            posted = false;
            return;
        }
        int total = Math.toIntExact(grads.numel());
        for (int end = total; end > 0; end -= bucketElements) {
            int begin = Math.max(0, end - bucketElements);
            dp.allReduce(grads.slice(0, begin, end - begin), ReduceOp.AVG);
        }
    }

    @Override
    public void settle() {
        if (overlap != null) overlap.drain();
    }

    @Override
    public double mean(double value) {
        if (overlap != null) overlap.drain();
        return scalar.reduce(value, ReduceOp.AVG);
    }

    public int bucketElements() {
        return bucketElements;
    }

    @Override
    public void close() {
        if (overlap != null) overlap.close();
        scalar.close();
    }
}
