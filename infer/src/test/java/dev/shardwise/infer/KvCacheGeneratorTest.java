package dev.shardwise.infer;

import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.memory.StepArena;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;
import dev.shardwise.model.Gpt;
import dev.shardwise.model.ModelConfig;
import org.junit.jupiter.api.Test;

import java.util.List;

import static org.junit.jupiter.api.Assertions.*;

class KvCacheGeneratorTest {

    @Test
    void cachedDecodingGivesTheSameLogitsAsAFullForward() {
        MemoryPool pool = MemoryPool.unlimited("rank 0");
        ModelConfig config = ModelConfig.gpt(37, 12, 2, 16, 4);
        int[] tokens = {3, 17, 0, 36, 5, 5, 21, 9, 30};
        try (Gpt model = Gpt.create(config, pool, DType.F32, 11);
             KvCacheGenerator generator = new KvCacheGenerator(config, model.parameters(), pool);
             StepArena arena = new StepArena(pool)) {
            Tensor input = arena.allocate(MemoryCategory.BUFFERS, DType.I32, 1, tokens.length);
            for (int i = 0; i < tokens.length; i++) input.set(tokens[i], 0, i);
            Tensor full = model.logits(arena, input);
            double worst = 0;
            for (int p = 0; p < tokens.length; p++) {
                float[] cached = generator.feed(tokens[p]);
                for (int j = 0; j < config.vocabSize(); j++) {
                    double diff = Math.abs(cached[j] - full.getDouble(p, j));
                    assertTrue(diff < 1e-4, "position " + p + " token " + j + ": cached " + cached[j] + " vs full "
                            + full.getDouble(p, j));
                    worst = Math.max(worst, diff);
                }
            }
            assertEquals(tokens.length, generator.position());
            System.out.printf("KV cache vs full forward: max abs logit diff %.3g%n", worst);
        }
    }

    @Test
    void recomputingGeneratorAgreesWithTheCacheAndServesEveryVariant() {
        MemoryPool pool = MemoryPool.unlimited("rank 0");
        ModelConfig config = ModelConfig.gpt(37, 12, 2, 16, 4);
        int[] tokens = {3, 17, 0, 36, 5};
        try (Gpt model = Gpt.create(config, pool, DType.F32, 5);
             KvCacheGenerator cached = new KvCacheGenerator(config, model.parameters(), pool);
             RecomputingGenerator recomputing = new RecomputingGenerator(model, pool)) {
            for (int token : tokens) {
                float[] a = cached.feed(token), b = recomputing.feed(token);
                for (int j = 0; j < a.length; j++) assertEquals(a[j], b[j], 1e-4, "token " + token + " logit " + j);
            }
        }
        ModelConfig llama = ModelConfig.llama(37, 8, 1, 16, 4, 2, 24);
        assertFalse(KvCacheGenerator.supports(llama));
        try (Gpt model = Gpt.create(llama, pool, DType.F32, 5);
             RecomputingGenerator generator = new RecomputingGenerator(model, pool)) {
            List<Integer> out = generator.generate(new int[]{1, 2}, 12, new TokenSampler(1, 0, 1, 3), -1, t -> { });
            assertEquals(12, out.size(), "generates past the 8-token context");
        }
    }

    @Test
    void generationIsSeededAndSlidesPastTheContext() {
        MemoryPool pool = MemoryPool.unlimited("rank 0");
        ModelConfig config = ModelConfig.gpt(37, 8, 1, 16, 2);
        try (Gpt model = Gpt.create(config, pool, DType.F32, 3)) {
            List<Integer> first, second;
            try (KvCacheGenerator g = new KvCacheGenerator(config, model.parameters(), pool)) {
                first = g.generate(new int[]{1, 2, 3}, 20, new TokenSampler(0.8, 10, 0.9, 42), -1, t -> { });
                assertTrue(g.position() <= config.contextLength());
            }
            try (KvCacheGenerator g = new KvCacheGenerator(config, model.parameters(), pool)) {
                second = g.generate(new int[]{1, 2, 3}, 20, new TokenSampler(0.8, 10, 0.9, 42), -1, t -> { });
            }
            assertEquals(20, first.size(), "generates past the 8-token context by sliding");
            assertEquals(first, second, "same seed, same tokens");
        }
    }

    @Test
    void samplerHonoursGreedyTopKAndTopP() {
        float[] logits = {0f, 5f, 1f, 4.9f};
        assertEquals(1, new TokenSampler(0, 0, 1, 1).sample(logits));
        TokenSampler topK = new TokenSampler(1, 2, 1, 7);
        for (int i = 0; i < 200; i++) {
            int t = topK.sample(logits);
            assertTrue(t == 1 || t == 3, "top-2 keeps tokens 1 and 3, got " + t);
        }
        TokenSampler topP = new TokenSampler(1, 0, 0.3, 7);
        for (int i = 0; i < 50; i++) assertEquals(1, topP.sample(logits), "nucleus 0.3 keeps only the top token");
        assertThrows(IllegalArgumentException.class, () -> new TokenSampler(-1, 0, 1, 1));
        assertThrows(IllegalArgumentException.class, () -> new TokenSampler(1, 0, 0, 1));
    }
}
