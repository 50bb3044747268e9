package dev.shardwise.core.machine;

import dev.shardwise.core.exec.ComputePool;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorSpecies;

import java.io.IOException;
import java.lang.management.ManagementFactory;
import java.lang.management.ThreadMXBean;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Locale;

/**
 * This machine's fp32 peak, two ways: the nominal formula (cores × FMA units × vector lanes × 2 flops ×
 * clock) and a measured figure (a register-resident FMA loop on every thread of the compute pool). MFU and
 * "fraction of peak" in reports use the measured figure, since nominal clocks and FMA widths vary by CPU
 * (AMD Zen 4 issues AVX-512 FMAs as two 256-bit halves, so its nominal 512-bit formula overstates).
 */
public record CpuPeak(int cores, int fp32Lanes, int fmaUnits, double clockGHz, double nominalFlops, double measuredFlops) {

    private static final VectorSpecies<Float> SPECIES = FloatVector.SPECIES_PREFERRED;

    /** FMA units per core assumed by the nominal formula (two on current x86 server cores). */
    public static final int FMA_UNITS = 2;

    /**
     * Measures this machine (about 0.3 s) with the {@linkplain ComputePool#current() current} pool: each thread's
     * best FMA rate per second of its own CPU time over trials spread across a quarter of a second, so other load
     * on the machine does not lower the figure (unless it shares the cores' FMA units all along, as a busy SMT
     * sibling does).
     */
    public static CpuPeak measure() {
        return measure(true);
    }

    /**
     * As {@link #measure}, but timed by the wall clock over seven trials (a few ms), so the figure is what the
     * pool's threads reach right now, with whatever else the machine is running: a peer for a benchmark timed
     * alternately with it.
     */
    public static CpuPeak measureUnderCurrentLoad() {
        return measure(false);
    }

    private static CpuPeak measure(boolean cpuTime) {
        ComputePool pool = ComputePool.current();
        int lanes = SPECIES.length();
        double ghz = readClockGHz();
        double nominal = pool.threads() * (double) FMA_UNITS * lanes * 2 * ghz * 1e9;
        return new CpuPeak(pool.threads(), lanes, FMA_UNITS, ghz, nominal, measureFmaThroughput(pool, cpuTime));
    }

    /** Nominal clock from /proc/cpuinfo ("cpu MHz"), or 2.5 GHz when it cannot be read. */
    static double readClockGHz() {
        try {
            for (String line : Files.readAllLines(Path.of("/proc/cpuinfo"))) {
                if (line.startsWith("cpu MHz")) {
                    return Double.parseDouble(line.substring(line.indexOf(':') + 1).trim()) / 1000.0;
                }
            }
        } catch (IOException | RuntimeException ignored) {
            // not Linux or unreadable: fall through to the default
        }
        return 2.5;
    }

    /**
     * Sum over the pool's threads of each thread's best FMA rate. Timed by the thread's own CPU time
     * ({@code cpuTime}), a thread that the OS preempts (a JIT compiler thread at start-up, another process) is not
     * charged for the time it waited, so the figure is each core's throughput however busy the machine is
     * (assuming one core per thread, which is what a peak means); timed by the wall clock, waiting counts.
     */
    private static double measureFmaThroughput(ComputePool pool, boolean cpuTime) {
        ThreadMXBean cpu = ManagementFactory.getThreadMXBean();
        int threads = pool.threads();
        float sink = 0;
        for (int i = 0; i < 300; i++) sink += fmaLoop(2_000, 1e-7f);   // compile fmaLoop before timing it
        double[] best = new double[threads];
        float[] results = new float[threads];
        int iterations = 1_000_000;
        double flopsPerLoop = (double) iterations * 12 * SPECIES.length() * 2;
        // The best of several short trials (noise only ever slows a trial); the CPU-time figure spreads them over a
        // quarter of a second, so that a burst of other work (a JIT compiling at start-up) leaves some trials clean.
        long until = System.nanoTime() + (cpuTime ? 250_000_000L : 0);
        for (int trial = 0; trial < 7 || System.nanoTime() < until; trial++) {
            pool.parallelFor(threads, t -> {
                long start = cpuTime ? cpu.getCurrentThreadCpuTime() : System.nanoTime();
                results[t] = fmaLoop(iterations, 1e-7f * (t + 1));
                long used = (cpuTime ? cpu.getCurrentThreadCpuTime() : System.nanoTime()) - start;
                if (used > 0) best[t] = Math.max(best[t], flopsPerLoop / (used / 1e9));
            });
            sink += results[0];
        }
        // Using the results keeps the JIT from removing the loops as dead code; the chains stay finite by design.
        if (!Float.isFinite(sink)) throw new AssertionError("FMA calibration produced " + sink);
        double total = 0;
        for (double b : best) total += b;
        return total;
    }

    /** 12 independent FMA chains: enough to cover FMA latency (4 cycles) × 2 units with room to spare. */
    private static float fmaLoop(int iterations, float seed) {
        FloatVector m = FloatVector.broadcast(SPECIES, 0.999999f);
        FloatVector a = FloatVector.broadcast(SPECIES, seed);
        FloatVector c0 = a, c1 = a, c2 = a, c3 = a, c4 = a, c5 = a, c6 = a, c7 = a, c8 = a, c9 = a, c10 = a, c11 = a;
        for (int i = 0; i < iterations; i++) {
            c0 = c0.fma(m, a); c1 = c1.fma(m, a); c2 = c2.fma(m, a); c3 = c3.fma(m, a);
            c4 = c4.fma(m, a); c5 = c5.fma(m, a); c6 = c6.fma(m, a); c7 = c7.fma(m, a);
            c8 = c8.fma(m, a); c9 = c9.fma(m, a); c10 = c10.fma(m, a); c11 = c11.fma(m, a);
        }
        return c0.add(c1).add(c2).add(c3).add(c4).add(c5).add(c6).add(c7).add(c8).add(c9).add(c10).add(c11).reduceLanes(
                jdk.incubator.vector.VectorOperators.ADD);
    }

    /**
     * The peak of {@code machines} machines like this one together (a job over several nodes).
     *
     * @throws IllegalArgumentException if {@code machines < 1}
     */
    public CpuPeak times(int machines) {
        if (machines < 1) throw new IllegalArgumentException("machines must be >= 1, got " + machines);
        return new CpuPeak(cores * machines, fp32Lanes, fmaUnits, clockGHz, nominalFlops * machines, measuredFlops * machines);
    }

    /** One line for reports. */
    public String describe() {
        return String.format(Locale.ROOT,
                "fp32 peak: measured %.1f GFLOP/s; nominal %.1f GFLOP/s (%d cores x %d FMA x %d lanes x 2 x %.2f GHz)",
                measuredFlops / 1e9, nominalFlops / 1e9, cores, fmaUnits, fp32Lanes, clockGHz);
    }
}
