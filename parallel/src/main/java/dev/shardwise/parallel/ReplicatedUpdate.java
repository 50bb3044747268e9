package dev.shardwise.parallel;


import dev.shardwise.core.kernels.Vectors;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.model.Gpt;
import dev.shardwise.model.ParameterSet;
import dev.shardwise.model.optim.AdamWOptimizer;
import dev.shardwise.model.optim.GradientClipping;
import dev.shardwise.model.optim.ParameterUpdate;

/**
 * The update without optimizer sharding (ZeRO stage 0): reduce the gradients (nothing on one rank, an average
 * over the data-parallel group under data parallelism), clip their global norm, and run AdamW on every
 * parameter on every rank. Each rank holds full parameters, gradients and optimizer state: 16 bytes/parameter.
 */
public final class ReplicatedUpdate implements ParameterUpdate {
    private final ParameterSet params;
    private final AdamWOptimizer optimizer;
    private final GradientReduction reduction;
    private final StageGradients stages;
    private final MemoryPool pool;

    public ReplicatedUpdate(ParameterSet params, AdamWOptimizer optimizer, GradientReduction reduction) {
        this(params, optimizer, reduction, StageGradients.NONE, null);
    }

    /**
     * An update of one pipeline stage's parameters: the tied embedding's gradient is summed with the other end's
     * and the norm taken over every stage ({@code stages}); {@code pool} is charged for the tied exchange's buffer.
     */
    public ReplicatedUpdate(ParameterSet params, AdamWOptimizer optimizer, GradientReduction reduction,
                            StageGradients stages, MemoryPool pool) {
        this.params = params;
        this.optimizer = optimizer;
        this.reduction = reduction;
        this.stages = stages;
        this.pool = pool;
    }

    @Override
    public Applied apply(double lr, double maxNorm) {
        long start = System.nanoTime();
        reduction.reduce(params.grads());
        stages.sumTiedFlat(params.grads(), pool);
        ParameterSet.Unit uncounted = stages.uncountedUnit();
        int all = Math.toIntExact(params.paddedCount());
        stages.sumPartialGradients(params.grads(), new long[]{0}, new int[]{0}, new int[]{all});
        double sumOfSquares = stages.tensorParallel()
                ? stages.countedSumOfSquares(params.grads(), new long[]{0}, new int[]{0}, new int[]{all})
                : uncounted == null ? Vectors.sumOfSquares(params.grads())
                : StageGradients.sumOfSquaresWithout(params.grads(), uncounted.offset(), uncounted.size());
        double norm = Math.sqrt(stages.sumOverStages(sumOfSquares));
        long communication = System.nanoTime() - start;
        if (!Double.isFinite(norm)) throw new IllegalStateException("gradient norm " + norm);
        // clipping folded into AdamW: the same bits as scaling the gradients first, one pass fewer over them
        optimizer.step(lr, GradientClipping.scaleFor(norm, maxNorm));
        return new Applied(norm, communication);
    }

    @Override
    public Gpt.Hooks hooks() {
        return reduction.hooks();
    }

    @Override
    public void beginMicroBatch(int index, int count) {
        reduction.beginMicroBatch(index, count);
    }

    @Override
    public void backward(Runnable backward) {
        reduction.backward(backward);
    }

    @Override
    public void settle() {
        reduction.settle();
    }

    @Override
    public double mean(double value) {
        return reduction.mean(value);
    }

    @Override
    public long steps() {
        return optimizer.steps();
    }

    /** The optimizer belongs to the caller; nothing to free here. */
    @Override
    public void close() { }
}
