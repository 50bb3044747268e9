package dev.shardwise.train;

import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.parallel.ParallelLayout;

import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Locale;

/**
 * Layouts under which a run's model state would fit its rank budget, for the memory error: for 2 to 16 ranks, every
 * tp dividing the heads and kv heads, every pp up to the layers and ZeRO 1 to 3 over the rest (Megatron's PTD-P with
 * ZeRO), each scored by its heaviest stage's per-rank model state as {@code --dry-run} counts it (exact, allocated
 * bytes), kept when that is at most 3/4 of the budget (the rest left to activations and buffers, which depend on the
 * micro-batch and are not modelled here). Fewest ranks first, then least memory.
 */
public final class FittingLayouts {
    /** The share of the budget the model state may take. */
    private static final double MODEL_STATE_SHARE = 0.75;
    private static final int MAX_RANKS = 16;

    private FittingLayouts() { }

    /** A layout that fits, with its heaviest stage's per-rank model-state bytes. */
    public record Fit(ParallelLayout layout, long bytes) {
        /** The train flags that select it, e.g. {@code --ranks 8 --tp 2 --pp 2 --zero 1}. */
        public String flags() {
            return String.format(Locale.ROOT, "--ranks %d%s%s --zero %d", layout.worldSize(),
                    layout.tp() > 1 ? " --tp " + layout.tp() : "", layout.pp() > 1 ? " --pp " + layout.pp() : "", layout.zeroStage());
        }
    }

    /** Up to {@code count} layouts of {@code config}'s model, micro-batch and recompute whose model state fits its budget. */
    public static List<Fit> of(TrainConfig config, int count) {
        List<Fit> fits = new ArrayList<>();
        long limit = (long) (MODEL_STATE_SHARE * config.rankMemory());
        ParallelLayout current = config.layout();
        for (int world = 2; world <= MAX_RANKS; world *= 2) {
            for (int tp = 1; tp <= world; tp *= 2) {
                for (int pp = 1; tp * pp <= world && pp <= config.model().layers(); pp *= 2) {
                    int dp = world / (tp * pp);
                    for (int zero = dp == 1 ? 0 : 1; zero <= (dp == 1 ? 0 : 3); zero++) {
                        TrainConfig candidate;
                        try {
                            candidate = config.withLayout(new ParallelLayout(dp, tp, pp, 1, 1, false, zero,
                                    current.recompute(), current.microBatch()));
                        } catch (IllegalArgumentException doesNotFit) {
                            continue;   // tp does not divide the heads, say
                        }
                        long heaviest = 0;
                        for (int s = 0; s < pp; s++) heaviest = Math.max(heaviest, MemoryReport.allocated(candidate, s).total());
                        if (heaviest <= limit) fits.add(new Fit(candidate.layout(), heaviest));
                    }
                }
            }
        }
        fits.sort(Comparator.comparingInt((Fit f) -> f.layout().worldSize()).thenComparingLong(Fit::bytes));
        return List.copyOf(fits.subList(0, Math.min(count, fits.size())));
    }

    /** One line naming the fitting layouts and their model state, or saying that none up to 16 ranks fits. */
    public static String describe(TrainConfig config, int count) {
        List<Fit> fits = of(config, count);
        String budget = MemoryPool.formatBytes(config.rankMemory());
        if (fits.isEmpty()) {
            return "no layout of up to " + MAX_RANKS + " ranks keeps the model state within 3/4 of " + budget
                    + " per rank; raise --rank-memory";
        }
        StringBuilder sb = new StringBuilder("layouts whose model state takes at most 3/4 of " + budget + " per rank: ");
        for (int i = 0; i < fits.size(); i++) {
            sb.append(i == 0 ? "" : "; ").append(fits.get(i).flags()).append(" (")
                    .append(MemoryPool.formatBytes(fits.get(i).bytes())).append(")");
        }
        return sb.append(" (see --dry-run)").toString();
    }
}
