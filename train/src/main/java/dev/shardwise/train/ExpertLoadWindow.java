package dev.shardwise.train;

import dev.shardwise.model.MoeStats;

import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Deque;
import java.util.List;

/**
 * The expert load of one model chunk's MoE layers summed over its last {@value #STEPS} training steps: balance over
 * many batches, beside each step's own. Wang et al. 2024 (loss-free balancing) report the maximal violation
 * max_e load_e / mean load - 1 both per batch and globally: a single batch of 2048 tokens of running text is too few,
 * and its tokens too alike, for even a perfectly balanced router to load 8 experts evenly, while the load summed over
 * many batches shows what the balancing does. Kept in memory only: after a resume it fills again.
 */
final class ExpertLoadWindow {
    /** Steps the window sums. */
    static final int STEPS = 50;

    private final Deque<List<double[]>> steps = new ArrayDeque<>();
    private List<double[]> sum;

    /** Adds a step's load per layer (tokens per expert) and drops the step that falls out of the window. */
    void add(List<double[]> loads) {
        if (sum == null) {
            sum = new ArrayList<>();
            for (double[] load : loads) sum.add(new double[load.length]);
        }
        steps.addLast(loads.stream().map(double[]::clone).toList());
        for (int l = 0; l < loads.size(); l++) for (int e = 0; e < loads.get(l).length; e++) sum.get(l)[e] += loads.get(l)[e];
        if (steps.size() > STEPS) {
            List<double[]> old = steps.removeFirst();
            for (int l = 0; l < old.size(); l++) for (int e = 0; e < old.get(l).length; e++) sum.get(l)[e] -= old.get(l)[e];
        }
    }

    /** The worst layer's largest summed expert load over its mean; 0 before any step or without MoE layers. */
    double maxOverMean() {
        double worst = 0;
        for (double[] load : layers()) worst = Math.max(worst, MoeStats.maxOverMean(load));
        return worst;
    }

    /** Each layer's largest summed expert load over its mean, summed over the layers (stages add theirs). */
    double sumOfMaxOverMean() {
        double total = 0;
        for (double[] load : layers()) total += MoeStats.maxOverMean(load);
        return total;
    }

    private List<double[]> layers() {
        return sum == null ? List.of() : sum;
    }
}
