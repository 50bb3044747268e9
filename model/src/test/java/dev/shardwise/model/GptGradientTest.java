package dev.shardwise.model;

import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.memory.StepArena;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

import java.util.SplittableRandom;
import java.util.stream.Stream;

import static org.junit.jupiter.api.Assertions.*;

/** The whole model's backward against finite differences in float64, every parameter element, every variant. */
class GptGradientTest {
    private final MemoryPool pool = MemoryPool.unlimited("rank 0");

    static Tensor randomIds(MemoryPool pool, long seed, int vocab, int b, int t) {
        Tensor ids = Tensor.allocate(pool, MemoryCategory.BUFFERS, DType.I32, b, t);
        SplittableRandom random = new SplittableRandom(seed);
        for (int i = 0; i < b; i++) for (int j = 0; j < t; j++) ids.set(random.nextInt(vocab), i, j);
        return ids;
    }

    static Stream<ModelConfig> variants() {
        ModelConfig gpt = ModelConfig.gpt(11, 8, 2, 8, 2);
        return Stream.of(
                gpt,
                gpt.withResidual(ModelConfig.Residual.POST_LN),
                gpt.withResidual(ModelConfig.Residual.DEEPNORM),
                gpt.withTopQueryLayer(true),
                ModelConfig.llama(11, 8, 2, 8, 4, 2, 12));
    }

    @ParameterizedTest
    @MethodSource("variants")
    void backwardMatchesFiniteDifferencesInFloat64ForEveryParameter(ModelConfig config) {
        try (Gpt model = Gpt.create(config, pool, DType.F64, 7);
             Tensor tokens = randomIds(pool, 1, config.vocabSize(), 2, 5);
             Tensor targets = randomIds(pool, 2, config.vocabSize(), 2, 5)) {
            targets.set(-1, 1, 3);   // an ignored position must not contribute
            // Larger than init-scale weights so every path carries signal.
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
                worst = Math.max(worst, FiniteDifferences.check(config.residual() + " " + config.norm() + " " + p.name(),
                        p.value(), p.grad(), () -> {
                            try (StepArena arena = new StepArena(pool)) {
                                return model.evaluate(arena, tokens, targets);
                            }
                        }));
            }
            System.out.printf("float64 gradient check %s/%s/%s/%s%s: worst relative error %.3g over %d parameters%n",
                    config.residual(), config.norm(), config.mlp(), config.positions(),
                    config.topQueryLayer() ? "/top-query" : "", worst, params.count());
        }
        assertEquals(0, pool.liveBytes(), "everything freed");
    }
}
