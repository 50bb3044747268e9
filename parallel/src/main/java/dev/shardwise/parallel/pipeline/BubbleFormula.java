package dev.shardwise.parallel.pipeline;

/**
 * The bubble each schedule leaves by its formula, as a fraction of the step; derivations are in the builders'
 * Javadoc ({@link PipelineSchedule#idealBubble}).
 */
final class BubbleFormula {
    private BubbleFormula() { }

    static double of(PipelineSchedule schedule, double forward, double backwardInput, double backwardWeight) {
        if (forward < 0 || backwardInput < 0 || backwardWeight < 0 || forward + backwardInput <= 0) {
            throw new IllegalArgumentException("bubble formula: durations must be >= 0 with forward + backwardInput > 0, got tF="
                    + forward + ", tB=" + backwardInput + ", tW=" + backwardWeight);
        }
        double p = schedule.stages();
        double v = schedule.chunks();
        double m = schedule.microBatches();
        return switch (schedule.kind()) {
            case GPIPE, ONE_F_ONE_B -> (p - 1) / (m + p - 1);
            case INTERLEAVED -> (p - 1) / (v * m + p - 1);
            case ZB_H1 -> {
                double idle = (p - 1) * (backwardInput + Math.max(0, forward - backwardWeight));
                yield idle / (m * (forward + backwardInput + backwardWeight) + idle);
            }
        };
    }
}
