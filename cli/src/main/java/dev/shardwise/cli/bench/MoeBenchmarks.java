package dev.shardwise.cli.bench;

import dev.shardwise.core.exec.ComputePool;
import dev.shardwise.core.machine.CpuPeak;
import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;
import dev.shardwise.model.FeedForwardRunner;
import dev.shardwise.model.MoePhases;
import dev.shardwise.model.ModelConfig;

import java.util.Locale;
import java.util.SplittableRandom;

/**
 * The {@code moe} case of {@code bench kernels}: the dropless mixture-of-experts block of {@code moe-tiny} (a shared
 * MLP of hidden 512 and 8 experts of hidden 256, top-2: router, dispatch, grouped expert products, combine) forward
 * and backward over one micro-batch
 * of the tiny preset (B·T = 8·256 tokens, C = 256), beside tiny's dense GELU MLP (hidden 1024), which has the same
 * active FLOPs per token, measured in the same run. GFLOP/s count the matrix products a token uses (the dense MLP's;
 * the router's, two experts' and the shared MLP's), so the ratio is the MoE block's efficiency against the dense one.
 */
final class MoeBenchmarks {
    private static final int TOKENS = 8 * 256;
    /** Steps the phase breakdown warms up with, then averages over. */
    private static final int PHASE_STEPS = 10;

    private MoeBenchmarks() { }

    static void run(BenchOutput out, CpuPeak peak) {
        MemoryPool pool = MemoryPool.unlimited("bench moe");
        ModelConfig config = ModelConfig.preset("moe-tiny");
        out.info(String.format(Locale.ROOT, "moe: %d tokens, C=%d, %d experts of %d, top-%d, dropless, fp32, %d threads",
                TOKENS, config.hidden(), config.moe().experts(), config.moe().expertHidden(), config.moe().topK(),
                ComputePool.current().threads()));
        try (FeedForwardRunner dense = new FeedForwardRunner(config, false, pool, DType.F32, 1);
             FeedForwardRunner moe = new FeedForwardRunner(config, true, pool, DType.F32, 1);
             Tensor x = random(pool, 2, TOKENS, config.hidden()); Tensor dy = random(pool, 3, TOKENS, config.hidden())) {
            Runnable denseStep = () -> dense.forwardBackward(x, dy), moeStep = () -> moe.forwardBackward(x, dy);
            Measure.medianSeconds(denseStep, 3, 3, 1.0);   // JIT warm-up
            Measure.medianSeconds(moeStep, 3, 3, 1.0);
            // alternate rounds so both see the same machine load
            double[] denseRates = new double[5], moeRates = new double[5];
            for (int r = 0; r < 5; r++) {
                denseRates[r] = dense.trainingFlops(TOKENS) / Measure.medianSeconds(denseStep, 0, 3, 0.3) / 1e9;
                moeRates[r] = moe.trainingFlops(TOKENS) / Measure.medianSeconds(moeStep, 0, 3, 0.3) / 1e9;
            }
            java.util.Arrays.sort(denseRates);
            java.util.Arrays.sort(moeRates);
            double denseGflops = denseRates[2], moeGflops = moeRates[2];
            String shape = String.format(Locale.ROOT, "N%d C%d E%d k%d Fe%d", TOKENS, config.hidden(), config.moe().experts(),
                    config.moe().topK(), config.moe().expertHidden());
            // where the block's time goes: its phases timed over a few more steps (the timers are off above)
            MoePhases phases = moe.timePhases();
            for (int i = 0; i < PHASE_STEPS; i++) moeStep.run();   // warm-up: the JIT recompiles the timed paths
            phases.reset();
            long start = System.nanoTime();
            for (int i = 0; i < PHASE_STEPS; i++) moeStep.run();
            double phaseSeconds = (System.nanoTime() - start) / 1e9 / PHASE_STEPS;
            out.info(String.format(Locale.ROOT, "moe phases, ms per fwd+bwd: %s (sum %.2f, step %.2f, dense mlp %.2f); expert "
                            + "tiles keep the threads %.0f%% busy", phases.summary(), phases.totalMillis(), phaseSeconds * 1e3,
                    dense.trainingFlops(TOKENS) / denseGflops / 1e6, 100 * phases.tileBusyFraction(ComputePool.current().threads())));
            out.row(new BenchRow("kernels", "moe fwd+bwd " + shape, moeGflops, "GFLOP/s",
                    "dense mlp F" + config.ffnHidden(), denseGflops, moeGflops * 1e9 / peak.measuredFlops(),
                    String.format(Locale.ROOT, "same active FLOPs/token; load max/mean %.2f", moe.stats().maxOverMean())));
        }
    }

    private static Tensor random(MemoryPool pool, long seed, int rows, int cols) {
        Tensor t = Tensor.allocate(pool, MemoryCategory.ACTIVATIONS, DType.F32, rows, cols);
        SplittableRandom r = new SplittableRandom(seed);
        float[] v = new float[rows * cols];
        for (int i = 0; i < v.length; i++) v[i] = (float) r.nextGaussian();
        return t.copyFrom(v);
    }
}
