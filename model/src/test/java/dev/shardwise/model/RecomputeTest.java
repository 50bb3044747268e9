package dev.shardwise.model;

import dev.shardwise.core.kernels.Vectors;
import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.memory.StepArena;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.SplittableRandom;
import java.util.stream.Stream;

import static org.junit.jupiter.api.Assertions.*;

/**
 * A transformer block under each {@link Recompute} policy against the same block under NONE: the output, dx and
 * every parameter gradient must be bit-identical (the recompute runs the same kernels on the same inputs).
 */
class RecomputeTest {
    private static final int B = 2, T = 16;

    static Stream<ModelConfig> blocks() {
        ModelConfig gpt = ModelConfig.gpt(50, 32, 2, 64, 4);
        return Stream.concat(Arrays.stream(ModelConfig.Residual.values()).map(gpt::withResidual),
                Stream.of(ModelConfig.llama(50, 32, 2, 64, 4, 2, 96)));
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("blocks")
    void everyPolicyGivesBitIdenticalOutputDxAndGradientsToNone(ModelConfig config) {
        MemoryPool pool = MemoryPool.unlimited("rank 0");
        for (DType dtype : new DType[]{DType.F32, DType.F64}) {
            ParameterSet.Builder builder = ParameterSet.builder();
            TransformerBlock.declare(builder, "h", config);
            try (ParameterSet params = builder.allocate(pool, dtype);
                 Tensor x = random(pool, dtype, 1, B * T, config.hidden());
                 Tensor dy = random(pool, dtype, 2, B * T, config.hidden())) {
                params.initialize(5);
                List<float[]> none = null;
                for (Recompute policy : Recompute.values()) {
                    List<float[]> got = run(new TransformerBlock(params, "h", config, policy), params, x, dy, pool);
                    if (none == null) {
                        none = got;
                        continue;
                    }
                    String[] what = {"y", "dx", "parameter gradients"};
                    for (int i = 0; i < what.length; i++) {
                        assertArrayEquals(none.get(i), got.get(i), String.format("%s %s %s %s under %s differs from NONE",
                                config.residual(), config.norm(), dtype, what[i], policy));
                    }
                }
            }
        }
        assertEquals(0, pool.liveBytes(), "everything freed");
    }

    /** y, dx and the parameter gradients of one forward and backward, as float bits (F64 values rounded). */
    private static List<float[]> run(TransformerBlock block, ParameterSet params, Tensor x, Tensor dy, MemoryPool pool) {
        params.zeroGrads();
        try (StepArena arena = new StepArena(pool)) {
            Layer.Rows rows = Layer.Rows.of(B, T);
            TransformerBlock.Saved saved = block.forward(arena, x, rows);
            Tensor dx = arena.allocateForOverwrite(x.dtype(), x.shape());
            Vectors.fill(dx, Double.NaN);
            block.backward(arena, dx, dy, x, rows, saved);
            List<float[]> out = new ArrayList<>();
            for (Tensor t : new Tensor[]{saved.out(), dx, params.grads()}) out.add(bits(t));
            return out;
        }
    }

    /** Every element as raw bits: F32 as is, F64 split into two floats' worth of bits. */
    private static float[] bits(Tensor t) {
        if (t.dtype() == DType.F32) return t.toFloatArray();
        double[] d = t.toDoubleArray();
        float[] f = new float[2 * d.length];
        for (int i = 0; i < d.length; i++) {
            long b = Double.doubleToRawLongBits(d[i]);
            f[2 * i] = Float.intBitsToFloat((int) (b >>> 32));
            f[2 * i + 1] = Float.intBitsToFloat((int) b);
        }
        return f;
    }

    private static Tensor random(MemoryPool pool, DType dtype, long seed, int... shape) {
        Tensor t = Tensor.allocate(pool, MemoryCategory.BUFFERS, dtype, shape);
        SplittableRandom r = new SplittableRandom(seed);
        double[] v = new double[(int) t.numel()];
        for (int i = 0; i < v.length; i++) v[i] = r.nextGaussian();
        return t.copyFrom(v);
    }
}
