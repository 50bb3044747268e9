package dev.shardwise.model;

import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.memory.StepArena;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;
import org.junit.jupiter.api.Test;

import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.*;

/** A model cut into parts, each with its own parameters, computes the whole model's loss and gradients. */
class GptPartTest {
    private static final int B = 2, T = 6;
    private final MemoryPool pool = MemoryPool.unlimited("rank 0");

    private Tensor ids(long seed, int vocab) {
        Tensor t = Tensor.allocate(pool, MemoryCategory.BUFFERS, DType.I32, B, T);
        SplittableRandom r = new SplittableRandom(seed);
        for (int i = 0; i < B * T; i++) t.set(r.nextInt(vocab), i / T, i % T);
        return t;
    }

    @Test
    void partsChainedMatchTheWholeModelForEveryVariant() {
        List<ModelConfig> configs = List.of(ModelConfig.gpt(37, 8, 4, 8, 2),
                ModelConfig.gpt(37, 8, 4, 8, 2).withTopQueryLayer(true),
                ModelConfig.gpt(37, 8, 4, 8, 2).withResidual(ModelConfig.Residual.POST_LN),
                ModelConfig.llama(37, 8, 4, 8, 4, 2, 12));
        for (ModelConfig config : configs) {
            List<List<GptPart.Span>> cuts = List.of(
                    List.of(new GptPart.Span(true, 0, 1, false), new GptPart.Span(false, 1, 3, false), new GptPart.Span(false, 3, 4, true)),
                    List.of(new GptPart.Span(true, 0, 0, false), new GptPart.Span(false, 0, 4, false), new GptPart.Span(false, 4, 4, true)),
                    List.of(new GptPart.Span(true, 0, 2, false), new GptPart.Span(false, 2, 4, true)));
            for (List<GptPart.Span> cut : cuts) check(config, cut);
        }
    }

    private void check(ModelConfig config, List<GptPart.Span> cut) {
        String name = config + " cut " + cut;
        try (Gpt whole = Gpt.create(config, pool, DType.F64, 5); Tensor tokens = ids(1, config.vocabSize());
             Tensor targets = ids(2, config.vocabSize()); StepArena arena = new StepArena(pool)) {
            whole.parameters().zeroGrads();
            Gpt.Pass pass = whole.forward(arena, tokens, targets, 0.5);
            whole.backward(arena, pass);

            List<ParameterSet> sets = new ArrayList<>();
            List<GptPart> parts = new ArrayList<>();
            for (GptPart.Span span : cut) {
                ParameterSet params = Gpt.declare(config, List.of(span), true).allocate(pool, DType.F64);
                params.initialize(5);
                params.zeroGrads();
                sets.add(params);
                parts.add(new GptPart(config, params, span));
            }
            List<GptPart.Pass> passes = new ArrayList<>();
            Tensor activation = null;
            for (GptPart part : parts) {
                GptPart.Pass p = part.forward(arena, tokens, targets, activation, true, 0.5);
                passes.add(p);
                activation = p.output();
            }
            assertNull(activation, "the head part has no output");
            assertEquals(pass.loss(), passes.getLast().loss(), 1e-13 * Math.abs(pass.loss()), name + " loss");
            Tensor gradient = null;
            for (int i = parts.size() - 1; i >= 0; i--) gradient = parts.get(i).backward(arena, passes.get(i), gradient);
            assertNull(gradient, "the embedding part returns no input gradient");

            for (Parameter p : whole.parameters().parameters()) {
                double[] expected = p.grad().toDoubleArray();
                double[] got = new double[expected.length];
                int holders = 0;
                for (ParameterSet set : sets) {
                    if (set.parameters().stream().noneMatch(q -> q.name().equals(p.name()))) continue;
                    holders++;
                    double[] part = set.get(p.name()).grad().toDoubleArray();
                    for (int i = 0; i < got.length; i++) got[i] += part[i];   // the tied wte: embedding + head copies
                    assertArrayEquals(p.value().toDoubleArray(), set.get(p.name()).value().toDoubleArray(), 0,
                            name + " " + p.name() + " initialised alike in every part");
                }
                assertEquals(p.name().equals("wte") ? 2 : 1, holders, name + " " + p.name() + " held by");
                double scale = 0;
                for (double e : expected) scale = Math.max(scale, Math.abs(e));
                assertArrayEquals(expected, got, 1e-12 * Math.max(scale, 1e-3), name + " gradient of " + p.name());
            }
            sets.forEach(ParameterSet::close);
        }
    }
}
