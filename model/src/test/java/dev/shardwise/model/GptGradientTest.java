package dev.shardwise.model;

import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.memory.StepArena;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;
import org.junit.jupiter.api.Test;

import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.*;

/** The whole model's backward against finite differences in float64, every parameter element. */
class GptGradientTest {
    private final MemoryPool pool = MemoryPool.unlimited("rank 0");

    static Tensor randomIds(MemoryPool pool, long seed, int vocab, int b, int t) {
        Tensor ids = Tensor.allocate(pool, dev.shardwise.core.memory.MemoryCategory.BUFFERS, DType.I32, b, t);
        SplittableRandom random = new SplittableRandom(seed);
        for (int i = 0; i < b; i++) for (int j = 0; j < t; j++) ids.set(random.nextInt(vocab), i, j);
        return ids;
    }

    @Test
    void backwardMatchesFiniteDifferencesInFloat64ForEveryParameter() {
        ModelConfig config = ModelConfig.gpt(11, 8, 2, 8, 2);
        try (Gpt model = Gpt.create(config, pool, DType.F64, 7);
             Tensor tokens = randomIds(pool, 1, 11, 2, 5);
             Tensor targets = randomIds(pool, 2, 11, 2, 5)) {
            targets.set(-1, 1, 3);   // an ignored position must not contribute
            // Larger than init-scale weights so every path carries signal.
            model.parameters().initialize(7);
            ParameterSet params = model.parameters();
            double[] v = params.values().toDoubleArray();
            for (int i = 0; i < v.length; i++) v[i] = v[i] * 10 + (i % 7 == 0 ? 0.3 : 0);
            params.values().copyFrom(v);

            params.zeroGrads();
            try (StepArena arena = new StepArena(pool)) {
                Gpt.Pass pass = model.forward(arena, tokens, targets, 1.0);
                assertEquals(9, pass.countedTokens());
                model.backward(arena, pass);
            }
            double worst = 0;
            for (Parameter p : params.parameters()) {
                worst = Math.max(worst, FiniteDifferences.check(p.name(), p.value(), p.grad(), () -> {
                    try (StepArena arena = new StepArena(pool)) {
                        return model.evaluate(arena, tokens, targets);
                    }
                }));
            }
            System.out.printf("GPT float64 gradient check: worst relative error %.3g over %d parameters%n", worst, params.count());
        }
        assertEquals(0, pool.liveBytes(), "everything freed");
    }
}
