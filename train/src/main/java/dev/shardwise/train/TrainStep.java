package dev.shardwise.train;

import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.memory.StepArena;
import dev.shardwise.core.tensor.Tensor;
import dev.shardwise.model.Gpt;
import dev.shardwise.model.optim.AdamWOptimizer;
import dev.shardwise.model.optim.ParameterUpdate;
import dev.shardwise.parallel.GradientReduction;
import dev.shardwise.parallel.ReplicatedUpdate;

import java.util.function.Consumer;

/**
 * One optimizer step of single-rank training: zero the gradients; for each micro-batch, forward (fused with
 * the loss gradient, scaled by 1/micro-batches) and backward; clip the global gradient norm; AdamW update.
 * Shared by the {@link Trainer} and the training benchmark so both time the same work.
 */
public final class TrainStep implements AutoCloseable {
    private final Gpt model;
    private final double gradClip;
    private final ParameterUpdate update;
    private final StepArena arena;     // activations, reused from step to step

    /**
     * What one step did.
     *
     * @param loss       mean loss over the micro-batches
     * @param gradNorm   global gradient norm before clipping
     * @param forwardNs  time in forward passes
     * @param backwardNs time in backward passes (with the communication overlapped with them)
     * @param reduceNs    exposed communication: waiting for gradient reductions still in flight after backward,
     *                    the loss mean, and the update's own collectives (ZeRO's all-gather)
     * @param optimizerNs time clipping and updating
     */
    public record Result(double loss, double gradNorm, long forwardNs, long backwardNs, long reduceNs, long optimizerNs) {
        public long totalNs() {
            return forwardNs + backwardNs + reduceNs + optimizerNs;
        }
    }

    /** A single-rank step with {@code optimizer}. */
    public TrainStep(Gpt model, AdamWOptimizer optimizer, MemoryPool pool, double gradClip) {
        this(model, optimizer, pool, gradClip, GradientReduction.NONE);
    }

    /** A step whose gradients and loss are combined over replicas by {@code reduction} before {@code optimizer} runs. */
    public TrainStep(Gpt model, AdamWOptimizer optimizer, MemoryPool pool, double gradClip, GradientReduction reduction) {
        this(model, pool, gradClip, new ReplicatedUpdate(model.parameters(), optimizer, reduction));
    }

    /** A step whose update (reduction, clipping, optimizer; ZeRO or not) is {@code update}. */
    public TrainStep(Gpt model, MemoryPool pool, double gradClip, ParameterUpdate update) {
        this.model = model;
        this.gradClip = gradClip;
        this.update = update;
        this.arena = new StepArena(pool);
        model.useHooks(update.hooks());
    }

    /**
     * Runs one step over {@code microBatches} micro-batches; {@code fill} writes the next batch, i32 [B, T+1]
     * (inputs are columns 0..T-1, targets 1..T), into the tensor it is given.
     *
     * @throws IllegalStateException if the loss or gradient norm is not finite (the update is then skipped)
     */
    public Result run(Tensor batch, int microBatches, Consumer<Tensor> fill, double lr) {
        model.parameters().zeroGrads();
        double lossSum = 0;
        long forwardNs = 0, backwardNs = 0;
        for (int micro = 0; micro < microBatches; micro++) {
            fill.accept(batch);
            update.beginMicroBatch(micro, microBatches);
            try {
                long t0 = System.nanoTime();
                Gpt.Pass pass = update.forward(() -> model.forward(arena, inputs(batch), targets(batch), 1.0 / microBatches));
                long t1 = System.nanoTime();
                update.backward(() -> model.backward(arena, pass));
                forwardNs += t1 - t0;
                backwardNs += System.nanoTime() - t1;
                lossSum += pass.loss();
            } finally {
                arena.reset();
            }
        }
        long t2 = System.nanoTime();
        double loss = update.mean(lossSum / microBatches);   // waits for reductions still in flight: communication
        long meanNs = System.nanoTime() - t2;
        if (!Double.isFinite(loss)) throw new IllegalStateException("loss " + loss);
        ParameterUpdate.Applied applied = update.apply(lr, gradClip);
        long t3 = System.nanoTime();
        long reduceNs = meanNs + applied.communicationNs();
        return new Result(loss, applied.gradNorm(), forwardNs, backwardNs, reduceNs, t3 - t2 - reduceNs);
    }

    /** Mean loss of a [B, T+1] batch without gradients, in this step's arena. */
    public double evaluate(Tensor batch) {
        try {
            return model.evaluate(arena, inputs(batch), targets(batch));
        } finally {
            arena.reset();
        }
    }

    /** Frees the activation memory. */
    @Override
    public void close() {
        arena.close();
    }

    /** Columns 0..T-1 of a [B, T+1] batch. */
    static Tensor inputs(Tensor batch) {
        return batch.slice(1, 0, batch.dim(1) - 1);
    }

    /** Columns 1..T of a [B, T+1] batch. */
    static Tensor targets(Tensor batch) {
        return batch.slice(1, 1, batch.dim(1) - 1);
    }
}
