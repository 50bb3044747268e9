package dev.shardwise.train;

import dev.shardwise.comm.LocalCluster;
import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;
import dev.shardwise.model.Gpt;
import dev.shardwise.model.GptPart;
import dev.shardwise.model.ModelConfig;
import dev.shardwise.model.Parameter;
import dev.shardwise.model.ParameterSet;
import dev.shardwise.model.PipelineCut;
import dev.shardwise.model.Recompute;
import dev.shardwise.model.TensorParallel;
import dev.shardwise.parallel.ParallelLayout;
import dev.shardwise.parallel.ProcessGroups;
import dev.shardwise.parallel.StageGradients;
import dev.shardwise.parallel.ZeroStage;
import dev.shardwise.parallel.pipeline.ScheduleKind;
import dev.shardwise.parallel.tensor.CommunicatorTensorParallel;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.*;

/**
 * Tensor parallelism (Shoeybi et al. 2019) against the single-rank run (ARCHITECTURE idea 5): same seed, same global
 * batch and micro-batches, 20 steps through {@link TrainStep}; losses within 1e-5 relative and the parameters, each
 * rank's slices put back into the global tensors by their {@link ParameterSet.Slice}, within ||Δ||/||θ|| <= 1e-5, for
 * tp 2 and 4, tp 2 x pp 2, tp 2 x dp 2 under ZeRO 1, 2 and 3, a GQA LLaMA-like model at tp 2, and a vocabulary tp does
 * not divide (padded rows); with sequence parallelism (Korthikanti et al. 2022) tp 2 and tp 2 x pp 2 x dp 2 under
 * ZeRO 3 with selective recompute; grouped-query attention with 8 heads and 4 kv heads at tp 2 and 4, and with 2 kv
 * heads at tp 4 (each kv head replicated on two ranks, its gradient summed over them); PanGu-α's top query layer at tp 2
 * and at tp 2 x pp 2 with sequence parallelism. In float64 the split model computes the single rank's math to round-off; a layout
 * repeats bit for bit (the all-reduces sum in rank order).
 */
class TensorParallelParityTest {
    static final ModelConfig GPT = ModelConfig.gpt(64, 16, 4, 32, 4);
    static final ModelConfig LLAMA = ModelConfig.llama(64, 16, 4, 32, 4, 2, 64);   // GQA: 4 query heads, 2 kv heads
    static final ModelConfig LLAMA_8_4 = ModelConfig.llama(64, 16, 2, 32, 8, 4, 64);   // llama-tiny's 8 heads, 4 kv heads
    static final ModelConfig LLAMA_8_2 = ModelConfig.llama(64, 16, 2, 32, 8, 2, 64);   // 2 kv heads: replicated at tp 4
    static final ModelConfig LLAMA_4_1 = ModelConfig.llama(64, 16, 2, 32, 4, 1, 64);   // 1 kv head: replicated at tp 2
    static final ModelConfig PANGU = ModelConfig.gpt(64, 16, 4, 32, 4).withTopQueryLayer(true);   // PanGu-α's top query layer
    static final ModelConfig ODD_VOCAB = ModelConfig.gpt(61, 16, 4, 32, 4);        // 61 = prime: padded at tp 2 and 4
    static final int GLOBAL_BATCH = 4, SEQ = 16, STEPS = 20, MICRO_BATCHES = 2;
    static final double TOLERANCE = 1e-5;

    /** Deterministic micro-batch k of step s: [GLOBAL_BATCH, SEQ + 1] token ids. */
    static int[] microBatch(ModelConfig model, int step, int k) {
        SplittableRandom random = new SplittableRandom(1000 + step * 97L + k);
        int[] out = new int[GLOBAL_BATCH * (SEQ + 1)];
        for (int i = 0; i < out.length; i++) out[i] = random.nextInt(model.vocabSize());
        return out;
    }

    /** Per-step losses, gradient norms and the final parameters by global name, whole. */
    record Outcome(double[] losses, double[] norms, Map<String, double[]> params) { }

    static Outcome train(ModelConfig model, ParallelLayout layout, DType dtype) {
        List<Map<String, Object>> ranks = LocalCluster.run(layout.worldSize(), LocalCluster.Options.defaults(), ctx -> {
            try (ProcessGroups groups = new ProcessGroups(layout, ctx.world())) {
                return trainRank(model, layout, groups, ctx.memory(), dtype);
            }
        });
        Map<String, double[]> merged = new HashMap<>();
        Outcome first = (Outcome) ranks.getFirst().get("outcome");
        for (Map<String, Object> r : ranks) {
            Outcome o = (Outcome) r.get("outcome");
            assertArrayEquals(first.losses(), o.losses(), 0, "every rank reports the same losses");
            assertArrayEquals(first.norms(), o.norms(), 0, "every rank clips with the same gradient norm");
            @SuppressWarnings("unchecked")
            Map<String, ParameterSet.Slice> slices = (Map<String, ParameterSet.Slice>) r.get("slices");
            for (Map.Entry<String, double[]> e : o.params().entrySet()) {
                ParameterSet.Slice slice = slices.get(e.getKey());
                if (slice == null) {
                    double[] before = merged.putIfAbsent(e.getKey(), e.getValue());
                    if (before != null) assertArrayEquals(before, e.getValue(), 0, e.getKey() + ": replicated copies stay equal");
                    continue;
                }
                int n = 1;
                for (int d : slice.globalShape()) n *= d;
                int size = n;
                double[] global = merged.computeIfAbsent(e.getKey(), k -> {
                    double[] unset = new double[size];
                    java.util.Arrays.fill(unset, Double.NaN);
                    return unset;
                });
                place(global, e.getValue(), slice, e.getKey());
            }
        }
        for (Map.Entry<String, double[]> e : merged.entrySet()) {
            for (double v : e.getValue()) assertFalse(Double.isNaN(v), e.getKey() + ": every element held by some rank");
        }
        return new Outcome(first.losses(), first.norms(), merged);
    }

    /**
     * Writes {@code local} (a rank's slice, padding rows ignored) into its place in {@code global} (NaN where no rank
     * wrote yet); a replicated piece another rank wrote already must hold the same bits.
     */
    static void place(double[] global, double[] local, ParameterSet.Slice slice, String name) {
        int[] shape = slice.globalShape(), localShape = slice.localShape();
        int dim = slice.dim();
        long inner = 1, outer = 1;
        for (int d = dim + 1; d < shape.length; d++) inner *= shape[d];
        for (int d = 0; d < dim; d++) outer *= shape[d];
        int at = 0;
        for (long o = 0; o < outer; o++) {
            for (int i = 0; i < slice.starts().length; i++) {
                int n = Math.toIntExact(slice.lengths()[i] * inner), to = Math.toIntExact((o * shape[dim] + slice.starts()[i]) * inner);
                for (int j = 0; j < n; j++) {
                    double before = global[to + j];
                    if (!Double.isNaN(before)) {
                        assertEquals(before, local[at + j], 0, name + ": a kv piece replicated over tp ranks stays equal on them");
                    }
                    global[to + j] = local[at + j];
                }
                at += n;
            }
            at += Math.toIntExact(slice.paddingRows() * inner);
        }
        assertEquals(local.length, at, "slice " + slice + " covers the local tensor of shape " + java.util.Arrays.toString(localShape));
    }

    private static Map<String, Object> trainRank(ModelConfig model, ParallelLayout layout, ProcessGroups groups,
                                                 MemoryPool pool, DType dtype) {
        int p = layout.pp(), dp = layout.dp(), zero = layout.zeroStage();
        int stage = groups.coordinates().ppStage(), dpRank = groups.coordinates().dpRank();
        TensorParallel tp = layout.tp() > 1 ? new CommunicatorTensorParallel(groups.tp(), layout.sequenceParallel())
                : TensorParallel.NONE;
        List<GptPart.Span> mine = List.of(PipelineCut.balanced(model, SEQ, p).get(stage));
        ZeroStage zeroStage = ZeroStage.of(zero);
        try (ParameterSet params = zeroStage.allocate(Gpt.declare(model, mine, p > 1, tp), pool, dtype, dp);
             StageGradients stages = p > 1 || layout.tp() > 1
                     ? new StageGradients(p > 1 ? groups.pp() : null, groups.tp(), params, pool) : StageGradients.NONE;
             OptimizerState optimizer = StageRank.optimizer(zeroStage, params, groups.dp(), pool, stages)) {
            List<GptPart> chunks = List.of(new GptPart(model, params, mine.getFirst(), layout.recompute(), 1, tp));
            int rows = GLOBAL_BATCH / dp;
            double[] losses = new double[STEPS], norms = new double[STEPS];
            try (TrainStep step = new TrainStep(params, chunks, pool, 1.0, optimizer.update(),
                    new TrainStep.Pipeline(p > 1 ? groups.pp() : null, ScheduleKind.ONE_F_ONE_B, p, 1));
                 Tensor batch = Tensor.allocate(pool, MemoryCategory.BUFFERS, DType.I32, rows, SEQ + 1)) {
                for (int s = 0; s < STEPS; s++) {
                    int stepIndex = s;
                    int[] k = {0};
                    TrainStep.Result result = step.run(batch, MICRO_BATCHES, b -> {
                        int[] global = microBatch(model, stepIndex, k[0]++);
                        MemorySegment.copy(global, dpRank * rows * (SEQ + 1), b.segment(), ValueLayout.JAVA_INT,
                                b.byteOffset(), rows * (SEQ + 1));
                    }, 1e-3);
                    losses[s] = result.loss();
                    norms[s] = result.gradNorm();
                }
            }
            Map<String, double[]> values = StageRank.valuesByName(optimizer);
            Map<String, ParameterSet.Slice> slices = new HashMap<>();
            for (Parameter param : params.parameters()) {
                if (param.slice() != null) slices.put(param.name(), param.slice());
            }
            Map<String, Object> out = new HashMap<>();
            out.put("outcome", new Outcome(losses, norms, values));
            out.put("slices", slices);
            return out;
        }
    }

    private static ParallelLayout layout(int dp, int tp, int pp, int zero) {
        return layout(dp, tp, pp, zero, false, Recompute.NONE);
    }

    private static ParallelLayout layout(int dp, int tp, int pp, int zero, boolean sequenceParallel, Recompute recompute) {
        return new ParallelLayout(dp, tp, pp, 1, 1, sequenceParallel, zero, recompute, GLOBAL_BATCH / dp);
    }

    private static final Map<ModelConfig, Outcome> SINGLE = new HashMap<>();

    private static synchronized Outcome single(ModelConfig model) {
        return SINGLE.computeIfAbsent(model, m -> train(m, layout(1, 1, 1, 0), DType.F32));
    }

    static void assertParity(Outcome expected, Outcome got, String name, double tolerance) {
        for (int s = 0; s < STEPS; s++) {
            double e = expected.losses()[s], g = got.losses()[s];
            assertEquals(e, g, tolerance * Math.abs(e), name + ": loss of step " + (s + 1));
            assertEquals(expected.norms()[s], got.norms()[s], 10 * tolerance * expected.norms()[s],
                    name + ": gradient norm of step " + (s + 1) + " (replicated parameters counted once)");
        }
        assertEquals(expected.params().keySet(), got.params().keySet(), name + ": parameters");
        double diff = 0, norm = 0, worst = 0, lossGap = 0;
        String worstName = "";
        for (Map.Entry<String, double[]> e : expected.params().entrySet()) {
            double[] a = e.getValue(), b = got.params().get(e.getKey());
            assertEquals(a.length, b.length, name + ": " + e.getKey() + " elements");
            double d = 0;
            for (int i = 0; i < a.length; i++) {
                d += (a[i] - b[i]) * (a[i] - b[i]);
                norm += a[i] * a[i];
            }
            diff += d;
            if (d > worst) {
                worst = d;
                worstName = e.getKey();
            }
        }
        for (int s = 0; s < STEPS; s++) {
            lossGap = Math.max(lossGap, Math.abs(expected.losses()[s] - got.losses()[s]) / Math.abs(expected.losses()[s]));
        }
        double relative = Math.sqrt(diff / norm);
        System.out.printf("%s vs single rank after %d steps: max loss gap %.2e relative, parameters ||Δ||/||θ|| = %.2e "
                + "(largest Δ in %s)%n", name, STEPS, lossGap, relative, worstName);
        assertTrue(relative <= tolerance, name + ": parameters ||Δ||/||θ|| = " + relative + " > " + tolerance);
    }

    @ParameterizedTest(name = "tp {0} x pp {1} x dp {2}, ZeRO {3}")
    @CsvSource({"2, 1, 1, 0", "4, 1, 1, 0", "2, 2, 1, 0", "2, 1, 2, 1", "2, 1, 2, 2", "2, 1, 2, 3"})
    void tensorParallelGptMatchesTheSingleRankRun(int tp, int pp, int dp, int zero) {
        Outcome got = train(GPT, layout(dp, tp, pp, zero), DType.F32);
        assertParity(single(GPT), got, "gpt tp " + tp + " x pp " + pp + " x dp " + dp + " zero " + zero, TOLERANCE);
    }

    @ParameterizedTest(name = "tp {0} x pp {1} x dp {2}, ZeRO {3}, sequence parallel, recompute {4}")
    @CsvSource({"2, 1, 1, 0, none", "2, 2, 2, 3, selective"})
    void sequenceParallelGptMatchesTheSingleRankRun(int tp, int pp, int dp, int zero, String recompute) {
        Outcome got = train(GPT, layout(dp, tp, pp, zero, true, Recompute.parse(recompute)), DType.F32);
        assertParity(single(GPT), got, "gpt tp " + tp + " x pp " + pp + " x dp " + dp + " zero " + zero
                + " sequence parallel, recompute " + recompute, TOLERANCE);
    }

    @Test
    void groupedQueryLlamaAtTp2MatchesTheSingleRankRun() {
        assertParity(single(LLAMA), train(LLAMA, layout(1, 2, 1, 0), DType.F32), "llama GQA (4 heads, 2 kv) tp 2", TOLERANCE);
    }

    @ParameterizedTest(name = "llama 8 heads, {0} kv heads, tp {1}")
    @CsvSource({"4, 2", "4, 4", "2, 4"})
    void groupedQueryLlamaSplitsOrReplicatesKvHeadsAndMatchesTheSingleRankRun(int kvHeads, int tp) {
        ModelConfig model = kvHeads == 4 ? LLAMA_8_4 : LLAMA_8_2;
        assertParity(single(model), train(model, layout(1, tp, 1, 0), DType.F32), "llama 8 heads, " + kvHeads + " kv heads"
                + (kvHeads < tp ? " (replicated over " + tp / kvHeads + " ranks each)" : "") + ", tp " + tp, TOLERANCE);
    }

    @Test
    void replicatedKvHeadUnderZero3AndSequenceParallelismMatchesTheSingleRankRun() {
        assertParity(single(LLAMA_4_1), train(LLAMA_4_1, layout(2, 2, 1, 3, true, Recompute.NONE), DType.F32),
                "llama 4 heads, 1 kv head replicated, tp 2 x dp 2 zero 3 sequence parallel", TOLERANCE);
    }

    @ParameterizedTest(name = "PanGu top query layer, tp {0} x pp {1}, sequence parallel {2}")
    @CsvSource({"2, 1, false", "2, 2, true"})
    void topQueryLayerUnderTensorParallelismMatchesTheSingleRankRun(int tp, int pp, boolean sequenceParallel) {
        assertParity(single(PANGU), train(PANGU, layout(1, tp, pp, 0, sequenceParallel, Recompute.NONE), DType.F32),
                "pangu top query tp " + tp + " x pp " + pp + (sequenceParallel ? " sequence parallel" : ""), TOLERANCE);
    }

    @ParameterizedTest(name = "vocab 61, tp {0}")
    @CsvSource({"2", "4"})
    void vocabularyNotDivisibleByTpIsPaddedWithoutChangingTheRun(int tp) {
        assertParity(single(ODD_VOCAB), train(ODD_VOCAB, layout(1, tp, 1, 0), DType.F32), "vocab 61 tp " + tp, TOLERANCE);
    }

    @Test
    void inFloat64TensorParallelComputesTheSingleRankMathToRoundoff() {
        Outcome one = train(GPT, layout(1, 1, 1, 0), DType.F64);
        assertParity(one, train(GPT, layout(1, 2, 2, 0), DType.F64), "float64 gpt tp 2 x pp 2", 1e-12);
        assertParity(one, train(GPT, layout(1, 2, 2, 0, true, Recompute.SELECTIVE), DType.F64),
                "float64 gpt tp 2 x pp 2 sequence parallel, selective recompute", 1e-12);
        Outcome llama = train(LLAMA, layout(1, 1, 1, 0), DType.F64);
        assertParity(llama, train(LLAMA, layout(1, 2, 1, 0), DType.F64), "float64 llama GQA tp 2", 1e-12);
        Outcome replicated = train(LLAMA_8_2, layout(1, 1, 1, 0), DType.F64);
        assertParity(replicated, train(LLAMA_8_2, layout(1, 4, 1, 0, true, Recompute.NONE), DType.F64),
                "float64 llama 8 heads, 2 kv heads replicated, tp 4 sequence parallel", 1e-12);
    }

    @Test
    void aTensorParallelRunRepeatsBitForBit() {
        Outcome a = train(GPT, layout(1, 2, 2, 0), DType.F32);
        Outcome b = train(GPT, layout(1, 2, 2, 0), DType.F32);
        assertArrayEquals(a.losses(), b.losses(), 0, "tp 2 x pp 2: losses bit for bit");
        for (String name : a.params().keySet()) {
            assertArrayEquals(a.params().get(name), b.params().get(name), 0, "tp 2 x pp 2: " + name + " bit for bit");
        }
    }
}
