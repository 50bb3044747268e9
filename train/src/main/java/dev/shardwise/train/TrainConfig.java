package dev.shardwise.train;

import dev.shardwise.model.ModelConfig;
import dev.shardwise.model.optim.AdamWOptimizer;
import dev.shardwise.model.optim.LearningRateSchedule;

import java.nio.file.Path;

/**
 * Everything a training run is configured with, resolved from a preset, a YAML file and flags (in that order
 * of precedence, flags last). A config never changes while a run uses it; progress lives in {@link TrainState}.
 *
 * @param preset           the model preset the run started from (informational; {@code model} is what runs)
 * @param model            the model's shape and variant
 * @param data             a directory written by {@code shardwise prepare}, or null for the bundled tiny Shakespeare
 * @param batchSize        B, sequences per micro-batch
 * @param seqLen           T, tokens per sequence
 * @param gradAccumulation micro-batches per optimizer step
 * @param steps            optimizer steps to run
 * @param seed             seeds initialisation and data order
 * @param lr               peak learning rate
 * @param minLr            learning rate at the end of the cosine
 * @param warmupSteps      steps of linear warm-up
 * @param weightDecay      AdamW decoupled weight decay
 * @param beta1            AdamW β1
 * @param beta2            AdamW β2
 * @param eps              AdamW ε
 * @param gradClip         global gradient-norm clip (0 disables)
 * @param evalEvery        steps between validation evaluations (0: only at the end)
 * @param evalBatches      validation batches per evaluation
 * @param checkpointEvery  steps between checkpoints (0: only at the end)
 * @param checkpointAtStart also save the initial weights as checkpoint step 0 (for comparisons with other trainers)
 * @param runDir           where config, metrics, checkpoints and plots go
 * @param rankMemory       the rank's memory budget in bytes (Long.MAX_VALUE: unlimited)
 * @param ranks            data-parallel ranks run as threads of this JVM (1: single rank); each takes
 *                         {@code batchSize} sequences of every micro-batch, so the global batch grows with ranks
 * @param zero             ZeRO stage over the ranks: 0 (everything replicated), 1 (AdamW state sharded), 2 (gradients
 *                         too), 3 (parameters too)
 * @param offloadOptimizer directory for a memory-mapped file per rank holding its AdamW moments (ZeRO-Infinity's
 *                         optimizer offload; needs zero >= 1), or null to keep them in memory
 */
public record TrainConfig(String preset, ModelConfig model, Path data, int batchSize, int seqLen, int gradAccumulation,
                          int steps, long seed, double lr, double minLr, int warmupSteps, double weightDecay,
                          double beta1, double beta2, double eps, double gradClip, int evalEvery, int evalBatches,
                          int checkpointEvery, boolean checkpointAtStart, Path runDir, long rankMemory, int ranks, int zero,
                          Path offloadOptimizer) {

    public TrainConfig {
        positive("batchSize", batchSize);
        positive("seqLen", seqLen);
        positive("gradAccumulation", gradAccumulation);
        positive("steps", steps);
        positive("evalBatches", evalBatches);
        positive("ranks", ranks);
        if (zero < 0 || zero > 3) {
            throw new IllegalArgumentException("zero=" + zero + ": ZeRO stages are 0 (replicated), 1 (optimizer state "
                    + "sharded), 2 (gradients too) and 3 (parameters too); use zero: 0, 1, 2 or 3");
        }
        if (offloadOptimizer != null && zero == 0) {
            throw new IllegalArgumentException("offloadOptimizer=" + offloadOptimizer + " needs zero >= 1 (the offloaded "
                    + "optimizer is the sharded one); add --zero 1 (it works with --ranks 1 too) or drop the offload");
        }
        if (evalEvery < 0) throw new IllegalArgumentException("evalEvery must be >= 0, got " + evalEvery);
        if (checkpointEvery < 0) throw new IllegalArgumentException("checkpointEvery must be >= 0, got " + checkpointEvery);
        if (seqLen > model.contextLength()) {
            throw new IllegalArgumentException("seqLen=" + seqLen + " exceeds the model's contextLength="
                    + model.contextLength() + "; lower seqLen or raise model.contextLength");
        }
        if (!(gradClip >= 0)) throw new IllegalArgumentException("gradClip must be >= 0, got " + gradClip);
        if (rankMemory <= 0) throw new IllegalArgumentException("rankMemory must be positive, got " + rankMemory);
        schedule(lr, minLr, warmupSteps, steps);
        new AdamWOptimizer.Settings(beta1, beta2, eps, weightDecay);
    }

    private static LearningRateSchedule schedule(double lr, double minLr, int warmupSteps, int steps) {
        return new LearningRateSchedule(lr, minLr, Math.min(warmupSteps, steps), steps);
    }

    private static void positive(String field, int value) {
        if (value <= 0) throw new IllegalArgumentException(field + " must be positive, got " + value);
    }

    /** Tokens consumed by one optimizer step over all ranks: B · T · micro-batches · ranks. */
    public long tokensPerStep() {
        return (long) batchSize * seqLen * gradAccumulation * ranks;
    }

    /** Sequences per micro-batch over all ranks: B · ranks (the batch a single-rank run would use for the same data). */
    public int globalMicroBatch() {
        return Math.multiplyExact(batchSize, ranks);
    }

    public LearningRateSchedule schedule() {
        return schedule(lr, minLr, warmupSteps, steps);
    }

    public AdamWOptimizer.Settings optimizer() {
        return new AdamWOptimizer.Settings(beta1, beta2, eps, weightDecay);
    }
}
