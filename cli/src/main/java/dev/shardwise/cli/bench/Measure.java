package dev.shardwise.cli.bench;

import java.util.Arrays;

/** Timing for benchmarks: warm up, then repeat and take the median (these VMs vary by ±15%). */
public final class Measure {
    private Measure() { }

    /**
     * Median wall time of one call of {@code body}, in seconds, after {@code warmups} untimed calls;
     * repeats at least {@code minRepeats} times and until {@code minSeconds} have been spent timing.
     */
    public static double medianSeconds(Runnable body, int warmups, int minRepeats, double minSeconds) {
        for (int i = 0; i < warmups; i++) body.run();
        double[] times = new double[Math.max(minRepeats, 1) * 64];
        int n = 0;
        double spent = 0;
        while (n < times.length && (n < minRepeats || spent < minSeconds)) {
            long start = System.nanoTime();
            body.run();
            double t = (System.nanoTime() - start) / 1e9;
            times[n++] = t;
            spent += t;
        }
        double[] sorted = Arrays.copyOf(times, n);
        Arrays.sort(sorted);
        return sorted[n / 2];
    }
}
