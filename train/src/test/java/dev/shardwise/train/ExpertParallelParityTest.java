package dev.shardwise.train;

import dev.shardwise.comm.LocalCluster;
import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;
import dev.shardwise.model.ExpertParallel;
import dev.shardwise.model.GptPart;
import dev.shardwise.model.ModelConfig;
import dev.shardwise.model.MoeConfig;
import dev.shardwise.model.Parameter;
import dev.shardwise.model.ParameterSet;
import dev.shardwise.model.Recompute;
import dev.shardwise.model.TensorParallel;
import dev.shardwise.model.optim.AdamWOptimizer;
import dev.shardwise.parallel.ParallelLayout;
import dev.shardwise.parallel.ProcessGroups;
import dev.shardwise.parallel.ExpertParallelUpdate;
import dev.shardwise.parallel.GradientReduction;
import dev.shardwise.parallel.ReplicatedUpdate;
import dev.shardwise.parallel.ShardMoments;
import dev.shardwise.parallel.StageGradients;
import dev.shardwise.parallel.expert.CommunicatorExpertParallel;
import dev.shardwise.model.optim.ParameterUpdate;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.*;

/**
 * Expert parallelism through {@link TrainStep} against ep 1 (ARCHITECTURE idea 5): the same routing, no dropping,
 * 20 steps. The reference is one rank running each rank's rows as one micro-batch (so the balance loss sees the same
 * tokens); the expert-parallel run has dp ranks of which ep consecutive ones split the experts, with ZeRO 0 or 1 (the
 * non-expert AdamW state sharded over dp, the experts' over the expert-data-parallel group). Losses within 1e-5
 * relative, gradient norms within 1e-4, and every parameter (the experts gathered from the ranks that hold them,
 * replicas checked equal) within ||Δ||/||θ|| <= 1e-5.
 */
class ExpertParallelParityTest {
    static final ModelConfig MODEL = ModelConfig.gpt(64, 16, 2, 32, 4).withMoe(MoeConfig.of(4, 2, 1, 24));
    static final int ROWS = 2, SEQ = 16, STEPS = 20;

    /** Rank {@code rank}'s rows of step {@code step}: [ROWS, SEQ + 1] token ids. */
    static int[] rows(int step, int rank) {
        SplittableRandom random = new SplittableRandom(5000 + step * 131L + rank);
        int[] out = new int[ROWS * (SEQ + 1)];
        for (int i = 0; i < out.length; i++) out[i] = random.nextInt(MODEL.vocabSize());
        return out;
    }

    record Outcome(double[] losses, double[] norms, Map<String, double[]> params) { }

    /** One rank, the {@code ranks} ranks' rows as its micro-batches. */
    static Outcome reference(int ranks) {
        return run(MemoryPool.unlimited("reference"), ExpertParallel.NONE, null, 0, ranks, 0, false);
    }

    /** One rank of the layout dp = ranks, ep; with {@code overlap} its reductions run during the last backward. */
    static Outcome run(MemoryPool pool, ExpertParallel ep, ProcessGroups groups, int dpRank, int microBatches, int zero,
                       boolean overlap) {
        GptPart.Span whole = GptPart.Span.whole(MODEL);
        ParameterSet.Builder builder = ParameterSet.builder();
        GptPart.declare(builder, MODEL, whole, false, TensorParallel.NONE, ep);
        try (ParameterSet params = builder.allocate(pool, DType.F32);
             AdamWOptimizer optimizer = groups != null ? null : new AdamWOptimizer(params, pool, AdamWOptimizer.Settings.gpt());
             ParameterUpdate update = groups == null ? new ReplicatedUpdate(params, optimizer, GradientReduction.NONE)
                     : new ExpertParallelUpdate(params, AdamWOptimizer.Settings.gpt(), zero, groups.dp(), groups.ep(), groups.expertDp(),
                             pool, StageGradients.NONE, ShardMoments.resident(), overlap);
             TrainStep step = new TrainStep(params, List.of(new GptPart(MODEL, params, whole, Recompute.NONE, 1, TensorParallel.NONE, ep)),
                     pool, 1.0, update, TrainStep.Pipeline.SINGLE);
             Tensor batch = Tensor.allocate(pool, MemoryCategory.BUFFERS, DType.I32, ROWS, SEQ + 1)) {
            params.initialize(7);
            if (groups != null) {   // AdamW's m and v: 2 x 4 bytes per element this rank updates
                long expert = 0;
                for (Parameter p : params.parameters()) if (MoeConfig.isExpertParameter(p.name())) expert += p.numel();
                long dense = params.paddedCount() - expert, bytes = pool.liveBytes(MemoryCategory.OPTIMIZER_STATE);
                long slack = 8L * 4 * MODEL.layers();   // ⌈len/n⌉ rounding of each run
                long expected = zero == 0 ? 8 * params.paddedCount() : 8 * (dense / groups.dp().size() + expert / groups.expertDp().size());
                assertTrue(bytes >= expected && bytes <= expected + slack, "zero " + zero + ": optimizer state " + bytes
                        + " bytes, expected " + expected + " (non-expert state / dp, expert state / expert dp)");
            }
            double[] losses = new double[STEPS], norms = new double[STEPS];
            for (int s = 0; s < STEPS; s++) {
                int stepIndex = s;
                int[] k = {0};
                TrainStep.Result r = step.run(batch, microBatches, b -> {
                    int[] data = rows(stepIndex, groups == null ? k[0]++ : dpRank);
                    MemorySegment.copy(data, 0, b.segment(), ValueLayout.JAVA_INT, b.byteOffset(), data.length);
                }, 1e-3);
                losses[s] = r.loss();
                norms[s] = r.gradNorm();
            }
            Map<String, double[]> values = new HashMap<>();
            for (Parameter p : params.parameters()) values.put(p.name(), p.value().toDoubleArray());
            return new Outcome(losses, norms, values);
        }
    }

    @ParameterizedTest(name = "dp={0} ep={1} zero={2}")
    @CsvSource({"2, 2, 0", "4, 2, 1", "4, 4, 1"})
    void expertParallelMatchesEp1(int dp, int ep, int zero) {
        Outcome expected = reference(dp);
        ParallelLayout layout = new ParallelLayout(dp, 1, 1, 1, ep, false, zero, Recompute.NONE, ROWS);
        List<Outcome> ranks = LocalCluster.run(dp, ctx -> {
            try (ProcessGroups groups = new ProcessGroups(layout, ctx.world())) {
                return run(ctx.memory(), new CommunicatorExpertParallel(groups.ep()), groups, groups.coordinates().dpRank(), 1, zero, false);
            }
        });
        String name = "dp " + dp + " x ep " + ep + " zero " + zero;
        Map<String, double[]> merged = new HashMap<>();
        for (Outcome o : ranks) {
            assertArrayEquals(ranks.getFirst().losses(), o.losses(), 0, name + ": every rank reports the same losses");
            o.params().forEach((param, v) -> {
                double[] before = merged.putIfAbsent(param, v);
                if (before != null) assertArrayEquals(before, v, 0, name + ": " + param + " stays equal on the ranks that hold it");
            });
        }
        Outcome got = ranks.getFirst();
        for (int s = 0; s < STEPS; s++) {
            assertEquals(expected.losses()[s], got.losses()[s], 1e-5 * expected.losses()[s], name + ": loss of step " + (s + 1));
            assertEquals(expected.norms()[s], got.norms()[s], 1e-4 * expected.norms()[s], name + ": gradient norm of step " + (s + 1));
        }
        assertEquals(expected.params().keySet(), merged.keySet(), name + ": every expert is held by some rank");
        double diff = 0, norm = 0;
        for (Map.Entry<String, double[]> e : expected.params().entrySet()) {
            double[] a = e.getValue(), b = merged.get(e.getKey());
            for (int i = 0; i < a.length; i++) {
                diff += (a[i] - b[i]) * (a[i] - b[i]);
                norm += a[i] * a[i];
            }
        }
        assertTrue(Math.sqrt(diff / norm) <= 1e-5, name + ": ||Δθ||/||θ|| = " + Math.sqrt(diff / norm) + " > 1e-5");
        assertTrue(expected.losses()[STEPS - 1] < expected.losses()[0], "the reference trains");
    }

    /**
     * The reductions overlapped with the last micro-batch's backward (each unit's dense part all-reduced over dp and
     * its experts over expert dp as backward leaves the unit) give the same bits as reducing after backward: losses,
     * gradient norms and every parameter of every rank, with 2 micro-batches per step (only the last one reduces).
     */
    @ParameterizedTest(name = "dp={0} ep={1} zero={2}")
    @CsvSource({"2, 2, 0", "4, 2, 0", "4, 2, 1"})
    void overlappedReductionMatchesTheReductionAfterBackwardBitForBit(int dp, int ep, int zero) {
        ParallelLayout layout = new ParallelLayout(dp, 1, 1, 1, ep, false, zero, Recompute.NONE, ROWS);
        String name = "dp " + dp + " x ep " + ep + " zero " + zero;
        List<List<Outcome>> runs = new java.util.ArrayList<>();
        for (boolean overlap : new boolean[]{false, true}) {
            runs.add(LocalCluster.run(dp, ctx -> {
                try (ProcessGroups groups = new ProcessGroups(layout, ctx.world())) {
                    return run(ctx.memory(), new CommunicatorExpertParallel(groups.ep()), groups, groups.coordinates().dpRank(), 2, zero, overlap);
                }
            }));
        }
        for (int r = 0; r < dp; r++) {
            Outcome after = runs.get(0).get(r), overlapped = runs.get(1).get(r);
            assertArrayEquals(after.losses(), overlapped.losses(), 0, name + ", rank " + r + ": losses");
            assertArrayEquals(after.norms(), overlapped.norms(), 0, name + ", rank " + r + ": gradient norms");
            assertEquals(after.params().keySet(), overlapped.params().keySet(), name + ", rank " + r + ": parameters");
            for (String param : after.params().keySet()) {
                assertArrayEquals(after.params().get(param), overlapped.params().get(param), 0, name + ", rank " + r + ": " + param);
            }
        }
    }
}
