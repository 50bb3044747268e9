package dev.shardwise.infer.moefy;

import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.memory.StepArena;
import dev.shardwise.core.tensor.Tensor;

import java.util.Arrays;
import java.util.SplittableRandom;

/**
 * Wall time of one block's FFN on the same rows, dense against K of E experts (router included), the measured side
 * of MoEfication's compute saving: the cases run interleaved, round after round, and each reports its median, so
 * load that comes and goes on a shared machine hits every case alike.
 */
final class FfnTiming {
    /** Median milliseconds per call: the dense FFN, then one per K in the order asked. */
    record Medians(double denseMs, double[] sparseMs) { }

    private FfnTiming() { }

    /**
     * Times block 0's FFN of {@code moefied} over {@code rows} rows of seeded Gaussian input, {@code rounds} rounds
     * (after one warm-up round).
     */
    static Medians measure(MoefiedModel moefied, int[] actives, int rows, int rounds, MemoryPool pool) {
        ExpertWeights block = moefied.block(0);
        ExpertRouter router = moefied.router(0);
        int c = moefied.model().config().hidden();
        double[][] times = new double[actives.length + 1][rounds];
        try (StepArena arena = new StepArena(pool)) {
            Tensor x = arena.allocate(block.dtype(), rows, c);
            double[] v = new double[rows * c];
            SplittableRandom random = new SplittableRandom(1);
            for (int i = 0; i < v.length; i++) v[i] = random.nextGaussian();
            x.copyFrom(v);
            for (int round = -1; round < rounds; round++) {
                for (int k = 0; k <= actives.length; k++) {
                    try (StepArena scratch = new StepArena(pool)) {
                        long start = System.nanoTime();
                        if (k == 0) block.forwardDense(scratch, x, null);
                        else block.forwardSparse(scratch, x, ExpertRouter.topK(router.scores(scratch, x), actives[k - 1]));
                        if (round >= 0) times[k][round] = (System.nanoTime() - start) / 1e6;
                    }
                }
            }
        }
        double[] sparse = new double[actives.length];
        for (int k = 0; k < actives.length; k++) sparse[k] = median(times[k + 1]);
        return new Medians(median(times[0]), sparse);
    }

    private static double median(double[] values) {
        double[] sorted = values.clone();
        Arrays.sort(sorted);
        int n = sorted.length;
        return n % 2 == 1 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
    }
}
