package dev.shardwise.model;

import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.memory.StepArena;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;
import org.junit.jupiter.api.Test;

import java.util.SplittableRandom;
import java.util.function.Consumer;

import static org.junit.jupiter.api.Assertions.*;

/**
 * Every layer on its own, in float64: with loss = Σ y ∘ R for a fixed random R, backward's dx and every parameter
 * gradient must match central finite differences element by element.
 */
class LayerGradientTest {
    private static final int B = 2, T = 5;
    private final MemoryPool pool = MemoryPool.unlimited("rank 0");

    /** A layer under test: forward keeps what it saved; backward accumulates dx from dy. */
    private interface Probe {
        Tensor forward(StepArena arena, Tensor x);

        void backward(StepArena arena, Tensor dx, Tensor dy, Tensor x);
    }

    private Tensor random(long seed, double scale, int... shape) {
        Tensor t = Tensor.allocate(pool, MemoryCategory.BUFFERS, DType.F64, shape);
        SplittableRandom r = new SplittableRandom(seed);
        double[] v = new double[(int) t.numel()];
        for (int i = 0; i < v.length; i++) v[i] = r.nextGaussian() * scale;
        return t.copyFrom(v);
    }

    private ParameterSet parameters(Consumer<ParameterSet.Builder> declare) {
        ParameterSet.Builder builder = ParameterSet.builder();
        declare.accept(builder);
        ParameterSet params = builder.allocate(pool, DType.F64);
        params.initialize(3);
        double[] v = params.values().toDoubleArray();   // well away from init scale, so every path carries signal
        for (int i = 0; i < v.length; i++) v[i] = v[i] * 15 + 0.1 * Math.sin(i);
        params.values().copyFrom(v);
        return params;
    }

    private void check(String layer, ParameterSet params, int width, Probe probe) {
        try (params; Tensor x = random(11, 1.0, B * T, width); StepArena arena = new StepArena(pool)) {
            Tensor out = probe.forward(arena, x);
            Tensor r = arena.allocate(DType.F64, out.shape());
            try (Tensor values = random(12, 1.0, out.shape())) {
                r.copyFrom(values.toDoubleArray());
            }
            Tensor dx = arena.allocate(DType.F64, x.shape());
            params.zeroGrads();
            probe.backward(arena, dx, r, x);
            double[] rv = r.toDoubleArray();
            java.util.function.DoubleSupplier loss = () -> {
                try (StepArena a = new StepArena(pool)) {
                    double[] y = probe.forward(a, x).toDoubleArray();
                    double s = 0;
                    for (int i = 0; i < y.length; i++) s += y[i] * rv[i];
                    return s;
                }
            };
            FiniteDifferences.check(layer + " dx", x, dx, loss);
            for (Parameter p : params.parameters()) FiniteDifferences.check(layer + " " + p.name(), p.value(), p.grad(), loss);
        }
    }

    @Test
    void linearBackwardMatchesFiniteDifferences() {
        ParameterSet params = parameters(b -> Linear.declare(b, "fc", 6, 4, true, 0.02));
        Linear layer = new Linear(params, "fc", true);
        check("Linear", params, 6, new Probe() {
            public Tensor forward(StepArena a, Tensor x) { return layer.forward(a, x); }
            public void backward(StepArena a, Tensor dx, Tensor dy, Tensor x) { layer.backward(dx, dy, x); }
        });
    }

    @Test
    void normsBackwardMatchFiniteDifferences() {
        for (ModelConfig config : new ModelConfig[]{ModelConfig.gpt(11, 8, 1, 8, 2), ModelConfig.llama(11, 8, 1, 8, 2, 1, 12)}) {
            ParameterSet params = parameters(b -> Norm.declare(b, "ln", config));
            Norm norm = Norm.create(params, "ln", config);
            Norm.Saved[] saved = new Norm.Saved[1];
            check(config.norm().toString(), params, 8, new Probe() {
                public Tensor forward(StepArena a, Tensor x) { return (saved[0] = norm.forward(a, x)).out(); }
                public void backward(StepArena a, Tensor dx, Tensor dy, Tensor x) { norm.backward(dx, dy, x, saved[0]); }
            });
        }
    }

    @Test
    void feedForwardBlocksBackwardMatchFiniteDifferences() {
        for (ModelConfig config : new ModelConfig[]{ModelConfig.gpt(11, 8, 1, 8, 2), ModelConfig.llama(11, 8, 1, 8, 2, 1, 12)}) {
            ParameterSet params = parameters(b -> FeedForward.declare(b, "mlp", config));
            FeedForward mlp = FeedForward.create(params, "mlp", config);
            FeedForward.Saved[] saved = new FeedForward.Saved[1];
            check(config.mlp().toString(), params, 8, new Probe() {
                public Tensor forward(StepArena a, Tensor x) { return (saved[0] = mlp.forward(a, x)).out(); }
                public void backward(StepArena a, Tensor dx, Tensor dy, Tensor x) { mlp.backward(a, dx, dy, x, saved[0]); }
            });
        }
    }

    @Test
    void attentionBackwardMatchesFiniteDifferencesWithLearnedAndRotaryPositionsAndGroupedHeads() {
        for (ModelConfig config : new ModelConfig[]{ModelConfig.gpt(11, 8, 1, 8, 2), ModelConfig.llama(11, 8, 1, 8, 4, 2, 12)}) {
            ParameterSet params = parameters(b -> CausalSelfAttention.declare(b, "attn", config));
            CausalSelfAttention attention = new CausalSelfAttention(params, "attn", config);
            CausalSelfAttention.Saved[] saved = new CausalSelfAttention.Saved[1];
            check("attention " + config.positions() + " kv " + config.kvHeads(), params, 8, new Probe() {
                public Tensor forward(StepArena a, Tensor x) { return (saved[0] = attention.forward(a, x, B, T)).out(); }
                public void backward(StepArena a, Tensor dx, Tensor dy, Tensor x) { attention.backward(a, dx, dy, x, B, T, saved[0]); }
            });
        }
    }

    @Test
    void transformerBlockBackwardMatchesFiniteDifferencesForEveryResidualPlacement() {
        for (ModelConfig.Residual residual : ModelConfig.Residual.values()) {
            ModelConfig config = ModelConfig.gpt(11, 8, 2, 8, 2).withResidual(residual);
            ParameterSet params = parameters(b -> TransformerBlock.declare(b, "h", config));
            TransformerBlock block = new TransformerBlock(params, "h", config);
            TransformerBlock.Saved[] saved = new TransformerBlock.Saved[1];
            check("block " + residual, params, 8, new Probe() {
                public Tensor forward(StepArena a, Tensor x) { return (saved[0] = block.forward(a, x, B, T)).out(); }
                public void backward(StepArena a, Tensor dx, Tensor dy, Tensor x) { block.backward(a, dx, dy, x, B, T, saved[0]); }
            });
        }
    }

    @Test
    void topQueryLayerBackwardMatchesFiniteDifferences() {
        ModelConfig config = ModelConfig.gpt(11, 8, 1, 8, 2).withTopQueryLayer(true);
        ParameterSet params = parameters(b -> TopQueryLayer.declare(b, "top", config));
        TopQueryLayer layer = new TopQueryLayer(params, "top", config);
        TopQueryLayer.Saved[] saved = new TopQueryLayer.Saved[1];
        Tensor positions = Tensor.allocate(pool, MemoryCategory.BUFFERS, DType.I32, B * T);
        for (int i = 0; i < B * T; i++) positions.set(i % T, i);
        check("top query layer", params, 8, new Probe() {
            public Tensor forward(StepArena a, Tensor x) { return (saved[0] = layer.forward(a, x, positions, B, T)).out(); }
            public void backward(StepArena a, Tensor dx, Tensor dy, Tensor x) { layer.backward(a, dx, dy, x, positions, B, T, saved[0]); }
        });
        positions.close();
        assertEquals(0, pool.liveBytes(), "everything freed");
    }
}
