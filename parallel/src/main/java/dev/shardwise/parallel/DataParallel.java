package dev.shardwise.parallel;

import dev.shardwise.comm.Communicator;
import dev.shardwise.comm.ReduceOp;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.tensor.Tensor;

/**
 * Data parallelism (PyTorch DDP, Li et al. 2020): every rank of the data-parallel group holds a full replica,
 * runs forward and backward on its own share of the global batch, and the gradients are averaged over the group
 * before the optimizer step, so every replica applies the same update and stays identical.
 *
 * <p>Communication: one all-reduce (average) per bucket of {@link #bucketElements} gradient elements over the dp
 * group, buckets taken from the end of the flat gradient buffer (the parameters whose gradients backward
 * finishes first), 2·(dp−1)/dp·4·P bytes sent per rank and step. Reductions add in rank order, so a layout is
 * bit-reproducible from run to run. Buckets are reduced after backward; overlapping them with backward is next.
 */
public final class DataParallel implements GradientReduction, AutoCloseable {
    /** Default bucket size: 25 MiB of fp32 gradients, as PyTorch DDP's default bucket_cap_mb. */
    public static final int DEFAULT_BUCKET_ELEMENTS = 25 << 18;

    private final Communicator dp;
    private final int bucketElements;
    private final ScalarReduction scalar;

    /**
     * @param dp             the data-parallel group (from {@link ProcessGroups#dp()})
     * @param bucketElements gradient elements per all-reduce
     * @param pool           charged for an 8-byte scratch scalar
     */
    public DataParallel(Communicator dp, int bucketElements, MemoryPool pool) {
        if (bucketElements < 1) throw new IllegalArgumentException("bucketElements must be >= 1, got " + bucketElements);
        this.dp = dp;
        this.bucketElements = bucketElements;
        this.scalar = new ScalarReduction(dp, pool);
    }

    /** Averages {@code grads} [P] over the data-parallel group, bucket by bucket from the end. */
    @Override
    public void reduce(Tensor grads) {
        int total = Math.toIntExact(grads.numel());
        for (int end = total; end > 0; end -= bucketElements) {
            int begin = Math.max(0, end - bucketElements);
            dp.allReduce(grads.slice(0, begin, end - begin), ReduceOp.AVG);
        }
    }

    @Override
    public double mean(double value) {
        return scalar.reduce(value, ReduceOp.AVG);
    }

    public int bucketElements() {
        return bucketElements;
    }

    @Override
    public void close() {
        scalar.close();
    }
}
