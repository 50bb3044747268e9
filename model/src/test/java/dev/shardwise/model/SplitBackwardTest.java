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

import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;
import java.util.stream.Stream;

import static org.junit.jupiter.api.Assertions.*;

/**
 * A part's backward split into B ({@link GptPart#backwardInput}) and W ({@link GptPart#backwardWeight}) against
 * the whole {@link GptPart#backward}: over several micro-batches, with each micro-batch's W deferred past the next
 * micro-batch's B as ZB-H1 runs them, every input gradient and every parameter gradient must be bit-identical, for
 * every model variant and recompute policy, the model whole (tied head and embedding in one part) and cut in three.
 */
class SplitBackwardTest {
    private static final int B = 2, T = 6, MICRO_BATCHES = 3;
    private final MemoryPool pool = MemoryPool.unlimited("rank 0");

    static Stream<Arguments> variants() {
        ModelConfig gpt = ModelConfig.gpt(37, 8, 4, 8, 2);
        List<ModelConfig> configs = List.of(gpt, gpt.withTopQueryLayer(true), gpt.withResidual(ModelConfig.Residual.POST_LN),
                gpt.withResidual(ModelConfig.Residual.DEEPNORM), ModelConfig.llama(37, 8, 4, 8, 4, 2, 12));
        List<String> names = List.of("gpt-2", "top query", "post-LN", "DeepNorm", "llama");
        List<Arguments> out = new ArrayList<>();
        for (int i = 0; i < configs.size(); i++) {
            for (Recompute policy : Recompute.values()) out.add(Arguments.of(names.get(i), configs.get(i), policy));
        }
        return out.stream();
    }

    private static final List<List<GptPart.Span>> CUTS = List.of(
            List.of(new GptPart.Span(true, 0, 4, true)),
            List.of(new GptPart.Span(true, 0, 1, false), new GptPart.Span(false, 1, 3, false), new GptPart.Span(false, 3, 4, true)));

    /** Input gradients per (micro-batch, part) and final parameter gradients per part, as float bits. */
    private record Outcome(List<float[]> inputGradients, List<float[]> parameterGradients) { }

    @ParameterizedTest(name = "{0}, recompute {2}")
    @MethodSource("variants")
    void splitBackwardGivesTheWholeBackwardsBitsWithEachWDeferredPastTheNextB(String name, ModelConfig config, Recompute policy) {
        int checked = 0;
        for (List<GptPart.Span> cut : CUTS) {
            Outcome whole = run(config, policy, cut, false);
            Outcome split = run(config, policy, cut, true);
            String what = name + " recompute " + policy + " cut " + cut;
            assertEquals(whole.inputGradients().size(), split.inputGradients().size(), what + ": input gradients");
            for (int i = 0; i < whole.inputGradients().size(); i++) {
                assertArrayEquals(whole.inputGradients().get(i), split.inputGradients().get(i),
                        what + ": input gradient " + i + " (micro-batch-major, last part first) differs from the whole backward's");
                checked++;
            }
            for (int i = 0; i < cut.size(); i++) {
                assertArrayEquals(whole.parameterGradients().get(i), split.parameterGradients().get(i),
                        what + ": parameter gradients of part " + cut.get(i) + " differ from the whole backward's");
                checked++;
            }
        }
        assertTrue(checked > CUTS.size(), "compared input and parameter gradients");
        assertEquals(0, pool.liveBytes(), "everything freed");
    }

    /**
     * Forward of every micro-batch through every part, then backward: whole, micro-batch by micro-batch; or split,
     * B of micro-batch k through every part followed by W of micro-batch k−1 (W of the last at the end).
     */
    private Outcome run(ModelConfig config, Recompute policy, List<GptPart.Span> cut, boolean split) {
        List<ParameterSet> sets = new ArrayList<>();
        List<StepArena> arenas = new ArrayList<>();
        List<Tensor> batches = new ArrayList<>();
        try {
            List<GptPart> parts = new ArrayList<>();
            for (GptPart.Span span : cut) {
                ParameterSet params = Gpt.declare(config, List.of(span), cut.size() > 1).allocate(pool, DType.F32);
                sets.add(params);
                params.initialize(5);
                params.zeroGrads();
                parts.add(new GptPart(config, params, span, policy, 1));
            }
            List<List<GptPart.Pass>> passes = new ArrayList<>();
            for (int k = 0; k < MICRO_BATCHES; k++) {
                StepArena arena = new StepArena(pool);
                arenas.add(arena);
                Tensor tokens = ids(10 + k, config.vocabSize()), targets = ids(20 + k, config.vocabSize());
                batches.add(tokens);
                batches.add(targets);
                List<GptPart.Pass> mine = new ArrayList<>();
                Tensor activation = null;
                for (GptPart part : parts) {
                    GptPart.Pass p = part.forward(arena, tokens, targets, activation, true, 1.0 / MICRO_BATCHES);
                    mine.add(p);
                    activation = p.output();
                }
                passes.add(mine);
            }
            List<float[]> inputGradients = new ArrayList<>();
            for (int k = 0; k < MICRO_BATCHES; k++) {
                Tensor gradient = null;
                for (int i = parts.size() - 1; i >= 0; i--) {
                    GptPart part = parts.get(i);
                    gradient = split ? part.backwardInput(arenas.get(k), passes.get(k).get(i), gradient)
                            : part.backward(arenas.get(k), passes.get(k).get(i), gradient);
                    if (gradient != null) inputGradients.add(gradient.toFloatArray());
                }
                if (split && k > 0) weights(parts, passes.get(k - 1));
            }
            if (split) weights(parts, passes.getLast());
            List<float[]> parameterGradients = new ArrayList<>();
            for (ParameterSet set : sets) parameterGradients.add(set.grads().toFloatArray());
            return new Outcome(inputGradients, parameterGradients);
        } finally {
            arenas.forEach(StepArena::close);
            batches.forEach(Tensor::close);
            sets.forEach(ParameterSet::close);
        }
    }

    private static void weights(List<GptPart> parts, List<GptPart.Pass> passes) {
        for (int i = parts.size() - 1; i >= 0; i--) parts.get(i).backwardWeight(passes.get(i));
    }

    /** Records every hook call, allowing the split. */
    private static final class Recording implements Gpt.Hooks {
        final List<String> calls = new ArrayList<>();

        @Override
        public boolean allowsDeferredWeightGradients() { return true; }

        @Override
        public void beforeBackward(ParameterSet.Unit unit) { calls.add("before " + unit.name()); }

        @Override
        public void afterBackward(ParameterSet.Unit unit) { calls.add("after " + unit.name()); }
    }

    @Test
    void bOpensEveryUnitAndWClosesThemInTheWholeBackwardsOrder() {
        ModelConfig config = ModelConfig.gpt(37, 8, 2, 8, 2).withTopQueryLayer(true);
        try (Gpt model = Gpt.create(config, pool, DType.F32, 5); Tensor tokens = ids(1, 37); Tensor targets = ids(2, 37);
             StepArena arena = new StepArena(pool)) {
            GptPart part = model.part();
            Recording hooks = new Recording();
            part.useHooks(hooks);
            part.backward(arena, part.forward(arena, tokens, targets, null, true, 1), null);
            List<String> whole = List.copyOf(hooks.calls);
            hooks.calls.clear();
            model.parameters().zeroGrads();
            GptPart.Pass pass = part.forward(arena, tokens, targets, null, true, 1);
            part.backwardInput(arena, pass, null);
            List<String> b = List.copyOf(hooks.calls);
            hooks.calls.clear();
            // wte's head gradient is not among them: the fused head and loss accumulate it in forward (its lookup
            // gradient still waits for W, checked below)
            double wteAfterB = maxAbs(model.parameters().get("wte").grad());
            for (String deferred : List.of("wpe", "top.qe", "h.0.attn.qkv.weight", "h.1.mlp.proj.bias", "top.attn.q.weight")) {
                assertEquals(0, maxAbs(model.parameters().get(deferred).grad()), deferred + "'s gradient waits for W");
            }
            assertNotEquals(0, maxAbs(model.parameters().get("h.0.ln1.weight").grad()), "a norm's dγ comes in B");
            Tensor wte = model.parameters().get("wte").grad();
            double[] wteBeforeW = wte.toDoubleArray();
            part.backwardWeight(pass);
            assertFalse(java.util.Arrays.equals(wteBeforeW, wte.toDoubleArray()), "wte's lookup gradient comes in W (B left " + wteAfterB + ")");
            List<String> w = List.copyOf(hooks.calls);
            for (String deferred : List.of("wte", "wpe", "top.qe", "h.0.attn.qkv.weight", "h.1.mlp.proj.bias", "top.attn.q.weight")) {
                assertNotEquals(0, maxAbs(model.parameters().get(deferred).grad()), deferred + "'s gradient after W");
            }
            assertEquals(whole.stream().filter(c -> c.startsWith("before")).toList(), b, "B makes every beforeBackward call, in order");
            assertEquals(whole.stream().filter(c -> c.startsWith("after")).toList(), w, "W makes every afterBackward call, in order");
            assertEquals(List.of("after final", "after h.1", "after h.0", "after embeddings"), w, "W closes the units");
        }
    }

    @Test
    void theHalvesMustComeInOrderOncePerPassAndOnlyWithHooksThatAllowIt() {
        ModelConfig config = ModelConfig.gpt(37, 8, 2, 8, 2);
        try (Gpt model = Gpt.create(config, pool, DType.F32, 5); Tensor tokens = ids(1, 37); Tensor targets = ids(2, 37);
             StepArena arena = new StepArena(pool)) {
            GptPart part = model.part();
            GptPart.Pass pass = part.forward(arena, tokens, targets, null, true, 1);
            assertThrows(IllegalStateException.class, () -> part.backwardWeight(pass), "W before B");
            part.backwardInput(arena, pass, null);
            assertThrows(IllegalStateException.class, () -> part.backwardInput(arena, pass, null), "B twice");
            assertThrows(IllegalStateException.class, () -> part.backward(arena, pass, null), "whole backward after B");
            part.backwardWeight(pass);
            assertThrows(IllegalStateException.class, () -> part.backwardWeight(pass), "W twice");

            part.useHooks(new Gpt.Hooks() { });   // binds per-unit state, as far as the part can tell
            assertFalse(part.canSplitBackward(), "hooks that do not allow deferred weight gradients");
            GptPart.Pass next = part.forward(arena, tokens, targets, null, true, 1);
            IllegalStateException e = assertThrows(IllegalStateException.class, () -> part.backwardInput(arena, next, null));
            assertTrue(e.getMessage().contains("run backward whole"), e.getMessage());
            part.backward(arena, next, null);   // the whole backward still runs
        }
    }

    private static double maxAbs(Tensor t) {
        double m = 0;
        for (double v : t.toDoubleArray()) m = Math.max(m, Math.abs(v));
        return m;
    }

    private Tensor ids(long seed, int vocab) {
        Tensor t = Tensor.allocate(pool, MemoryCategory.BUFFERS, DType.I32, B, T);
        SplittableRandom r = new SplittableRandom(seed);
        for (int i = 0; i < B * T; i++) t.set(r.nextInt(vocab), i / T, i % T);
        return t;
    }
}
