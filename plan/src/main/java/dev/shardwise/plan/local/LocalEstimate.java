package dev.shardwise.plan.local;

import dev.shardwise.parallel.ParallelLayout;
import dev.shardwise.parallel.pipeline.ScheduleKind;

/**
 * What {@link LocalCostModel} predicts for one layout on this machine.
 *
 * @param layout            the layout
 * @param schedule          the pipeline schedule simulated
 * @param stepSeconds       the step: the simulated schedule's finish, reduction and optimizer included
 * @param computeSeconds    the busiest stage's forward and backward work, all micro-batches
 * @param bubbleSeconds     step time the busiest stage spends waiting
 * @param dpSeconds         the busiest stage's data-parallel reduction and ZeRO gathers
 * @param optimizerSeconds  the busiest stage's AdamW update
 * @param stateBytes        per stage: the parameters, gradients and optimizer state a rank allocates
 * @param activationBytes   per stage: a rank's activation peak
 */
public record LocalEstimate(ParallelLayout layout, ScheduleKind schedule, double stepSeconds, double computeSeconds,
                            double bubbleSeconds, double dpSeconds, double optimizerSeconds, long[] stateBytes,
                            long[] activationBytes) {
    /** Peak bytes of a rank of {@code stage}: state and activations. */
    public long peakBytes(int stage) {
        return stateBytes[stage] + activationBytes[stage];
    }

    /** The largest peak of any rank. */
    public long peakBytes() {
        long max = 0;
        for (int s = 0; s < stateBytes.length; s++) max = Math.max(max, peakBytes(s));
        return max;
    }
}
