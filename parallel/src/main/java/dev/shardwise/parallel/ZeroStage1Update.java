package dev.shardwise.parallel;

import dev.shardwise.comm.Communicator;
import dev.shardwise.comm.ReduceOp;
import dev.shardwise.core.kernels.Vectors;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.tensor.Tensor;
import dev.shardwise.model.ParameterSet;
import dev.shardwise.model.optim.AdamWOptimizer;
import dev.shardwise.model.optim.ParameterUpdate;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.util.function.BiConsumer;

/**
 * ZeRO stage 1 (Rajbhandari et al. 2020, "P_os"): the AdamW state is partitioned over the data-parallel group.
 * Rank r of N owns elements [r·S, (r+1)·S) of the flat parameter buffer (S = P'/N, P' padded to a multiple of N):
 * <pre>
 *   reduce-scatter(AVG) the gradients      -> rank r holds the averaged gradient of its shard (in place)
 *   norm² = all-reduce(SUM) of Σ shard²    -> global-norm clipping of the shard
 *   AdamW on the shard only                -> m, v exist for the shard only: 8·P'/N bytes instead of 8·P'
 *   all-gather the parameter shards        -> every rank holds the full updated parameters again
 * </pre>
 * Per rank: parameters 4P' + gradients 4P' + optimizer state 8P'/N bytes (ZeRO's 4Ψ + 4Ψ + 8Ψ/N for fp32 Adam).
 * Communication per step equals data parallelism's all-reduce: a reduce-scatter plus an all-gather of P'.
 * The reduce-scatter writes each rank's averaged shard over its own chunk of the gradient buffer (MPI's
 * in-place form: a rank's chunk r is read only by rank r), so no extra gradient buffer is needed.
 */
public final class ZeroStage1Update implements ParameterUpdate {
    private final ParameterSet params;
    private final MemoryPool pool;
    private final StageGradients stages;
    private final Communicator dp;
    private final int shardStart;
    private final int shardSize;
    private final ShardMoments moments;   // m, v [S] of the shard
    private final ScalarReduction scalar;
    private final ShardAdamW adamW;
    private long steps;

    /**
     * @throws IllegalArgumentException if the flat buffers do not split into equal shards (allocate the
     *                                  parameters with a padding multiple of the dp size)
     */
    public ZeroStage1Update(ParameterSet params, Communicator dp, MemoryPool pool, AdamWOptimizer.Settings settings) {
        this(params, dp, pool, settings, ShardMoments.resident());
    }

    /**
     * As {@link #ZeroStage1Update(ParameterSet, Communicator, MemoryPool, AdamWOptimizer.Settings)}, the moments
     * made by {@code moments} (in memory, or offloaded to disk).
     *
     * @throws UncheckedIOException if the moments' file cannot be made
     */
    public ZeroStage1Update(ParameterSet params, Communicator dp, MemoryPool pool, AdamWOptimizer.Settings settings,
                            ShardMoments.Factory moments) {
        this(params, dp, pool, settings, moments, StageGradients.NONE);
    }

    /**
     * As {@link #ZeroStage1Update(ParameterSet, Communicator, MemoryPool, AdamWOptimizer.Settings, ShardMoments.Factory)}
     * for one pipeline stage's parameters: the tied embedding's gradient summed with the other end's, the norm over
     * every stage ({@code stages}).
     */
    public ZeroStage1Update(ParameterSet params, Communicator dp, MemoryPool pool, AdamWOptimizer.Settings settings,
                            ShardMoments.Factory moments, StageGradients stages) {
        long padded = params.values().numel();
        if (padded % dp.size() != 0) {
            throw new IllegalArgumentException("ZeRO needs the flat parameter buffer (" + padded + " elements) to split into "
                    + dp.size() + " equal shards; allocate the parameters padded to a multiple of the dp size "
                    + "(ParameterSet.Builder.allocate(pool, dtype, " + dp.size() + "))");
        }
        this.params = params;
        this.pool = pool;
        this.stages = stages;
        this.dp = dp;
        this.shardSize = Math.toIntExact(padded / dp.size());
        this.shardStart = dp.rank() * shardSize;
        try {
            this.moments = moments.create(pool, params.dtype(), shardSize);
        } catch (IOException e) {
            throw new UncheckedIOException(e.getMessage(), e);
        }
        this.scalar = new ScalarReduction(dp, pool);
        this.adamW = new ShardAdamW(settings);
        adamW.addRange(params, params.parameters(), shardStart, shardSize, 0);
    }

    @Override
    public Applied apply(double lr, double maxNorm) {
        Tensor grads = params.grads(), values = params.values();
        Tensor gradShard = grads.slice(0, shardStart, shardSize);
        long start = System.nanoTime();
        stages.sumTiedFlat(grads, pool);
        dp.reduceScatter(gradShard, grads, ReduceOp.AVG);
        stages.sumPartialGradients(gradShard, new long[]{shardStart}, new int[]{0}, new int[]{shardSize});
        ParameterSet.Unit uncounted = stages.uncountedUnit();
        double sumOfSquares = stages.tensorParallel()
                ? stages.countedSumOfSquares(gradShard, new long[]{shardStart}, new int[]{0}, new int[]{shardSize})
                : uncounted == null ? Vectors.sumOfSquares(gradShard)
                : StageGradients.sumOfSquaresWithout(gradShard, uncounted.offset() - shardStart, uncounted.size());
        double norm = Math.sqrt(stages.sumOverStages(scalar.reduce(sumOfSquares, ReduceOp.SUM)));
        long communication = System.nanoTime() - start;
        ShardAdamW.clip(gradShard, norm, maxNorm);
        steps++;
        adamW.step(moments, values, true, grads, true, lr, steps);
        long gather = System.nanoTime();
        dp.allGather(values, values.slice(0, shardStart, shardSize));
        communication += System.nanoTime() - gather;
        return new Applied(norm, communication);
    }

    @Override
    public double mean(double value) {
        return scalar.reduce(value, ReduceOp.AVG);
    }

    @Override
    public long steps() {
        return steps;
    }

    /** Runs {@code body} with the moments m, v [S] of this rank's shard (flat elements [shardStart, + S)) to read. */
    public void readMoments(BiConsumer<Tensor, Tensor> body) {
        moments.read(body);
    }

    /** As {@link #readMoments}, the moments to overwrite from a checkpoint; then {@code steps} updates count as applied. */
    public void writeMoments(BiConsumer<Tensor, Tensor> body, long steps) {
        moments.write(body);
        this.steps = steps;
    }

    /** This rank's shard of the flat parameter buffer: [start, start + size). */
    public int shardStart() { return shardStart; }
    public int shardSize() { return shardSize; }

    @Override
    public void close() {
        moments.close();
        scalar.close();
    }
}
