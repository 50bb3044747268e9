package dev.shardwise.model;

import dev.shardwise.core.exec.ComputePool;
import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.memory.StepArena;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;
import dev.shardwise.model.optim.ParameterUpdate;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

import java.util.List;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.*;

/**
 * The MoE block against a plain reference: each token's experts computed one by one in float64 from the router's own
 * choice and gates (dispatch, grouped products and combine must reproduce Σ g·Expert(x)), on odd shapes in f32;
 * capacity limits, the noise's training-only determinism and the loss-free bias rule.
 */
class MoeFeedForwardTest {
    private final MemoryPool pool = MemoryPool.unlimited("rank 0");

    private ParameterSet parameters(ModelConfig config, DType dtype) {
        ParameterSet.Builder builder = ParameterSet.builder();
        FeedForward.declare(builder, "m", config, TensorParallel.NONE, 0);
        ParameterSet params = builder.allocate(pool, dtype);
        params.initialize(5);
        double[] v = params.values().toDoubleArray();   // router and experts far enough from init to spread the choice
        for (int i = 0; i < v.length; i++) v[i] = v[i] * 20 + 0.05 * Math.sin(i);
        params.values().copyFrom(v);
        return params;
    }

    private Tensor random(DType dtype, long seed, int rows, int cols) {
        Tensor t = Tensor.allocate(pool, MemoryCategory.BUFFERS, dtype, rows, cols);
        SplittableRandom r = new SplittableRandom(seed);
        double[] v = new double[rows * cols];
        for (int i = 0; i < v.length; i++) v[i] = r.nextGaussian();
        return t.copyFrom(v);
    }

    /** s·Σ_{kept j} g_j·Expert_{e_j}(x_n) + Shared(x_n), one token and one expert at a time, in float64. */
    private static double[] reference(ParameterSet params, ModelConfig config, double[] x, int n, MoeFeedForward.Saved saved) {
        int c = config.hidden(), k = config.moe().topK();
        double[] y = new double[n * c];
        for (int i = 0; i < n; i++) {
            double[] row = new double[c];
            System.arraycopy(x, i * c, row, 0, c);
            if (config.moe().sharedExperts() > 0) add(y, i, mlp(params, config, "m.shared.0", row), 1);
            for (int j = 0; j < k; j++) {
                int a = i * k + j;
                if (saved.rowOf()[a] < 0) continue;
                add(y, i, mlp(params, config, "m.experts." + saved.routing().choice()[a], row),
                        config.moe().routedScale() * saved.routing().gate()[a]);
            }
        }
        return y;
    }

    private static void add(double[] y, int i, double[] v, double g) {
        for (int j = 0; j < v.length; j++) y[i * v.length + j] += g * v[j];
    }

    private static double[] mlp(ParameterSet params, ModelConfig config, String name, double[] x) {
        if (config.mlp() == ModelConfig.Mlp.GELU) {
            double[] h = linear(params, name + ".fc", x, config.bias());
            for (int j = 0; j < h.length; j++) {
                double u = Math.sqrt(2 / Math.PI) * (h[j] + 0.044715 * h[j] * h[j] * h[j]);
                h[j] = 0.5 * h[j] * (1 + Math.tanh(u));
            }
            return linear(params, name + ".proj", h, config.bias());
        }
        double[] g = linear(params, name + ".gate", x, config.bias()), u = linear(params, name + ".up", x, config.bias());
        for (int j = 0; j < g.length; j++) g[j] = g[j] / (1 + Math.exp(-g[j])) * u[j];
        return linear(params, name + ".down", g, config.bias());
    }

    private static double[] linear(ParameterSet params, String name, double[] x, boolean bias) {
        Tensor w = params.get(name + ".weight").value();
        int out = w.dim(0), in = w.dim(1);
        double[] wv = w.toDoubleArray(), b = bias ? params.get(name + ".bias").value().toDoubleArray() : new double[out];
        double[] y = new double[out];
        for (int o = 0; o < out; o++) {
            double s = b[o];
            for (int i = 0; i < in; i++) s += wv[o * in + i] * x[i];
            y[o] = s;
        }
        return y;
    }

    @ParameterizedTest(name = "{0}: N={1} C={2} E={3} k={4} F_e={5} capacity {6} shared {7} routed scale {8}")
    @CsvSource({
            "gelu,   37, 24, 5, 2, 13, 0,    0, 2",
            "gelu,   33, 8,  7, 1, 3,  1.0,  1, 1",
            "swiglu, 29, 16, 3, 3, 7,  0.75, 2, 2.5",
            "swiglu, 1,  8,  4, 2, 5,  0,    0, 1"})
    void groupedProductsMatchThePerTokenReferenceInF32(String mlp, int n, int c, int e, int k, int hidden, double capacity, int shared,
                                                       double routedScale) {
        ModelConfig base = mlp.equals("gelu") ? ModelConfig.gpt(11, 8, 1, c, 2) : ModelConfig.llama(11, 8, 1, c, 2, 2, 4 * c);
        ModelConfig config = base.withMoe(MoeConfig.of(e, k, 1, hidden).withCapacityFactor(capacity).withSharedExperts(shared)
                .withRoutedScale(routedScale));
        MoeRun run = new MoeRun();
        try (ParameterSet params = parameters(config, DType.F32); Tensor x = random(DType.F32, 3, n, c);
             StepArena arena = new StepArena(pool)) {
            MoeFeedForward layer = (MoeFeedForward) FeedForward.create(params, "m", config, TensorParallel.NONE, 0, run);
            MoeFeedForward.Saved saved = layer.forward(arena, x, Layer.Rows.of(1, n));
            double[] expected = reference(params, config, x.toDoubleArray(), n, saved), got = saved.out().toDoubleArray();
            double worst = 0, scale = 0;
            for (int i = 0; i < got.length; i++) {
                worst = Math.max(worst, Math.abs(got[i] - expected[i]));
                scale = Math.max(scale, Math.abs(expected[i]));
            }
            assertTrue(scale > 0, "the reference output is not all zero");
            assertTrue(worst <= 2e-5 * scale, mlp + " N=" + n + ": max abs diff " + worst + " > 2e-5 x " + scale);
            int kept = 0;
            for (int r : saved.rowOf()) if (r >= 0) kept++;
            int cap = config.moe().capacity(n);
            int[] perExpert = new int[e];
            for (int a = 0; a < n * k; a++) if (saved.rowOf()[a] >= 0) perExpert[saved.routing().choice()[a]]++;
            for (int j = 0; j < e; j++) assertTrue(perExpert[j] <= cap, "expert " + j + " keeps at most its capacity " + cap);
            if (capacity == 0) assertEquals(n * k, kept, "dropless keeps every assignment");
        }
        assertEquals(0, pool.liveBytes(), "everything freed");
    }

    @Test
    void aTightCapacityDropsSecondChoicesBeforeFirstChoices() {
        ModelConfig config = ModelConfig.gpt(11, 8, 1, 8, 2).withMoe(MoeConfig.of(4, 2, 1, 4).withCapacityFactor(0.5));
        MoeRun run = new MoeRun();
        run.begin(true, 1);
        try (ParameterSet params = parameters(config, DType.F64); Tensor x = random(DType.F64, 4, 40, 8);
             StepArena arena = new StepArena(pool)) {
            MoeFeedForward layer = (MoeFeedForward) FeedForward.create(params, "m", config, TensorParallel.NONE, 0, run);
            MoeFeedForward.Saved saved = layer.forward(arena, x, Layer.Rows.of(1, 40));
            run.end();
            int cap = config.moe().capacity(40);   // ⌈0.5·40·2/4⌉ = 10 of the 80 assignments per expert
            assertEquals(10, cap);
            int[] firstKept = new int[4];
            for (int i = 0; i < 40; i++) if (saved.rowOf()[i * 2] >= 0) firstKept[saved.routing().choice()[i * 2]]++;
            for (int i = 0; i < 40; i++) {
                int a = i * 2 + 1, expert = saved.routing().choice()[a];
                if (saved.rowOf()[a] >= 0) assertTrue(firstKept[expert] < cap, "a second choice only takes a slot first choices left free");
            }
            MoeStats stats = run.stats();
            assertTrue(stats.dropped() > 0, "some assignments dropped");
            assertEquals(80, stats.assignments());
            assertEquals(80, stats.meanLoad() * 4, 1e-12, "loads count every assignment, dropped or not");
        }
    }

    @Test
    void noiseIsOnOnlyWhileTrainingAndTheSameForTheSameTokens() {
        ModelConfig config = ModelConfig.gpt(11, 8, 1, 8, 2).withMoe(MoeConfig.of(6, 2, 1, 4).withGate(MoeConfig.Gate.NOISY));
        MoeRun run = new MoeRun();
        try (ParameterSet params = parameters(config, DType.F64); Tensor x = random(DType.F64, 6, 30, 8);
             StepArena arena = new StepArena(pool)) {
            MoeFeedForward layer = (MoeFeedForward) FeedForward.create(params, "m", config, TensorParallel.NONE, 0, run);
            run.begin(true, 1);
            double[] train1 = layer.forward(arena, x, Layer.Rows.of(1, 30)).out().toDoubleArray();
            double[] train2 = layer.forward(arena, x, Layer.Rows.of(1, 30)).out().toDoubleArray();
            run.end();
            run.begin(false, 1);
            MoeFeedForward.Saved eval = layer.forward(arena, x, Layer.Rows.of(1, 30));
            run.end();
            assertArrayEquals(train1, train2, 0.0, "the noise is a function of the tokens: the same twice (recompute reruns it)");
            assertFalse(java.util.Arrays.equals(train1, eval.out().toDoubleArray()), "training adds noise, evaluation does not");
            for (double eps : eval.routing().eps()) assertEquals(0.0, eps, "no noise sample outside training");
        }
    }

    @Test
    void theBenchmarkRunnerCountsTheSameActiveFlopsForMoeTinyAsForTheDenseMlpPlusTheRouter() {
        ModelConfig config = ModelConfig.preset("moe-tiny").withMoe(MoeConfig.of(8, 2, 1, 512));
        try (FeedForwardRunner dense = new FeedForwardRunner(config, false, pool, DType.F32, 1);
             FeedForwardRunner moe = new FeedForwardRunner(config, true, pool, DType.F32, 1);
             Tensor x = random(DType.F32, 1, 64, 256); Tensor dy = random(DType.F32, 2, 64, 256)) {
            assertEquals(dense.trainingFlops(64) + 6.0 * 64 * 256 * 8, moe.trainingFlops(64), 1e-6);
            moe.forwardBackward(x, dy);
            assertEquals(64 * 2, moe.stats().assignments(), "one training pass of 64 tokens, top-2");
        }
        assertEquals(0, pool.liveBytes(), "everything freed");
    }

    /** The per-phase timers are off unless asked for, and then time every phase of a forward and backward, the tiles' busy time too. */
    @Test
    void thePhaseTimersRecordEveryPhaseOnlyWhenStarted() {
        ModelConfig config = ModelConfig.preset("moe-tiny");
        try (FeedForwardRunner moe = new FeedForwardRunner(config, true, pool, DType.F32, 1);
             Tensor x = random(DType.F32, 1, 256, 256); Tensor dy = random(DType.F32, 2, 256, 256)) {
            moe.forwardBackward(x, dy);
            MoePhases phases = moe.timePhases();
            assertEquals(0, phases.totalMillis(), "nothing recorded before the timers started");
            long start = System.nanoTime();
            moe.forwardBackward(x, dy);
            moe.forwardBackward(x, dy);
            double wall = (System.nanoTime() - start) / 2e6;
            for (MoePhases.Phase p : MoePhases.Phase.values()) assertTrue(phases.millis(p) > 0, p.label() + " was not timed");
            assertTrue(phases.totalMillis() <= wall, "the phases (" + phases.totalMillis() + " ms) fit in the step (" + wall + " ms)");
            double busy = phases.tileBusyFraction(ComputePool.current().threads());
            assertTrue(busy > 0 && busy <= 1.0001, "the tiles' busy fraction " + busy);
            phases.reset();
            assertEquals(0, phases.totalMillis(), "reset forgets");
        }
        assertSame(MoePhases.OFF, new MoeRun().phases(), "a run's timers are off by default");
    }

    /** Under bf16 precision a model with MoE blocks is refused with the fix, not failed deep inside a kernel. */
    @Test
    void bf16PrecisionIsRefusedWithTheFix() {
        org.junit.jupiter.api.Assumptions.assumeTrue(dev.shardwise.core.kernels.onednn.OneDnn.isAvailable(), "bf16 needs oneDNN");
        ModelConfig config = ModelConfig.gpt(11, 8, 1, 8, 2).withMoe(MoeConfig.of(4, 2, 1, 4));
        try (Gpt model = Gpt.create(config, pool, DType.F32, 3); Bf16Precision bf16 = new Bf16Precision(pool);
             StepArena arena = new StepArena(pool)) {
            model.parameters().usePrecision(bf16);
            Tensor tokens = arena.allocate(MemoryCategory.BUFFERS, DType.I32, 1, 8);
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> model.logits(arena, tokens));
            assertTrue(e.getMessage().contains("--precision fp32"), e.getMessage());
        }
    }

    @Test
    void theBiasIsAddedToTheLogitsSoItScalesEveryTokensProbabilitiesByTheSameFactor() {
        ModelConfig config = ModelConfig.gpt(11, 8, 1, 8, 2).withMoe(MoeConfig.of(6, 2, 1, 4).withBalance(MoeConfig.Balance.BIAS));
        double[] b = {0.7, -0.4, 0, 1.3, -2, 0.2};
        MoeRun run = new MoeRun();
        try (ParameterSet params = parameters(config, DType.F64); Tensor x = random(DType.F64, 7, 60, 8);
             StepArena arena = new StepArena(pool)) {
            MoeFeedForward layer = (MoeFeedForward) FeedForward.create(params, "m", config, TensorParallel.NONE, 0, run);
            params.get("m.router.balance_bias").value().copyFrom(new double[6]);
            int[] unbiased = layer.forward(arena, x, Layer.Rows.of(1, 60)).routing().choice().clone();
            params.get("m.router.balance_bias").value().copyFrom(b);
            MoeRouter.Routing r = layer.forward(arena, x, Layer.Rows.of(1, 60)).routing();
            int moved = 0;
            for (int i = 0; i < 60; i++) {
                // choice: the top 2 of p_e·exp(b_e), i.e. of z_e + b_e; gates: the unbiased p of the chosen, renormalised
                Integer[] order = {0, 1, 2, 3, 4, 5};
                int row = i;
                java.util.Arrays.sort(order, (u, v) -> Double.compare(r.p()[row * 6 + v] * Math.exp(b[v]), r.p()[row * 6 + u] * Math.exp(b[u])));
                assertEquals(order[0], r.choice()[i * 2], "token " + i + " first choice");
                assertEquals(order[1], r.choice()[i * 2 + 1], "token " + i + " second choice");
                double sum = r.p()[i * 6 + order[0]] + r.p()[i * 6 + order[1]];
                assertEquals(r.p()[i * 6 + order[0]] / sum, r.gate()[i * 2], 1e-12, "token " + i + " first gate, bias-free");
                if (unbiased[i * 2] != r.choice()[i * 2] || unbiased[i * 2 + 1] != r.choice()[i * 2 + 1]) moved++;
            }
            assertTrue(moved > 0, "the bias changed some token's choice, so the check above saw it");
        }
    }

    /**
     * Tokens that share a large common component, as a deep block's inputs do, skew a router by several logits: top-2
     * of 8 sends nearly everything to two experts. With the default rate the bias must balance them within 100 updates
     * (the old rule, 0.001·sign(error) added to the probabilities, moves a bias by 0.1 in that time and leaves the
     * max/mean at 3.7).
     */
    @Test
    void theDefaultBiasRateBalancesARouterSkewedBySeveralLogitsWithinAHundredUpdates() {
        int n = 512, c = 16;
        ModelConfig config = ModelConfig.gpt(11, 16, 1, c, 2).withMoe(MoeConfig.of(8, 2, 1, 4).withBalance(MoeConfig.Balance.BIAS));
        MoeRun run = new MoeRun();
        try (ParameterSet params = parameters(config, DType.F64); Tensor x = random(DType.F64, 9, n, c);
             StepArena arena = new StepArena(pool)) {
            double[] v = x.toDoubleArray();
            for (int i = 0; i < v.length; i++) v[i] += 2;   // the common component
            x.copyFrom(v);
            MoeFeedForward layer = (MoeFeedForward) FeedForward.create(params, "m", config, TensorParallel.NONE, 0, run);
            params.get("m.router.balance_bias").value().copyFrom(new double[8]);
            double first = 0, last = 0;
            for (int step = 0; step < 100; step++) {
                run.resetStats();
                run.begin(true, 1);
                layer.forward(arena, x, Layer.Rows.of(1, n));
                run.end();
                arena.reset();
                MoeStats stats = run.stats();
                if (step == 0) first = stats.maxOverMean();
                last = stats.maxOverMean();
                run.updateBias(stats.loads(), ParameterUpdate::addToWholeValues);
            }
            assertTrue(first >= 2.5, "the unbiased router is skewed: max/mean " + first);
            assertTrue(last <= 1.1, "after 100 bias updates max/mean " + last + " > 1.1 (from " + first + ")");
        }
    }

    @Test
    void theBiasMovesTowardsTheUnderloadedExpertsInProportionToTheRelativeLoadError() {
        ModelConfig config = ModelConfig.gpt(11, 8, 1, 8, 2).withMoe(MoeConfig.of(4, 1, 1, 4).withBalance(MoeConfig.Balance.BIAS));
        MoeRun run = new MoeRun();
        try (ParameterSet params = parameters(config, DType.F32)) {
            FeedForward.create(params, "m", config, TensorParallel.NONE, 0, run);
            params.get("m.router.balance_bias").value().copyFrom(new double[]{0, 0, 0, 0});
            run.updateBias(List.of(new double[]{10, 2, 4, 0}), ParameterUpdate::addToWholeValues);   // mean 4
            assertArrayEquals(new double[]{-0.15, 0.05, 0, 0.1}, params.get("m.router.balance_bias").value().toDoubleArray(), 1e-7,
                    "b_e += 0.1·(mean - load_e)/mean");
            run.updateBias(List.of(new double[]{0, 0, 0, 0}), ParameterUpdate::addToWholeValues);
            assertArrayEquals(new double[]{-0.15, 0.05, 0, 0.1}, params.get("m.router.balance_bias").value().toDoubleArray(), 1e-7,
                    "no token routed: the bias stays");
        }
    }

    /** The router's spread (metric moe_router_spread): Σ_n Σ_e (z - mean_e z)² of its logits. */
    @Test
    void theRoutingsSpreadIsTheSumOfSquaredDeviationsOfEachTokensLogitsFromTheirMean() {
        int n = 5, c = 8, e = 4;
        ModelConfig config = ModelConfig.gpt(11, c, 1, c, 2).withMoe(MoeConfig.of(e, 2, 1, 4).withBalance(MoeConfig.Balance.BIAS));
        try (ParameterSet params = parameters(config, DType.F64); Tensor x = random(DType.F64, 3, n, c);
             StepArena arena = new StepArena(pool)) {
            MoeRouter router = new MoeRouter(params, "m.router", config.moe());
            MoeRouter.Routing r = router.route(arena, x, new MoeRun());
            double[] w = params.get("m.router.weight_router.weight").value().toDoubleArray(), xs = x.toDoubleArray();
            double expected = 0;
            for (int i = 0; i < n; i++) {
                double[] z = new double[e];
                double mean = 0;
                for (int j = 0; j < e; j++) {
                    for (int q = 0; q < c; q++) z[j] += xs[i * c + q] * w[j * c + q];
                    mean += z[j] / e;
                }
                for (int j = 0; j < e; j++) expected += (z[j] - mean) * (z[j] - mean);
            }
            assertTrue(expected > 0);
            assertEquals(expected, r.spread(), 1e-12 * expected);
        }
    }
}
