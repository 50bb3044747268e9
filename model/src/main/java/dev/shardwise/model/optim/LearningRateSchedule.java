package dev.shardwise.model.optim;

/**
 * Linear warm-up then cosine decay to a floor (Loshchilov and Hutter 2017's cosine annealing without
 * restarts, as used for GPT-3 and nanoGPT).
 *
 * @param maxLr       the rate reached at the end of warm-up
 * @param minLr       the floor reached at {@code decaySteps}
 * @param warmupSteps steps of linear warm-up, from maxLr/warmupSteps
 * @param decaySteps  step at which the cosine reaches {@code minLr}; it stays there afterwards
 */
public record LearningRateSchedule(double maxLr, double minLr, int warmupSteps, int decaySteps) {
    public LearningRateSchedule {
        if (!(maxLr > 0)) throw new IllegalArgumentException("optimizer.lr must be positive, got " + maxLr);
        if (!(minLr >= 0 && minLr <= maxLr)) {
            throw new IllegalArgumentException("optimizer.minLr must be in [0, lr=" + maxLr + "], got " + minLr);
        }
        if (warmupSteps < 0) throw new IllegalArgumentException("optimizer.warmupSteps must be >= 0, got " + warmupSteps);
        if (decaySteps < warmupSteps) {
            throw new IllegalArgumentException("decay steps (" + decaySteps + ") must be >= warmupSteps (" + warmupSteps + ")");
        }
    }

    /** Learning rate for the 0-based optimizer step {@code step}. */
    public double at(long step) {
        if (step < warmupSteps) return maxLr * (step + 1) / warmupSteps;
        if (step >= decaySteps) return minLr;
        double progress = (double) (step - warmupSteps) / Math.max(1, decaySteps - warmupSteps);
        return minLr + 0.5 * (1 + Math.cos(Math.PI * progress)) * (maxLr - minLr);
    }
}
