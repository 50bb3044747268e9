package dev.shardwise.parallel.tensor;

import dev.shardwise.comm.Communicator;
import dev.shardwise.comm.LocalCluster;
import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.memory.StepArena;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;
import dev.shardwise.model.ExpertParallel;
import dev.shardwise.model.Gpt;
import dev.shardwise.model.GptPart;
import dev.shardwise.model.ModelConfig;
import dev.shardwise.model.MoeConfig;
import dev.shardwise.model.Parameter;
import dev.shardwise.model.ParameterSet;
import dev.shardwise.model.Recompute;
import dev.shardwise.model.TensorParallel;
import dev.shardwise.parallel.expert.CommunicatorExpertParallel;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.*;

/**
 * The tensor-parallel layers (Shoeybi et al. 2019: column- and row-parallel linears, parallel attention heads with
 * GQA, split GELU and SwiGLU MLPs, vocabulary-parallel embedding and cross-entropy) against the single-rank model,
 * one forward and backward of a whole {@link GptPart} in float64 with tp ranks as threads: the loss and every
 * parameter gradient (each rank's slice against the same slice of the single rank's gradient) agree to round-off;
 * also under selective and full recompute (whose backward runs the forward's all-reduces again); and each rank
 * initialises exactly its slice of the single rank's values. Under sequence parallelism (Korthikanti et al. 2022)
 * the norms' gradients are each rank's partial sums over its positions, summed over the group here as the update
 * sums them. Mixture-of-experts blocks keep each expert's tp split (Megatron's expert tensor parallelism), with and
 * without sequence parallelism (the router and the experts then run over the gathered sequence).
 */
class TensorParallelLayersTest {
    static final int B = 2, T = 8;
    static final Map<String, ModelConfig> MODELS = Map.of(
            "gpt", ModelConfig.gpt(64, 16, 2, 32, 4),
            "gpt post-ln", ModelConfig.gpt(64, 16, 2, 32, 4).withResidual(ModelConfig.Residual.POST_LN),
            "llama gqa", ModelConfig.llama(64, 16, 2, 32, 4, 2, 64),
            "llama mha", ModelConfig.llama(64, 16, 2, 32, 4, 4, 64),
            "llama kv 1", ModelConfig.llama(64, 16, 2, 32, 4, 1, 64),
            "gpt vocab 61", ModelConfig.gpt(61, 16, 2, 32, 4),
            "pangu top query", ModelConfig.gpt(64, 16, 2, 32, 4).withTopQueryLayer(true),
            "pangu top query gqa", new ModelConfig(64, 16, 2, 32, 4, 1, 64, ModelConfig.Norm.LAYER_NORM, ModelConfig.Mlp.GELU,
                    ModelConfig.Positions.LEARNED, ModelConfig.Residual.PRE_LN, true, true, 1e-5),
            // mixtures of experts: each expert (routed or shared) split like an MLP, the router whole
            "gpt moe", ModelConfig.gpt(64, 16, 2, 32, 4).withMoe(MoeConfig.of(4, 2, 1, 24)),
            "llama moe shared", ModelConfig.llama(64, 16, 2, 32, 4, 2, 64).withMoe(MoeConfig.of(4, 2, 1, 24).withSharedExperts(1)));

    /** A rank of a tp group that performs no collectives: enough to declare and initialise a slice. */
    record Declared(int size, int tpRank) implements TensorParallel {
        @Override public void allReduceSum(Tensor buffer) { throw new UnsupportedOperationException(); }
        @Override public void allReduceMax(Tensor buffer) { throw new UnsupportedOperationException(); }
        @Override public void allGather(Tensor output, Tensor input) { throw new UnsupportedOperationException(); }
        @Override public void reduceScatterSum(Tensor output, Tensor input) { throw new UnsupportedOperationException(); }
    }

    static Tensor ids(MemoryPool pool, int vocab, long seed) {
        Tensor t = Tensor.allocate(pool, MemoryCategory.BUFFERS, DType.I32, B, T);
        SplittableRandom random = new SplittableRandom(seed);
        for (int b = 0; b < B; b++) for (int i = 0; i < T; i++) t.set(random.nextInt(vocab), b, i);
        return t;
    }

    /** Loss and every gradient (by name, this rank's slice) after one forward and backward over a fixed batch. */
    record Result(double loss, Map<String, double[]> grads, Map<String, ParameterSet.Slice> slices) { }

    static Result run(ModelConfig config, TensorParallel tp, MemoryPool pool, boolean split, Recompute recompute) {
        return run(config, tp, null, pool, split, recompute);
    }

    /**
     * As above; over {@code tensor} (the tp group, null on one rank) the partial gradients (sequence-parallel norms,
     * replicated kv heads) are then summed as the update sums them, by {@link TensorParallelGradients}.
     */
    static Result run(ModelConfig config, TensorParallel tp, Communicator tensor, MemoryPool pool, boolean split,
                      Recompute recompute) {
        return run(config, tp, ExpertParallel.NONE, tensor, pool, split, recompute, 0);
    }

    /** As above, expert-parallel over {@code ep} too, on data rank {@code dataRank}'s batch (0: the one above). */
    static Result run(ModelConfig config, TensorParallel tp, ExpertParallel ep, Communicator tensor, MemoryPool pool, boolean split,
                      Recompute recompute, int dataRank) {
        GptPart.Span whole = GptPart.Span.whole(config);
        try (ParameterSet params = Gpt.declare(config, List.of(whole), false, tp, ep).allocate(pool, DType.F64);
             Tensor tokens = ids(pool, config.vocabSize(), 1 + 10L * dataRank);
             Tensor targets = ids(pool, config.vocabSize(), 2 + 10L * dataRank);
             StepArena arena = new StepArena(pool)) {
            params.initialize(7);
            targets.set(-1, 0, 3);   // an excluded position
            GptPart part = new GptPart(config, params, whole, recompute, 1, tp, ep);
            GptPart.Pass pass = part.forward(arena, tokens, targets, null, true, 1.0);
            if (split) {
                part.backwardInput(arena, pass, null);
                part.backwardWeight(pass);
            } else {
                part.backward(arena, pass, null);
            }
            if (tensor != null) {
                try (TensorParallelGradients partials = new TensorParallelGradients(tensor, params, pool)) {
                    boolean replicated = params.parameters().stream().anyMatch(p -> p.slice() != null && p.slice().replicated());
                    assertEquals(tp.sequenceParallel() || replicated, partials.active(),
                            "partial gradients exactly under sequence parallelism or replicated kv heads");
                    int all = Math.toIntExact(params.paddedCount());
                    partials.sum(params.grads(), new long[]{0}, new int[]{0}, new int[]{all});
                }
            }
            Map<String, double[]> grads = new HashMap<>();
            Map<String, ParameterSet.Slice> slices = new HashMap<>();
            for (Parameter p : params.parameters()) {
                grads.put(p.name(), p.grad().toDoubleArray());
                if (p.slice() != null) slices.put(p.name(), p.slice());
            }
            return new Result(pass.loss(), grads, slices);
        }
    }

    @ParameterizedTest(name = "{0}, tp {1}, split backward {2}, recompute {3}, sequence parallel {4}")
    @CsvSource({"gpt, 2, false, none, false", "gpt, 4, false, none, false", "gpt, 2, true, none, false",
            "gpt post-ln, 2, false, none, false", "llama gqa, 2, false, none, false", "llama gqa, 2, true, none, false",
            "llama mha, 4, false, none, false", "gpt vocab 61, 2, false, none, false", "gpt vocab 61, 4, false, none, false",
            "gpt, 2, false, selective, false", "gpt, 2, true, selective, false", "llama gqa, 2, false, full, false",
            "gpt, 2, false, none, true", "gpt, 4, true, none, true", "gpt post-ln, 2, false, selective, true",
            "llama gqa, 2, true, full, true", "gpt vocab 61, 2, false, full, true",
            "llama gqa, 4, false, none, false", "llama gqa, 4, true, selective, true", "llama kv 1, 2, false, none, false",
            "llama kv 1, 4, false, full, true", "pangu top query, 2, false, none, false", "pangu top query, 4, true, none, false",
            "pangu top query, 2, false, selective, true", "pangu top query, 2, true, none, true",
            "pangu top query gqa, 2, false, none, true", "pangu top query gqa, 4, true, none, false",
            "gpt moe, 2, false, none, false", "gpt moe, 4, true, full, false", "llama moe shared, 2, true, selective, false",
            "llama moe shared, 4, false, none, false", "gpt moe, 2, false, none, true", "gpt moe, 4, true, full, true",
            "gpt moe, 2, true, selective, true", "llama moe shared, 2, true, selective, true", "llama moe shared, 4, false, none, true"})
    void gptPartMatchesTheSingleRankInFloat64(String model, int tp, boolean split, String recomputeName, boolean sequence) {
        ModelConfig config = MODELS.get(model);
        Recompute recompute = Recompute.parse(recomputeName);
        Result serial = run(config, TensorParallel.NONE, MemoryPool.unlimited("serial"), split, Recompute.NONE);
        List<Result> ranks = LocalCluster.run(tp, ctx -> run(config, new CommunicatorTensorParallel(ctx.world(), sequence),
                ctx.world(), ctx.memory(), split, recompute));
        int compared = 0;
        double worst = 0;
        for (int r = 0; r < tp; r++) {
            Result got = ranks.get(r);
            assertEquals(serial.loss(), got.loss(), 1e-13 * Math.abs(serial.loss()), model + " tp " + tp + " rank " + r + ": loss");
            assertEquals(serial.grads().keySet(), got.grads().keySet(), model + " tp " + tp + ": parameter names");
            for (String name : serial.grads().keySet()) {
                ParameterSet.Slice slice = got.slices().get(name);
                double[] expected = slice == null ? serial.grads().get(name) : slice.take(serial.grads().get(name));
                double[] actual = got.grads().get(name);
                assertEquals(expected.length, actual.length, name + " elements");
                double max = 0, scale = 0;
                for (int i = 0; i < expected.length; i++) {
                    max = Math.max(max, Math.abs(expected[i] - actual[i]));
                    scale = Math.max(scale, Math.abs(expected[i]));
                }
                assertTrue(max <= 1e-12 * Math.max(scale, 1e-3), model + " tp " + tp + " rank " + r + ": gradient of " + name
                        + " max abs diff " + max + " (largest |g| " + scale + ")");
                worst = Math.max(worst, max);
                compared++;
            }
        }
        System.out.printf("%s tp %d%s%s recompute %s: loss %.15f, %d gradients compared, max abs diff %.2e%n", model, tp,
                sequence ? " sequence-parallel" : "", split ? " split backward" : "", recomputeName, serial.loss(), compared, worst);
        assertTrue(compared > 0, "no gradient compared");
    }

    /**
     * ep 2 × tp 2 with sequence parallelism (4 ranks, tp ranks adjacent; Megatron-Core's MoE layout): each tp group
     * gathers its own batch's sequence and dispatches it to the experts' ep ranks (those of the same tp rank). Every
     * rank's loss equals the single rank's on its batch; its non-expert gradients are its tp slices of the single
     * rank's (the sequence-parallel norms' partial sums summed over the tp group); an expert's gradient on the rank
     * holding it is its tp slice of the sum over both batches of the single rank's. In float64, to round-off.
     */
    @ParameterizedTest(name = "{0}, recompute {1}, split backward {2}")
    @CsvSource({"gpt moe, none, false", "llama moe shared, full, true"})
    void expertAndSequenceParallelMoeMatchesTheSingleRankInFloat64(String model, String recomputeName, boolean split) {
        ModelConfig config = MODELS.get(model);
        Recompute recompute = Recompute.parse(recomputeName);
        int tpSize = 2, epSize = 2;
        List<Result> serial = List.of(run(config, TensorParallel.NONE, ExpertParallel.NONE, null, MemoryPool.unlimited("serial"), split,
                Recompute.NONE, 0), run(config, TensorParallel.NONE, ExpertParallel.NONE, null, MemoryPool.unlimited("serial"), split,
                Recompute.NONE, 1));
        List<Result> ranks = LocalCluster.run(tpSize * epSize, ctx -> {
            int replica = ctx.world().rank() / tpSize, tpRank = ctx.world().rank() % tpSize;
            try (Communicator tensor = ctx.world().split(replica, tpRank, "tp");
                 Communicator experts = ctx.world().split(tpRank, replica, "ep")) {
                return run(config, new CommunicatorTensorParallel(tensor, true), new CommunicatorExpertParallel(experts), tensor,
                        ctx.memory(), split, recompute, replica);
            }
        });
        int compared = 0, expertsCompared = 0;
        for (int r = 0; r < tpSize * epSize; r++) {
            int replica = r / tpSize;
            String where = model + " ep 2 x tp 2 sp rank " + r;
            Result got = ranks.get(r), reference = serial.get(replica);
            assertEquals(reference.loss(), got.loss(), 1e-13 * Math.abs(reference.loss()), where + ": loss");
            for (String name : got.grads().keySet()) {
                double[] global;
                if (name.contains(".experts.")) {   // its tokens came from both batches
                    global = serial.get(0).grads().get(name).clone();
                    double[] other = serial.get(1).grads().get(name);
                    for (int i = 0; i < global.length; i++) global[i] += other[i];
                    expertsCompared++;
                } else {
                    global = reference.grads().get(name);
                }
                assertNotNull(global, where + ": " + name + " exists in the single-rank model");
                ParameterSet.Slice slice = got.slices().get(name);
                double[] expected = slice == null ? global : slice.take(global), actual = got.grads().get(name);
                assertEquals(expected.length, actual.length, where + ": " + name + " elements");
                double max = 0, scale = 0;
                for (int i = 0; i < expected.length; i++) {
                    max = Math.max(max, Math.abs(expected[i] - actual[i]));
                    scale = Math.max(scale, Math.abs(expected[i]));
                }
                assertTrue(max <= 1e-12 * Math.max(scale, 1e-3), where + ": gradient of " + name + " max abs diff " + max
                        + " (largest |g| " + scale + ")");
                compared++;
            }
        }
        assertTrue(compared > 0 && expertsCompared > 0, "gradients compared: " + compared + ", of experts " + expertsCompared);
    }

    @ParameterizedTest(name = "{0}, tp {1}")
    @CsvSource({"gpt, 2", "gpt, 4", "llama gqa, 2", "llama gqa, 4", "llama kv 1, 2", "gpt vocab 61, 4", "pangu top query, 2"})
    void eachRankInitialisesExactlyItsSliceOfTheSingleRankValues(String model, int tp) {
        ModelConfig config = MODELS.get(model);
        MemoryPool pool = MemoryPool.unlimited("init");
        GptPart.Span whole = GptPart.Span.whole(config);
        try (ParameterSet serial = Gpt.declare(config, List.of(whole), false).allocate(pool, DType.F32)) {
            serial.initialize(7);
            int sliced = 0;
            for (int r = 0; r < tp; r++) {
                try (ParameterSet mine = Gpt.declare(config, List.of(whole), false, new Declared(tp, r)).allocate(pool, DType.F32)) {
                    mine.initialize(7);
                    for (Parameter p : mine.parameters()) {
                        double[] global = serial.get(p.name()).value().toDoubleArray();
                        double[] expected = p.slice() == null ? global : p.slice().take(global);
                        assertArrayEquals(expected, p.value().toDoubleArray(), 0, model + " tp " + tp + " rank " + r + ": " + p.name()
                                + " bit for bit" + (p.slice() == null ? "" : " (" + p.slice() + ")"));
                        if (p.slice() != null) sliced++;
                    }
                }
            }
            assertTrue(sliced > 0, "no parameter was sliced");
        }
    }

    @Test
    void aSequenceLengthTpDoesNotDivideIsRefusedUnderSequenceParallelism() {
        ModelConfig config = MODELS.get("gpt");
        RuntimeException e = assertThrows(RuntimeException.class, () -> LocalCluster.run(2, ctx -> {
            TensorParallel tp = new CommunicatorTensorParallel(ctx.world(), true);
            MemoryPool pool = ctx.memory();
            GptPart.Span whole = GptPart.Span.whole(config);
            try (ParameterSet params = Gpt.declare(config, List.of(whole), false, tp).allocate(pool, DType.F32);
                 Tensor tokens = Tensor.allocate(pool, MemoryCategory.BUFFERS, DType.I32, B, 7);
                 StepArena arena = new StepArena(pool)) {
                return new GptPart(config, params, whole, Recompute.NONE, 1, tp).forward(arena, tokens, tokens, null, true, 1).loss();
            }
        }));
        Throwable cause = e;
        while (cause.getCause() != null && !(cause instanceof IllegalArgumentException)) cause = cause.getCause();
        String message = cause.getMessage();
        assertTrue(cause instanceof IllegalArgumentException && message.contains("T=7") && message.contains("tp=2")
                && message.contains("multiple of 2"), String.valueOf(message));
    }

    @Test
    void kvHeadsTpNeitherDividesNorMultipliesAreRefusedWithAFix() {
        ModelConfig config = ModelConfig.llama(64, 16, 2, 24, 6, 3, 64);   // 6 heads, 3 kv heads: tp 2 fits neither way
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> Gpt.declare(config, List.of(GptPart.Span.whole(config)), false, new Declared(2, 0)));
        assertTrue(e.getMessage().contains("tp=2") && e.getMessage().contains("kvHeads=3") && e.getMessage().contains("{1, 3, 6}"),
                e.getMessage());
    }
}
