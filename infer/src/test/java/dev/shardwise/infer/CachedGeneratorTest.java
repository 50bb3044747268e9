package dev.shardwise.infer;

import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.memory.StepArena;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;
import dev.shardwise.model.Gpt;
import dev.shardwise.model.ModelConfig;
import dev.shardwise.model.MoeConfig;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

import java.util.ArrayList;
import java.util.List;
import java.util.stream.Stream;

import static org.junit.jupiter.api.Assertions.*;

class CachedGeneratorTest {
    private final MemoryPool pool = MemoryPool.unlimited("rank 0");

    static Stream<Arguments> models() {
        return Stream.of(
                Arguments.of("gpt", ModelConfig.gpt(37, 8, 2, 16, 4)),
                Arguments.of("llama", ModelConfig.llama(37, 8, 2, 16, 4, 2, 24)),
                Arguments.of("moe", ModelConfig.gpt(37, 8, 2, 16, 4).withMoe(MoeConfig.of(4, 2, 1, 16).withSharedExperts(1))),
                Arguments.of("post-LN", ModelConfig.gpt(37, 8, 2, 16, 4).withResidual(ModelConfig.Residual.POST_LN)));
    }

    /** Next-token logits of the last position of a full forward over {@code window}. */
    private static float[] fullForward(Gpt model, MemoryPool pool, List<Integer> window) {
        try (StepArena arena = new StepArena(pool)) {
            Tensor input = arena.allocate(MemoryCategory.BUFFERS, DType.I32, 1, window.size());
            for (int i = 0; i < window.size(); i++) input.set(window.get(i), 0, i);
            Tensor logits = model.logits(arena, input);
            float[] out = new float[logits.dim(1)];
            for (int j = 0; j < out.length; j++) out[j] = logits.getFloat(window.size() - 1, j);
            return out;
        }
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("models")
    void cachedDecodingGivesTheFullForwardsLogitsAlsoAfterTheWindowSlides(String name, ModelConfig config) {
        int[] tokens = {3, 17, 0, 36, 5, 5, 21, 9, 30, 1, 2, 33, 4, 8, 8, 19, 7, 11, 12, 0};   // 20 tokens, context 8
        try (Gpt model = Gpt.create(config, pool, DType.F32, 11);
             CachedGenerator generator = new CachedGenerator(model, pool)) {
            List<Integer> window = new ArrayList<>();   // what the generator holds: the newest half kept when full
            for (int p = 0; p < tokens.length; p++) {
                if (window.size() == config.contextLength()) window = new ArrayList<>(window.subList(config.contextLength() / 2, window.size()));
                window.add(tokens[p]);
                float[] cached = generator.feed(tokens[p]), full = fullForward(model, pool, window);
                for (int j = 0; j < full.length; j++) {
                    assertEquals(full[j], cached[j], 1e-4, name + " position " + p + " logit " + j);
                }
                assertEquals(window.size(), generator.position());
            }
        }
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("models")
    void aPromptAtOnceGivesTheLogitsOfFeedingItTokenByToken(String name, ModelConfig config) {
        int[] prompt = {3, 17, 0, 36, 5, 5, 21, 9, 30, 1, 2};   // longer than the context: fed in two chunks, sliding once
        try (Gpt model = Gpt.create(config, pool, DType.F32, 2);
             CachedGenerator once = new CachedGenerator(model, pool);
             CachedGenerator single = new CachedGenerator(model, pool)) {
            float[] a = once.feed(prompt), b = null;
            for (int token : prompt) b = single.feed(token);
            for (int j = 0; j < a.length; j++) assertEquals(b[j], a[j], 1e-4, name + " logit " + j);
            assertEquals(single.position(), once.position());
            float[] a2 = once.feed(4), b2 = single.feed(4);
            for (int j = 0; j < a2.length; j++) assertEquals(b2[j], a2[j], 1e-4, name + " next logit " + j);
        }
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("models")
    void agreesWithTheRecomputingGeneratorWithinTheContext(String name, ModelConfig config) {
        int[] tokens = {3, 17, 0, 36, 5, 9, 9, 1};   // the context of 8, so both hold the same window
        try (Gpt model = Gpt.create(config, pool, DType.F32, 5);
             CachedGenerator cached = new CachedGenerator(model, pool);
             RecomputingGenerator recomputing = new RecomputingGenerator(model, pool)) {
            for (int token : tokens) {
                float[] a = cached.feed(token), b = recomputing.feed(token);
                for (int j = 0; j < a.length; j++) assertEquals(b[j], a[j], 1e-4, name + " token " + token + " logit " + j);
            }
        }
    }

    @Test
    void recomputingGeneratorServesTheTopQueryLayerTheCacheRefuses() {
        ModelConfig top = ModelConfig.gpt(37, 8, 1, 16, 4).withTopQueryLayer(true);
        assertFalse(Gpt.canDecode(top));
        try (Gpt model = Gpt.create(top, pool, DType.F32, 5)) {
            var e = assertThrows(IllegalArgumentException.class, () -> new CachedGenerator(model, pool));
            assertTrue(e.getMessage().contains("RecomputingGenerator"), e.getMessage());
            try (RecomputingGenerator generator = new RecomputingGenerator(model, pool)) {
                List<Integer> out = generator.generate(new int[]{1, 2}, 12, new TokenSampler(1, 0, 1, 3), -1, t -> { });
                assertEquals(12, out.size(), "generates past the 8-token context");
            }
        }
    }

    @Test
    void generationIsSeededAndSlidesPastTheContext() {
        ModelConfig config = ModelConfig.gpt(37, 8, 1, 16, 2);
        try (Gpt model = Gpt.create(config, pool, DType.F32, 3)) {
            List<Integer> first, second;
            try (CachedGenerator g = new CachedGenerator(model, pool)) {
                first = g.generate(new int[]{1, 2, 3}, 20, new TokenSampler(0.8, 10, 0.9, 42), -1, t -> { });
                assertTrue(g.position() <= config.contextLength());
            }
            try (CachedGenerator g = new CachedGenerator(model, pool)) {
                second = g.generate(new int[]{1, 2, 3}, 20, new TokenSampler(0.8, 10, 0.9, 42), -1, t -> { });
            }
            assertEquals(20, first.size(), "generates past the 8-token context by sliding");
            assertEquals(first, second, "same seed, same tokens");
        }
    }

    @Test
    void refusesTokensOutsideTheVocabulary() {
        ModelConfig config = ModelConfig.gpt(37, 8, 1, 16, 2);
        try (Gpt model = Gpt.create(config, pool, DType.F32, 3); CachedGenerator g = new CachedGenerator(model, pool)) {
            var e = assertThrows(IllegalArgumentException.class, () -> g.feed(37));
            assertTrue(e.getMessage().contains("outside the vocabulary"), e.getMessage());
            assertThrows(IllegalArgumentException.class, () -> g.feed(new int[0]));
            assertEquals(0, g.position());
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
