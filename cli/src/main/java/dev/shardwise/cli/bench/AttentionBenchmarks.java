package dev.shardwise.cli.bench;

import dev.shardwise.core.exec.ComputePool;
import dev.shardwise.core.kernels.Attention;
import dev.shardwise.core.machine.CpuPeak;
import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;

import java.util.Locale;
import java.util.SplittableRandom;

/**
 * Attention forward+backward cases of {@code bench kernels}: the {@code tiny} training preset's shape (B = 8, NH = 4,
 * HS = 64, T = 256) and GPT-2 small heads (B = 4, NH = 12, HS = 64) at T = 256, 1024 and 4096, q, k and v as views
 * of one fused qkv tensor [B, T, 3·NH, HS], fp32.
 *
 * <p>FLOPs count only the causal (lower-triangle, diagonal included) work, pairs = T·(T+1)/2 per (b, head):
 * forward has two products (S = q·kᵀ and P·v), each 2·HS flops per pair, so forward = 4·B·NH·HS·pairs;
 * backward has five (S recomputed, dP = dout·vᵀ, dv += Pᵀ·dout, dk += dSᵀ·q, dq += dS·k), so
 * backward = 10·B·NH·HS·pairs = 2.5 × forward; forward+backward = 14·B·NH·HS·pairs. The exponentials and the
 * masked half of the diagonal tiles are work the kernel does but does not count.
 *
 * <p>Rows give the median GFLOP/s over a few repetitions, the peer column the median fp32 peak measured right
 * before each repetition, and "peak" the median of the per-repetition fractions. Work per forward+backward:
 * 0.94 GFLOP for the tiny shape, 1.4 GFLOP at T = 256, 22.6 GFLOP at T = 1024, 361 GFLOP at T = 4096, so T = 4096
 * is timed twice per row (about 30 s in all).
 */
final class AttentionBenchmarks {
    private static final int HS = 64;
    /** The cases as {B, NH, T}: the tiny preset, then GPT-2 small heads at three sequence lengths. */
    private static final int[][] CASES = {{8, 4, 256}, {4, 12, 256}, {4, 12, 1024}, {4, 12, 4096}};

    private AttentionBenchmarks() { }

    static void run(BenchOutput out, CpuPeak peak) {
        MemoryPool pool = MemoryPool.unlimited("bench attention");
        out.info(String.format(Locale.ROOT, "attention: HS=%d causal, fp32, %d threads", HS, ComputePool.current().threads()));
        // Warm the JIT first (about 2 s): otherwise C2 compiles the kernel's large loops during the first timed
        // case and competes with it for the cores.
        runCase(null, peak, pool, 4, 12, 256);
        for (int[] c : CASES) runCase(out, peak, pool, c[0], c[1], c[2]);
    }

    /** Measures one sequence length and prints its rows; with {@code out == null}, only runs it to warm up. */
    private static void runCase(BenchOutput out, CpuPeak peak, MemoryPool pool, int b, int nh, int t) {
        try (Tensor qkv = Tensor.allocate(pool, MemoryCategory.ACTIVATIONS, DType.F32, b, t, 3 * nh, HS);
             Tensor o = Tensor.allocate(pool, MemoryCategory.ACTIVATIONS, DType.F32, b, t, nh, HS);
             Tensor lse = Tensor.allocate(pool, MemoryCategory.ACTIVATIONS, DType.F32, b, nh, t);
             Tensor dout = Tensor.allocate(pool, MemoryCategory.ACTIVATIONS, DType.F32, b, t, nh, HS);
             Tensor dqkv = Tensor.allocate(pool, MemoryCategory.GRADIENTS, DType.F32, b, t, 3 * nh, HS)) {
            fillRandom(qkv, 1);
            fillRandom(dout, 2);
            Tensor q = qkv.slice(2, 0, nh), k = qkv.slice(2, nh, nh), v = qkv.slice(2, 2 * nh, nh);
            Tensor dq = dqkv.slice(2, 0, nh), dk = dqkv.slice(2, nh, nh), dv = dqkv.slice(2, 2 * nh, nh);
            float scale = (float) (1 / Math.sqrt(HS));
            Runnable fwd = () -> Attention.forward(o, lse, q, k, v, scale);
            Runnable bwd = () -> Attention.backward(dq, dk, dv, dout, o, lse, q, k, v, scale);
            fwd.run();

            double pairs = (double) t * (t + 1) / 2;
            double fwdFlops = 4.0 * b * nh * HS * pairs, bwdFlops = 2.5 * fwdFlops;
            if (out == null) {                        // warm-up only
                Measure.medianSeconds(() -> { fwd.run(); bwd.run(); }, 10, 10, 2.0);
                return;
            }
            // Each timed repetition follows its own peak measurement (CpuPeak's FMA loop, 0.3 s), and a row reports
            // the median of the per-repetition fractions: on a machine shared with other jobs, the load changes
            // within seconds, so a peak measured once at start-up is no fair denominator.
            int reps = t >= 4096 ? 2 : 5;
            long scratch = Attention.f32ScratchBytesPerThread(HS) * ComputePool.current().threads();
            long lseBytes = lse.numel() * 4;
            String mem = String.format(Locale.ROOT, "tiles %d KiB (all threads, T-independent) + lse %d KiB (4*B*NH*T)",
                    scratch / 1024, lseBytes / 1024);
            String shape = String.format(Locale.ROOT, "B%d NH%d HS%d T%d", b, nh, HS, t);
            measureRow(out, "attention fwd " + shape, fwd, fwdFlops, reps, true, mem);
            measureRow(out, "attention bwd " + shape, bwd, bwdFlops, reps, true, "");
            measureRow(out, "attention fwd+bwd " + shape, () -> { fwd.run(); bwd.run(); }, fwdFlops + bwdFlops, reps,
                    t < 4096, "");
        }
    }

    /**
     * Times {@code body} reps times, each right after a peak measurement. With {@code untimedFirst}, runs it once
     * untimed first, and when that took under 0.1 s, a timed repetition runs it several times (about 0.1 s in all),
     * so that the short cases (T = 256: about 10 ms) are not single samples of a noisy clock.
     */
    private static void measureRow(BenchOutput out, String name, Runnable body, double flops, int reps,
                                   boolean untimedFirst, String note) {
        int inner = 1;
        if (untimedFirst) {
            long start = System.nanoTime();
            body.run();
            inner = (int) Math.max(1, Math.min(20, 0.1 / ((System.nanoTime() - start) / 1e9)));
        }
        double[] rate = new double[reps], peak = new double[reps], fraction = new double[reps];
        for (int i = 0; i < reps; i++) {
            peak[i] = CpuPeak.measureUnderCurrentLoad().measuredFlops() / 1e9;
            long start = System.nanoTime();
            for (int r = 0; r < inner; r++) body.run();
            rate[i] = flops * inner / ((System.nanoTime() - start) / 1e9) / 1e9;
            fraction[i] = rate[i] / peak[i];
        }
        out.row(new BenchRow("kernels", name, median(rate), "GFLOP/s", "fp32 peak (interleaved)", median(peak),
                median(fraction), note));
    }

    private static double median(double[] values) {
        double[] sorted = values.clone();
        java.util.Arrays.sort(sorted);
        int n = sorted.length;
        return n % 2 == 1 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
    }

    private static void fillRandom(Tensor x, long seed) {
        SplittableRandom rnd = new SplittableRandom(seed);
        float[] values = new float[Math.toIntExact(x.numel())];
        for (int i = 0; i < values.length; i++) values[i] = (float) rnd.nextDouble(-1, 1);
        x.copyFrom(values);
    }
}
