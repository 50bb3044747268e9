package dev.shardwise.model;

import dev.shardwise.core.kernels.Vectors;
import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.memory.StepArena;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;
import java.util.function.BiConsumer;
import java.util.function.Consumer;
import java.util.function.DoubleSupplier;
import java.util.function.Function;

import static org.junit.jupiter.api.Assertions.*;

/**
 * Every layer on its own, in float64, through the {@link Layer} contract: with loss = Σ y ∘ R for a fixed random
 * R, backward's dx and every parameter gradient must match central finite differences element by element. dx is
 * handed to backward full of NaN (backward must write it, not read it), and every parameter gradient starts from
 * a nonzero value (backward must add to it); what is checked is the gradient minus that start.
 */
class LayerGradientTest {
    private static final int B = 2, T = 5;
    private final MemoryPool pool = MemoryPool.unlimited("rank 0");

    /**
     * One layer variant: how to declare its parameters and how to build it over them.
     *
     * @param width     C, the width of its input x [N, C]
     * @param positions whether its rows carry positions (the top query layer reads them)
     * @param scale     how far the parameters are pushed from their init (see {@link #parameters}): far enough that
     *                  every path carries signal, not so far that the loss drowns the finite differences in rounding
     */
    record Case(String name, BiConsumer<ParameterSet.Builder, String> declare, Function<ParameterSet, Layer<?>> create,
                int width, boolean positions, double scale) {
        Case(String name, BiConsumer<ParameterSet.Builder, String> declare, Function<ParameterSet, Layer<?>> create,
             int width, boolean positions) {
            this(name, declare, create, width, positions, 15);
        }

        @Override
        public String toString() { return name; }
    }

    static List<Case> layers() {
        ModelConfig gpt = ModelConfig.gpt(11, 8, 2, 8, 2);
        ModelConfig llama = ModelConfig.llama(11, 8, 2, 8, 4, 2, 12);
        List<Case> cases = new ArrayList<>();
        for (ModelConfig config : List.of(gpt, llama)) {
            cases.add(new Case("norm " + config.norm(), (b, n) -> Norm.declare(b, n, config),
                    p -> Norm.create(p, "x", config), config.hidden(), false));
            cases.add(new Case("feed-forward " + config.mlp(), (b, n) -> FeedForward.declare(b, n, config, TensorParallel.NONE),
                    p -> FeedForward.create(p, "x", config, TensorParallel.NONE), config.hidden(), false));
            for (boolean recomputeCore : new boolean[]{false, true}) {
                cases.add(new Case("attention " + config.positions() + " kv " + config.kvHeads()
                        + (recomputeCore ? " core recomputed" : ""), (b, n) -> CausalSelfAttention.declare(b, n, config, TensorParallel.NONE),
                        p -> new CausalSelfAttention(p, "x", config, recomputeCore, TensorParallel.NONE), config.hidden(), false));
            }
        }
        List<ModelConfig> blocks = new ArrayList<>();
        for (ModelConfig.Residual residual : ModelConfig.Residual.values()) blocks.add(gpt.withResidual(residual));
        blocks.add(llama);
        for (ModelConfig config : blocks) {
            for (Recompute policy : Recompute.values()) {
                // RMSNorm's γ times 15 feeding SwiGLU's product makes a loss of ~1e3, whose rounding swamps the
                // finite differences of the smallest gradients: push the LLaMA block's parameters less far.
                double scale = config.mlp() == ModelConfig.Mlp.SWIGLU ? 4 : 15;
                cases.add(new Case("block " + config.residual() + " " + config.norm() + " " + config.mlp() + " recompute " + policy,
                        (b, n) -> TransformerBlock.declare(b, n, config), p -> new TransformerBlock(p, "x", config, policy),
                        config.hidden(), false, scale));
            }
        }
        ModelConfig top = gpt.withTopQueryLayer(true);
        cases.add(new Case("top query layer", (b, n) -> TopQueryLayer.declare(b, n, top), p -> new TopQueryLayer(p, "x", top),
                top.hidden(), true));
        cases.addAll(mixtureOfExperts(gpt, llama));
        return cases;
    }

    /**
     * The MoE feed-forward block with each gate (Switch top-1, GShard top-2, noisy top-2), capacity (dropless, and a
     * factor that drops assignments), balance option (aux, bias, none; z-loss on and off), shared experts, a routed
     * scale, and GELU
     * and SwiGLU experts; and MoE blocks inside a transformer block under each recompute policy. The discrete top-k
     * choice stays fixed under the finite-difference steps (random inputs sit far from ties); the noise sample is
     * keyed by row so perturbing x leaves it fixed. The loss checked is Σ y∘R plus the layer's auxiliary losses.
     */
    static List<Case> mixtureOfExperts(ModelConfig gpt, ModelConfig llama) {
        MoeConfig base = MoeConfig.of(4, 2, 1, 6).withWeights(0.3, 0.05);   // weights large enough to be seen in the check
        List<Case> cases = new ArrayList<>();
        record Variant(String name, ModelConfig model, MoeConfig moe) { }
        List<Variant> variants = List.of(
                new Variant("switch top-1 dropless aux", gpt, MoeConfig.of(4, 1, 1, 6).withWeights(0.3, 0.05)),
                new Variant("gshard top-2 capacity 1.0 aux", gpt, base.withCapacityFactor(1.0)),
                new Variant("noisy top-2 aux", gpt, base.withGate(MoeConfig.Gate.NOISY)),
                new Variant("noisy top-1 capacity 0.75 none", gpt, MoeConfig.of(4, 1, 1, 6).withGate(MoeConfig.Gate.NOISY)
                        .withCapacityFactor(0.75).withBalance(MoeConfig.Balance.NONE).withWeights(0, 0)),
                new Variant("top-2 bias + 2 shared, routed scale 2.5", gpt,
                        base.withBalance(MoeConfig.Balance.BIAS).withSharedExperts(2).withRoutedScale(2.5)),
                new Variant("swiglu top-2 none z-loss", llama, base.withBalance(MoeConfig.Balance.NONE)),
                new Variant("swiglu top-3 capacity 1.25 aux + shared", llama, MoeConfig.of(4, 3, 1, 6).withWeights(0.3, 0.05)
                        .withCapacityFactor(1.25).withSharedExperts(1)));
        for (Variant v : variants) {
            ModelConfig config = v.model.withMoe(v.moe);
            cases.add(new Case("moe " + v.name, (b, n) -> FeedForward.declare(b, n, config, TensorParallel.NONE, 0),
                    p -> FeedForward.create(p, "x", config, TensorParallel.NONE, 0, trainingRun()), config.hidden(), false, 4));
        }
        ModelConfig block = gpt.withMoe(base.withBalance(MoeConfig.Balance.NONE).withWeights(0, 0).withCapacityFactor(1.0));
        for (Recompute policy : Recompute.values()) {
            cases.add(new Case("block with moe recompute " + policy, (b, n) -> TransformerBlock.declare(b, n, block, TensorParallel.NONE, 0, ExpertParallel.NONE),
                    p -> new TransformerBlock(p, "x", block, policy, TensorParallel.NONE, 0, trainingRun()), block.hidden(), false, 4));
        }
        return cases;
    }

    /** A run in a training pass with loss scale 1, its noise keyed by row. */
    static MoeRun trainingRun() {
        MoeRun run = new MoeRun();
        run.keyNoiseByRow();
        run.begin(true, 1);
        return run;
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("layers")
    void backwardMatchesFiniteDifferencesInFloat64(Case c) {
        ParameterSet params = parameters(b -> c.declare().accept(b, "x"), c.scale());
        try (params; Tensor positions = Tensor.allocate(pool, MemoryCategory.BUFFERS, DType.I32, B * T)) {
            for (int i = 0; i < B * T; i++) positions.set(i % T, i);
            assertFalse(params.parameters().isEmpty(), c.name() + " declares no parameters: nothing would be checked");
            check(c.name(), params, c.create().apply(params), new Layer.Rows(B, T, c.positions() ? positions : null), c.width());
        }
        assertEquals(0, pool.liveBytes(), "everything freed");
    }

    /** The one driver: forward, backward into a NaN-filled dx onto nonzero gradients, then finite differences. */
    private <S extends Layer.Saved> void check(String layer, ParameterSet params, Layer<S> probe, Layer.Rows rows, int width) {
        try (Tensor x = random(11, 1.0, rows.n(), width); StepArena arena = new StepArena(pool)) {
            S saved = probe.forward(arena, x, rows);
            Tensor r = arena.allocateForOverwrite(DType.F64, saved.out().shape());
            try (Tensor values = random(12, 1.0, saved.out().shape())) {
                Vectors.copy(r, values);
            }
            Tensor dx = arena.allocateForOverwrite(DType.F64, x.shape());
            Vectors.fill(dx, Double.NaN);
            double[] start = new double[Math.toIntExact(params.grads().numel())];
            for (int i = 0; i < start.length; i++) start[i] = 0.25 * Math.cos(i);
            params.grads().copyFrom(start);
            probe.backward(arena, dx, r, x, rows, saved);
            double[] grads = params.grads().toDoubleArray();
            for (int i = 0; i < grads.length; i++) grads[i] -= start[i];
            params.grads().copyFrom(grads);   // this backward's contribution alone

            double[] rv = r.toDoubleArray();
            DoubleSupplier loss = () -> {
                try (StepArena a = new StepArena(pool)) {
                    S again = probe.forward(a, x, rows);
                    double[] y = again.out().toDoubleArray();
                    double s = again instanceof MoeFeedForward.Saved moe ? moe.auxLoss() : 0;   // the layer's own loss terms
                    for (int i = 0; i < y.length; i++) s += y[i] * rv[i];
                    return s;
                }
            };
            FiniteDifferences.check(layer + " dx", x, dx, loss);
            for (Parameter p : params.parameters()) FiniteDifferences.check(layer + " " + p.name(), p.value(), p.grad(), loss);
        }
    }

    /**
     * Linear is a helper inside layers, not a {@link Layer}: its backward writes dx, its backwardAdd adds onto it;
     * both accumulate dW and db.
     */
    @Test
    void linearBackwardWritesAndBackwardAddAddsMatchingFiniteDifferences() {
        try (ParameterSet params = parameters(b -> Linear.declare(b, "fc", 6, 4, true, 0.02), 15);
             Tensor x = random(11, 1.0, B * T, 6); Tensor dy = random(12, 1.0, B * T, 4);
             Tensor dx = random(13, 1.0, B * T, 6); Tensor onto = random(14, 1.0, B * T, 6)) {
            Linear layer = new Linear(params, "fc", true);
            double[] rv = dy.toDoubleArray();
            DoubleSupplier loss = () -> {
                try (StepArena a = new StepArena(pool)) {
                    double[] y = layer.forward(a, x).toDoubleArray();
                    double s = 0;
                    for (int i = 0; i < y.length; i++) s += y[i] * rv[i];
                    return s;
                }
            };
            Vectors.fill(dx, Double.NaN);
            params.zeroGrads();
            layer.backward(dx, dy, x);
            FiniteDifferences.check("Linear dx", x, dx, loss);
            for (Parameter p : params.parameters()) FiniteDifferences.check("Linear " + p.name(), p.value(), p.grad(), loss);

            double[] before = onto.toDoubleArray(), written = dx.toDoubleArray();
            layer.backwardAdd(onto, dy, x);
            double[] added = onto.toDoubleArray();
            for (int i = 0; i < added.length; i++) {
                assertEquals(before[i] + written[i], added[i], 1e-12, "Linear backwardAdd element " + i + " adds dy·W onto dx");
            }
        }
        assertEquals(0, pool.liveBytes(), "everything freed");
    }

    private Tensor random(long seed, double scale, int... shape) {
        Tensor t = Tensor.allocate(pool, MemoryCategory.BUFFERS, DType.F64, shape);
        SplittableRandom r = new SplittableRandom(seed);
        double[] v = new double[(int) t.numel()];
        for (int i = 0; i < v.length; i++) v[i] = r.nextGaussian() * scale;
        return t.copyFrom(v);
    }

    /** Declared, initialised, then every value v turned into v·scale + 0.1·sin(i), well away from init scale. */
    private ParameterSet parameters(Consumer<ParameterSet.Builder> declare, double scale) {
        ParameterSet.Builder builder = ParameterSet.builder();
        declare.accept(builder);
        ParameterSet params = builder.allocate(pool, DType.F64);
        params.initialize(3);
        double[] v = params.values().toDoubleArray();   // well away from init scale, so every path carries signal
        for (int i = 0; i < v.length; i++) v[i] = v[i] * scale + 0.1 * Math.sin(i);
        params.values().copyFrom(v);
        return params;
    }
}
