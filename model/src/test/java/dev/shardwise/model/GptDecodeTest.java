package dev.shardwise.model;

import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.memory.StepArena;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

import java.util.Arrays;
import java.util.List;
import java.util.SplittableRandom;
import java.util.stream.Stream;

import static org.junit.jupiter.api.Assertions.*;

/**
 * Cached decoding ({@link Gpt#decode}) against the full forward ({@link Gpt#logits}) for every block type: token by
 * token, after a sliding-window restart of the cache, and a prompt fed at once against the same prompt token by token.
 */
class GptDecodeTest {
    private static final int CONTEXT = 16;
    private static final double TOLERANCE = 1e-4;   // of the largest logit of the row
    private static final double BF16_TOLERANCE = 5e-3;   // measured: up to 1.4e-3 (llama-tiny)
    private final MemoryPool pool = MemoryPool.unlimited("rank 0");

    /** A preset shortened for a test: a context of 16, 2 blocks, a vocabulary of 300; widths as the preset's. */
    private static ModelConfig shortened(ModelConfig p) {
        return new ModelConfig(300, CONTEXT, 2, p.hidden(), p.heads(), p.kvHeads(), p.ffnHidden(), p.norm(), p.mlp(),
                p.positions(), p.residual(), p.bias(), p.topQueryLayer(), p.normEps(), p.moe());
    }

    static Stream<Arguments> models() {
        ModelConfig tiny = shortened(ModelConfig.preset("tiny")), moe = shortened(ModelConfig.preset("moe-tiny"));
        return Stream.of(
                Arguments.of("tiny", tiny),
                Arguments.of("llama-tiny", shortened(ModelConfig.preset("llama-tiny"))),
                Arguments.of("moe-tiny", moe),
                Arguments.of("moe-tiny, noisy gate", moe.withMoe(moe.moe().withGate(MoeConfig.Gate.NOISY))),
                Arguments.of("tiny post-LN", tiny.withResidual(ModelConfig.Residual.POST_LN)),
                Arguments.of("llama-tiny DeepNorm", shortened(ModelConfig.preset("llama-tiny")).withResidual(ModelConfig.Residual.DEEPNORM)));
    }

    /** The dense ones: the MoE blocks' forward does not run under bf16 precision (a bias of the shared experts). */
    static Stream<Arguments> denseModels() {
        return models().filter(a -> ((ModelConfig) a.get()[1]).moe() == null);
    }

    private Tensor ids(StepArena arena, int[] tokens, int from, int to) {
        Tensor t = arena.allocate(MemoryCategory.BUFFERS, DType.I32, 1, to - from);
        for (int i = from; i < to; i++) t.set(tokens[i], 0, i - from);
        return t;
    }

    /** Row {@code row} of {@code logits} [T, V]. */
    private static double[] row(Tensor logits, int row) {
        int v = logits.dim(1);
        return Arrays.copyOfRange(logits.toDoubleArray(), row * v, (row + 1) * v);
    }

    private static void assertRowsClose(String what, double[] expected, double[] actual) {
        double max = 0, diff = 0;
        for (int j = 0; j < expected.length; j++) {
            max = Math.max(max, Math.abs(expected[j]));
            diff = Math.max(diff, Math.abs(expected[j] - actual[j]));
        }
        assertTrue(diff <= TOLERANCE * max, what + ": max |diff| " + diff + " exceeds " + TOLERANCE + " of the largest logit " + max);
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("models")
    void tokenByTokenAndAfterASlidingRestartEqualsTheFullForward(String name, ModelConfig config) {
        int[] tokens = new SplittableRandom(7).ints(CONTEXT + CONTEXT / 2, 0, config.vocabSize()).toArray();
        try (Gpt model = Gpt.create(config, pool, DType.F32, 11);
             KvCache cache = new KvCache(config, pool);
             StepArena arena = new StepArena(pool)) {
            assertTrue(Gpt.canDecode(config));
            Tensor full = model.logits(arena, ids(arena, tokens, 0, CONTEXT));
            for (int p = 0; p < CONTEXT; p++) {
                Tensor logits = model.decode(arena, cache, ids(arena, tokens, p, p + 1));
                assertArrayEquals(new int[]{1, config.vocabSize()}, logits.shape());
                assertRowsClose(name + " position " + p, row(full, p), row(logits, 0));
            }
            assertEquals(CONTEXT, cache.length());
            // the window slides: the newest half again into the emptied cache, at once, then token by token
            int from = CONTEXT / 2;
            cache.clear();
            Tensor window = model.logits(arena, ids(arena, tokens, from, tokens.length));
            Tensor prompt = model.decode(arena, cache, ids(arena, tokens, from, CONTEXT));
            for (int p = from; p < CONTEXT; p++) assertRowsClose(name + " restarted prompt, position " + p, row(window, p - from), row(prompt, p - from));
            for (int p = CONTEXT; p < tokens.length; p++) {
                Tensor logits = model.decode(arena, cache, ids(arena, tokens, p, p + 1));
                assertRowsClose(name + " after the restart, position " + p, row(window, p - from), row(logits, 0));
            }
            assertEquals(CONTEXT, cache.length());
        }
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("models")
    void aPromptAtOnceEqualsItTokenByToken(String name, ModelConfig config) {
        int[] tokens = new SplittableRandom(3).ints(CONTEXT, 0, config.vocabSize()).toArray();
        try (Gpt model = Gpt.create(config, pool, DType.F32, 5);
             KvCache once = new KvCache(config, pool);
             KvCache single = new KvCache(config, pool);
             StepArena arena = new StepArena(pool)) {
            // 5 tokens, then 6 at once, against 11 one at a time; then one more each
            Tensor first = model.decode(arena, once, ids(arena, tokens, 0, 5));
            Tensor second = model.decode(arena, once, ids(arena, tokens, 5, 11));
            for (int p = 0; p < 11; p++) {
                Tensor logits = model.decode(arena, single, ids(arena, tokens, p, p + 1));
                double[] chunked = p < 5 ? row(first, p) : row(second, p - 5);
                assertRowsClose(name + " position " + p, row(logits, 0), chunked);
            }
            assertRowsClose(name + " position 11", row(model.decode(arena, single, ids(arena, tokens, 11, 12)), 0),
                    row(model.decode(arena, once, ids(arena, tokens, 11, 12)), 0));
            assertEquals(12, once.length());
        }
    }

    /**
     * Under bf16 mixed precision the decode path rounds q, k, v and the products' inputs at the forward's points, so it
     * follows the bf16 forward; a rounding of an input that differs in the last fp32 bit can land on the other bf16
     * neighbour, hence a looser bound than in fp32.
     */
    @ParameterizedTest(name = "{0}")
    @MethodSource("denseModels")
    void followsTheForwardUnderBf16(String name, ModelConfig config) {
        int[] tokens = new SplittableRandom(9).ints(CONTEXT, 0, config.vocabSize()).toArray();
        try (Gpt model = Gpt.create(config, pool, DType.F32, 11);
             Bf16Precision bf16 = new Bf16Precision(pool);
             KvCache cache = new KvCache(config, pool);
             StepArena arena = new StepArena(pool)) {
            model.parameters().usePrecision(bf16);
            Tensor full = model.logits(arena, ids(arena, tokens, 0, CONTEXT));
            double worst = 0;
            for (int p = 0; p < CONTEXT; p++) {
                double[] expected = row(full, p), actual = row(model.decode(arena, cache, ids(arena, tokens, p, p + 1)), 0);
                double max = 0, diff = 0;
                for (int j = 0; j < expected.length; j++) {
                    max = Math.max(max, Math.abs(expected[j]));
                    diff = Math.max(diff, Math.abs(expected[j] - actual[j]));
                }
                worst = Math.max(worst, diff / max);
            }
            System.out.printf("bf16 %s: decode vs forward, worst relative logit diff %.3g%n", name, worst);
            assertTrue(worst < BF16_TOLERANCE, name + ": bf16 decode differs from the bf16 forward by " + worst + " of the largest logit");
        }
    }

    @Test
    void badCallsSayWhatToDo() {
        ModelConfig config = ModelConfig.gpt(50, CONTEXT, 2, 16, 2);
        try (Gpt model = Gpt.create(config, pool, DType.F32, 1);
             KvCache cache = new KvCache(config, pool);
             StepArena arena = new StepArena(pool)) {
            int[] tokens = new int[CONTEXT];
            model.decode(arena, cache, ids(arena, tokens, 0, 10));
            var e = assertThrows(IllegalArgumentException.class, () -> model.decode(arena, cache, ids(arena, tokens, 0, 7)));
            assertTrue(e.getMessage().contains("feed at most 6") && e.getMessage().contains("clear the cache"), e.getMessage());
            assertEquals(10, cache.length(), "a refused call leaves the cache as it was");

            Tensor floats = arena.allocate(DType.F32, 1, 2);
            e = assertThrows(IllegalArgumentException.class, () -> model.decode(arena, cache, floats));
            assertTrue(e.getMessage().contains("i32 [1, T]"), e.getMessage());
            Tensor batch = arena.allocate(MemoryCategory.BUFFERS, DType.I32, 2, 1);
            e = assertThrows(IllegalArgumentException.class, () -> model.decode(arena, cache, batch));
            assertTrue(e.getMessage().contains("one sequence"), e.getMessage());

            ModelConfig other = ModelConfig.gpt(50, CONTEXT, 3, 16, 2);
            try (KvCache wrong = new KvCache(other, pool)) {
                e = assertThrows(IllegalArgumentException.class, () -> model.decode(arena, wrong, ids(arena, tokens, 0, 1)));
                assertTrue(e.getMessage().contains("new KvCache(model.config(), pool)"), e.getMessage());
            }

            // a pipeline stage's part (embedding and block 0 only)
            GptPart.Span first = new GptPart.Span(true, 0, 1, false);
            try (ParameterSet params = Gpt.declare(config, List.of(first), true).allocate(pool, DType.F32)) {
                GptPart part = new GptPart(config, params, first);
                e = assertThrows(IllegalArgumentException.class, () -> part.decode(arena, cache, ids(arena, tokens, 0, 1)));
                assertTrue(e.getMessage().contains("whole model on one rank") && e.getMessage().contains("Checkpoint.loadParameters"),
                        e.getMessage());
            }
        }
        // rank 0 of a tensor-parallel pair (its collectives are never reached: decode refuses first)
        TensorParallel pair = new TensorParallel() {
            @Override public int size() { return 2; }
            @Override public int tpRank() { return 0; }
            @Override public void allReduceSum(Tensor buffer) { throw new AssertionError("no collectives"); }
            @Override public void allReduceMax(Tensor buffer) { throw new AssertionError("no collectives"); }
            @Override public void allGather(Tensor output, Tensor input) { throw new AssertionError("no collectives"); }
            @Override public void reduceScatterSum(Tensor output, Tensor input) { throw new AssertionError("no collectives"); }
        };
        GptPart.Span whole = GptPart.Span.whole(config);
        try (ParameterSet params = Gpt.declare(config, List.of(whole), false, pair).allocate(pool, DType.F32);
             KvCache cache = new KvCache(config, pool);
             StepArena arena = new StepArena(pool)) {
            GptPart part = new GptPart(config, params, whole, Recompute.NONE, 1, pair);
            var e = assertThrows(IllegalArgumentException.class, () -> part.decode(arena, cache, ids(arena, new int[]{1}, 0, 1)));
            assertTrue(e.getMessage().contains("tp=2") && e.getMessage().contains("whole model on one rank"), e.getMessage());
        }
        ModelConfig top = ModelConfig.gpt(50, CONTEXT, 1, 16, 2).withTopQueryLayer(true);
        assertFalse(Gpt.canDecode(top));
        try (Gpt model = Gpt.create(top, pool, DType.F32, 1); KvCache cache = new KvCache(top, pool); StepArena arena = new StepArena(pool)) {
            var e = assertThrows(IllegalArgumentException.class, () -> model.decode(arena, cache, ids(arena, new int[]{1}, 0, 1)));
            assertTrue(e.getMessage().contains("top query layer") && e.getMessage().contains("recomputing"), e.getMessage());
        }
        ModelConfig config64 = ModelConfig.gpt(50, CONTEXT, 1, 16, 2);
        try (Gpt model = Gpt.create(config64, pool, DType.F64, 1); KvCache cache = new KvCache(config64, pool);
             StepArena arena = new StepArena(pool)) {
            var e = assertThrows(IllegalArgumentException.class, () -> model.decode(arena, cache, ids(arena, new int[]{1}, 0, 1)));
            assertTrue(e.getMessage().contains("f32"), e.getMessage());
        }
    }

    @Test
    void theCacheIsChargedToItsPoolUntilClosed() {
        ModelConfig config = shortened(ModelConfig.preset("llama-tiny"));
        MemoryPool own = MemoryPool.unlimited("cache");
        long before = own.liveBytes(MemoryCategory.ACTIVATIONS);
        try (KvCache cache = new KvCache(config, own)) {
            long expected = 2L * config.layers() * CONTEXT * config.kvHeads() * config.headSize() * 4;
            assertEquals(expected, cache.bytes());
            assertEquals(expected, own.liveBytes(MemoryCategory.ACTIVATIONS) - before);
        }
        assertEquals(before, own.liveBytes(MemoryCategory.ACTIVATIONS));
    }
}
