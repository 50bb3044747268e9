package dev.shardwise.plan.local;

import dev.shardwise.model.ActivationMemory;
import dev.shardwise.model.Gpt;
import dev.shardwise.model.GptPart;
import dev.shardwise.model.ModelConfig;
import dev.shardwise.model.MoeConfig;
import dev.shardwise.model.Recompute;
import dev.shardwise.model.TensorParallelRank;
import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.memory.StepArena;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;
import dev.shardwise.model.ParameterSet;
import dev.shardwise.parallel.ParallelLayout;
import dev.shardwise.parallel.ZeroMemory;
import dev.shardwise.parallel.ZeroStage;
import dev.shardwise.parallel.pipeline.ScheduleKind;
import org.junit.jupiter.api.Test;

import java.util.EnumMap;
import java.util.List;
import java.util.Map;
import java.util.Set;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The local cost model's arithmetic on a hand-made profile, and the profiler on a small model. */
class LocalCostModelTest {
    static final ModelConfig SMALL = ModelConfig.gpt(96, 16, 4, 32, 4);

    /**
     * Embedding 1 ms / 2 ms, each block 10 / 20 ms (selective +1, full +10 in backward), head 5 / 10 ms; at tp 2 every
     * piece takes 0.6 of that time (its slice plus its collectives) and half the bytes.
     */
    static LocalProfile profile(int ranks, int microBatch) {
        return new LocalProfile(ranks, 1, microBatch, 16, Map.of(LocalProfile.Split.NONE, pieces(1, 1),
                new LocalProfile.Split(2, false), pieces(0.6, 0.5)), 1e-9, 0, 1e-9, 2e-9, 1.5e-9, 1e-5, 1e-9);
    }

    private static LocalProfile.Pieces pieces(double time, double bytes) {
        Map<Recompute, LocalProfile.Part> block = new EnumMap<>(Recompute.class);
        block.put(Recompute.NONE, part(time, bytes, 0.010, 0.020, 0.012, 0.008, 1000, 1200, 0));
        block.put(Recompute.SELECTIVE, part(time, bytes, 0.010, 0.021, 0.013, 0.008, 900, 1100, 50));
        block.put(Recompute.FULL, part(time, bytes, 0.010, 0.030, 0.030, 0, 300, 300, 700));
        return new LocalProfile.Pieces(part(time, bytes, 0.001, 0.002, 0.0, 0.002, 100, 100, 0), block,
                part(time, bytes, 0.005, 0.010, 0.006, 0.004, 5000, 5000, 10));
    }

    private static LocalProfile.Part part(double time, double bytes, double f, double b, double bIn, double bW, long pass, long split,
                                          long scratch) {
        return new LocalProfile.Part(time * f, time * b, time * bIn, time * bW, (long) (bytes * pass), (long) (bytes * split),
                (long) (bytes * scratch), 0, 0);
    }

    @Test
    void oneRankRunsItsMicroBatchesBackToBackThenTheOptimizer() {
        LocalCostModel costs = new LocalCostModel(SMALL, profile(1, 2));
        LocalEstimate e = costs.estimate(new ParallelLayout(1, 1, 1, 1, 1, false, 0, Recompute.NONE, 2), ScheduleKind.ONE_F_ONE_B, 8);
        double perMicroBatch = 0.001 + 0.002 + 4 * (0.010 + 0.020) + 0.005 + 0.010;
        double optimizer = SMALL.parameterCount() * 1e-9;
        assertEquals(4 * perMicroBatch + optimizer, e.stepSeconds(), 1e-9, "4 micro-batches, then AdamW");
        assertEquals(0, e.bubbleSeconds(), 1e-9);
        long state = ZeroMemory.of(0, 1, Gpt.declare(SMALL).paddedCount(1), false).total();
        assertEquals(state, e.stateBytes()[0], "parameters, gradients and moments as the rank allocates them");
        assertEquals(100 + 4 * 1000 + 5000 + 10, e.activationBytes()[0], "one arena, reused by every micro-batch, and the head's scratch");
        LocalEstimate full = costs.estimate(new ParallelLayout(1, 1, 1, 1, 1, false, 0, Recompute.FULL, 2), ScheduleKind.ONE_F_ONE_B, 8);
        assertEquals(100 + 4 * 300 + 5000 + 700, full.activationBytes()[0], "full recompute: outputs kept, one block rebuilt at a time");
    }

    @Test
    void theUpdateZeroesAndNormsEveryGradientHeldAndStepsEveryParameterUpdated() {
        ParameterSet.Builder declared = Gpt.declare(SMALL);
        long params = declared.specs().stream().mapToLong(ParameterSet.Spec::numel).sum();
        LocalProfile p = profile(2, 2);
        LocalProfile upkeep = new LocalProfile(2, 1, 2, 16, p.pieces(), 1e-9, 3e-10, 1e-9, 2e-9, 1.5e-9, 1e-5, 1e-9);
        for (int zero = 0; zero <= 3; zero++) {
            ParallelLayout layout = new ParallelLayout(2, 1, 1, 1, 1, false, zero, Recompute.NONE, 2);
            double without = new LocalCostModel(SMALL, p).estimate(layout, ScheduleKind.ONE_F_ONE_B, 8).stepSeconds();
            double with = new LocalCostModel(SMALL, upkeep).estimate(layout, ScheduleKind.ONE_F_ONE_B, 8).stepSeconds();
            long shard = declared.paddedCount(ZeroStage.of(zero).paddingMultiple(2)) / 2;
            long held = zero >= 2 ? shard : params;   // ZeRO 2 and 3 keep only their shard of the gradients
            assertEquals(held * 3e-10, with - without, 1e-12, "ZeRO " + zero + ": zeroing and norm over the gradients a rank holds");
        }
    }

    @Test
    void aPipelineWaitsItsBubbleAndHoldsAnArenaPerMicroBatchInFlight() {
        LocalCostModel costs = new LocalCostModel(SMALL, profile(2, 1));
        ParallelLayout pp2 = new ParallelLayout(1, 1, 2, 1, 1, false, 0, Recompute.NONE, 1);
        LocalEstimate oneF = costs.estimate(pp2, ScheduleKind.ONE_F_ONE_B, 8);
        LocalEstimate gpipe = costs.estimate(pp2, ScheduleKind.GPIPE, 8);
        assertTrue(oneF.bubbleSeconds() > 0, "two stages wait for each other");
        assertEquals(oneF.stepSeconds(), gpipe.stepSeconds(), 1e-3, "the same bubble, (p-1)(tF+tB)");
        assertTrue(gpipe.activationBytes()[0] > oneF.activationBytes()[0], "GPipe keeps all 8 micro-batches in flight, 1F1B two");
        LocalEstimate zb = costs.estimate(pp2, ScheduleKind.ZB_H1, 8);
        assertTrue(zb.stepSeconds() < oneF.stepSeconds(), "ZB-H1 fills part of the bubble with W: " + zb.stepSeconds() + " vs " + oneF.stepSeconds());
    }

    @Test
    void dataParallelismPaysItsReductionAndZeroShardsTheState() {
        LocalCostModel costs = new LocalCostModel(SMALL, profile(2, 2));
        LocalEstimate z0 = costs.estimate(new ParallelLayout(2, 1, 1, 1, 1, false, 0, Recompute.NONE, 2), ScheduleKind.ONE_F_ONE_B, 8);
        LocalEstimate z1 = costs.estimate(new ParallelLayout(2, 1, 1, 1, 1, false, 1, Recompute.NONE, 2), ScheduleKind.ONE_F_ONE_B, 8);
        LocalEstimate z3 = costs.estimate(new ParallelLayout(2, 1, 1, 1, 1, false, 3, Recompute.NONE, 2), ScheduleKind.ONE_F_ONE_B, 8);
        assertTrue(z0.dpSeconds() > 0, "two replicas all-reduce their gradients");
        assertTrue(z1.stateBytes()[0] < z0.stateBytes()[0], "ZeRO 1 shards the moments");
        assertTrue(z3.dpSeconds() > z1.dpSeconds(), "ZeRO 3 gathers weights every micro-batch");
        // at the profiled rates: all-reduce 1e-9 s/B, all-gather 2e-9, reduce-scatter 1.5e-9, latency 1e-5 per unit
        ParameterSet.Builder declared = Gpt.declare(SMALL);
        double bytes = 4.0 * declared.specs().stream().mapToLong(ParameterSet.Spec::numel).sum();
        int units = declared.unitSizes().size();
        double embeddings = 4.0 * declared.unitSizes().get(GptPart.EMBEDDINGS);
        assertEquals(bytes * 1e-9 + 1e-5, z0.dpSeconds(), 1e-12, "one all-reduce");
        LocalEstimate z2 = costs.estimate(new ParallelLayout(2, 1, 1, 1, 1, false, 2, Recompute.NONE, 2), ScheduleKind.ONE_F_ONE_B, 8);
        double gather = bytes * 2e-9 + units * 1e-5, scatter = bytes * 1.5e-9 + units * 1e-5;
        assertEquals(2 * scatter + gather, z2.dpSeconds(), 1e-12, "ZeRO 2, 2 micro-batches: a reduce-scatter each, one all-gather");
        assertEquals(2 * (2 * gather + embeddings * 2e-9 + 1e-5 + scatter), z3.dpSeconds(), 1e-12,
                "ZeRO 3: forward gathers every unit and the tied head's embeddings again, backward every unit, then the reduce-scatter");
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () ->
                costs.estimate(new ParallelLayout(1, 1, 1, 1, 1, false, 0, Recompute.NONE, 2), ScheduleKind.ONE_F_ONE_B, 8));
        assertTrue(e.getMessage().contains("needs a profile of 1 ranks"), e.getMessage());
    }

    @Test
    void tensorParallelismIsPricedFromTheSplitPiecesAndHoldsEachRanksSlices() {
        LocalCostModel costs = new LocalCostModel(SMALL, profile(2, 2));
        LocalEstimate tp = costs.estimate(new ParallelLayout(1, 2, 1, 1, 1, false, 0, Recompute.NONE, 2), ScheduleKind.ONE_F_ONE_B, 8);
        long slices = Gpt.declare(SMALL, List.of(GptPart.Span.whole(SMALL)), false, new TensorParallelRank(2, 0)).paddedCount(1);
        double perMicroBatch = 0.6 * (0.001 + 0.002 + 4 * (0.010 + 0.020) + 0.005 + 0.010);
        assertEquals(4 * perMicroBatch + slices * 1e-9, tp.stepSeconds(), 1e-9, "4 micro-batches of the split pieces, AdamW over the slices");
        assertEquals(ZeroMemory.of(0, 1, slices, false).total(), tp.stateBytes()[0], "a tp rank holds its slices' state");
        assertTrue(slices < Gpt.declare(SMALL).paddedCount(1) * 0.6, "the blocks' matrices and the vocabulary are halved: " + slices);
        assertEquals(50 + 4 * 500 + 2500 + 5, tp.activationBytes()[0], "the split pieces' arena bytes");
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> costs.estimate(
                new ParallelLayout(1, 2, 1, 1, 1, true, 0, Recompute.NONE, 2), ScheduleKind.ONE_F_ONE_B, 8));
        assertTrue(e.getMessage().contains("no pieces for tp=2,sp=true"), e.getMessage());
    }

    @Test
    void theProfilerMeasuresEachTensorParallelSplit() {
        Set<LocalProfile.Split> splits = Set.of(new LocalProfile.Split(2, false), new LocalProfile.Split(2, true));
        LocalProfile p = LocalProfiler.profile(SMALL, 2, 2, 16, 1, splits);
        assertEquals(Set.of(LocalProfile.Split.NONE, new LocalProfile.Split(2, false), new LocalProfile.Split(2, true)),
                p.pieces().keySet(), "tp 1 is always profiled");
        long whole = p.pieces().get(LocalProfile.Split.NONE).block().get(Recompute.NONE).passBytes();
        for (LocalProfile.Split split : splits) {
            LocalProfile.Pieces pieces = p.pieces().get(split);
            assertTrue(pieces.head().forwardSeconds() > 0 && pieces.block().get(Recompute.FULL).backwardSeconds() > 0, split + ": " + pieces);
            assertTrue(pieces.block().get(Recompute.NONE).passBytes() < whole, split + ": a rank's slice of a block keeps fewer bytes ("
                    + pieces.block().get(Recompute.NONE).passBytes() + ") than the whole block (" + whole + ")");
        }
        assertEquals(List.of(LocalProfile.Split.NONE, new LocalProfile.Split(2, false), new LocalProfile.Split(2, true),
                new LocalProfile.Split(4, false), new LocalProfile.Split(4, true)), LocalProfile.Split.possible(SMALL, 4, 16),
                "tp dividing the ranks and the 4 heads, sp where tp divides the sequence");
    }

    @Test
    void expertParallelismIsPricedFromItsProfiledPiecesAndHoldsEachRanksExperts() {
        ModelConfig moe = SMALL.withMoe(MoeConfig.of(4, 2, 1, 32));
        LocalProfile.Split ep2 = new LocalProfile.Split(1, false, 2);
        assertEquals(List.of(LocalProfile.Split.NONE, ep2, new LocalProfile.Split(1, false, 4), new LocalProfile.Split(2, false),
                new LocalProfile.Split(2, false, 2), new LocalProfile.Split(2, true), new LocalProfile.Split(2, true, 2),
                new LocalProfile.Split(4, false), new LocalProfile.Split(4, true)), LocalProfile.Split.possible(moe, 4, 16),
                "ep dividing ranks/tp and the 4 experts; sp where tp divides the sequence, with and without ep");
        LocalProfile profile = new LocalProfile(2, 1, 2, 16, Map.of(LocalProfile.Split.NONE, pieces(1, 1), ep2, pieces(1.2, 0.8)),
                1e-9, 0, 1e-9, 2e-9, 1.5e-9, 1e-5, 1e-9);
        LocalCostModel costs = new LocalCostModel(moe, profile);
        LocalEstimate one = costs.estimate(new ParallelLayout(2, 1, 1, 1, 1, false, 1, Recompute.NONE, 2), ScheduleKind.ONE_F_ONE_B, 8);
        LocalEstimate two = costs.estimate(new ParallelLayout(2, 1, 1, 1, 2, false, 1, Recompute.NONE, 2), ScheduleKind.ONE_F_ONE_B, 8);
        ParameterSet.Builder whole = Gpt.declare(moe), mine = Gpt.declare(moe, List.of(GptPart.Span.whole(moe)), false,
                dev.shardwise.model.TensorParallel.NONE, new dev.shardwise.model.ExpertParallelRank(2, 0));
        long all = whole.specs().stream().mapToLong(ParameterSet.Spec::numel).sum();
        long held = mine.specs().stream().mapToLong(ParameterSet.Spec::numel).sum();
        long experts = mine.specs().stream().filter(x -> MoeConfig.isExpertParameter(x.name())).mapToLong(ParameterSet.Spec::numel).sum();
        assertTrue(held < all && experts > 0, "ep rank 0 holds 2 of the 4 experts: " + held + " of " + all);
        // ep 2 over dp 2: each expert lives on one rank (no expert reduction); ZeRO 1 shards only the dense state over dp
        assertEquals(4.0 * (held - experts) * 1e-9 + 1e-5, two.dpSeconds(), 1e-12, "only the dense gradients are all-reduced");
        assertEquals(8 * held + 8 * (Math.ceilDiv(held - experts, 2) + experts), two.stateBytes()[0], 8 * 4,
                "weights and gradients of the rank's experts, AdamW state of half the dense part and all its experts");
        double perMicroBatch = 1.2 * (0.001 + 0.002 + 4 * (0.010 + 0.020) + 0.005 + 0.010);
        assertEquals(2 * perMicroBatch, two.computeSeconds(), 1e-9, "2 micro-batches of the ep pieces, all-to-alls inside");
        assertTrue(one.stateBytes()[0] > two.stateBytes()[0]);
    }

    /**
     * ZeRO 2 and 3 under expert parallelism: each unit's dense runs are reduce-scattered and gathered over dp, its expert
     * runs over the expert-data-parallel group of dp/ep ranks (ZeroShardedUpdate's segments), and a rank holds its padded
     * pieces of both. Over dp 2 at ep 2 each expert lives on one rank, so its runs move nothing; over dp 4 at ep 2 they
     * move over 2 ranks, 2/3 of a 4-rank ring's bytes per byte.
     */
    @Test
    void expertParallelismAtZero2And3ShardsTheExpertsOverTheRanksHoldingThem() {
        ModelConfig moe = SMALL.withMoe(MoeConfig.of(4, 2, 1, 32));
        for (int ranks : new int[] {2, 4}) {
            LocalProfile.Split ep2 = new LocalProfile.Split(1, false, 2);
            LocalProfile profile = new LocalProfile(ranks, 1, 2, 16, Map.of(LocalProfile.Split.NONE, pieces(1, 1), ep2, pieces(1, 1)),
                    1e-9, 0, 1e-9, 2e-9, 1.5e-9, 1e-5, 1e-9);
            LocalCostModel costs = new LocalCostModel(moe, profile);
            long batch = 2L * 2 * ranks;   // 2 micro-batches per replica
            ParameterSet.Builder mine = Gpt.declare(moe, List.of(GptPart.Span.whole(moe)), false, dev.shardwise.model.TensorParallel.NONE,
                    new dev.shardwise.model.ExpertParallelRank(2, 0)).segmentedBy(MoeConfig::isExpertParameter);
            ParameterSet.Builder whole = Gpt.declare(moe);
            long held = mine.specs().stream().mapToLong(ParameterSet.Spec::numel).sum();
            long experts = mine.specs().stream().filter(x -> MoeConfig.isExpertParameter(x.name())).mapToLong(ParameterSet.Spec::numel).sum();
            long all = whole.specs().stream().mapToLong(ParameterSet.Spec::numel).sum();
            int expertDp = ranks / 2, denseRuns = mine.segmentCount(false), expertRuns = mine.segmentCount(true);
            assertTrue(expertRuns == 4 && denseRuns >= whole.unitSizes().size(), "each of the 4 blocks' units has a run of experts: "
                    + denseRuns + " dense runs, " + expertRuns + " expert runs");
            double share = expertDp == 1 ? 0 : 0.5 / 0.75;
            double moved = 4.0 * (held - experts) + 4.0 * experts * share, runs = denseRuns + (expertDp > 1 ? expertRuns : 0);
            double gather = moved * 2e-9 + runs * 1e-5, scatter = moved * 1.5e-9 + runs * 1e-5;
            double embeddings = 4.0 * mine.unitSizes().get(GptPart.EMBEDDINGS) * 2e-9 + 1e-5;
            for (int zero : new int[] {2, 3}) {
                String where = "dp " + ranks + ", ep 2, ZeRO " + zero;
                LocalEstimate ep = costs.estimate(new ParallelLayout(ranks, 1, 1, 1, 2, false, zero, Recompute.NONE, 2),
                        ScheduleKind.ONE_F_ONE_B, batch);
                LocalEstimate dense = costs.estimate(new ParallelLayout(ranks, 1, 1, 1, 1, false, zero, Recompute.NONE, 2),
                        ScheduleKind.ONE_F_ONE_B, batch);
                assertTrue(Double.isFinite(ep.stepSeconds()) && ep.dpSeconds() > 0, where + ": " + ep.stepSeconds());
                assertEquals(zero == 2 ? 2 * scatter + gather : 2 * (2 * gather + embeddings + scatter), ep.dpSeconds(), 1e-12,
                        where + ": the dense runs over dp, the experts' over the " + expertDp + " rank(s) holding them");
                // ep 1 moves every expert of the model over all dp ranks; ep 2 its own half over dp/ep ranks: fewer bytes
                assertTrue(ep.dpSeconds() < dense.dpSeconds(), where + ": " + ep.dpSeconds() + " s against ep 1's " + dense.dpSeconds());
                long shard = mine.paddedCount(ranks, false) / ranks + mine.paddedCount(ranks, true) / expertDp;
                long state = 4 * (zero == 3 ? shard : mine.paddedCount(ranks)) + 12 * shard + (zero == 3 ? 4 : 2) * 4 * mine.largestUnit();
                assertEquals(state, ep.stateBytes()[0], where + ": padded pieces of the dense runs over dp and of the experts over "
                        + expertDp + " rank(s), plus the unit buffers");
                assertTrue(ep.stateBytes()[0] < dense.stateBytes()[0] || all == held, where + ": a rank holds half the experts");
            }
        }
    }

    /**
     * The ranks' profiles combine with the slowest rank's times, the mean of their per-block bytes and the largest of
     * their high-water bytes (ep ranks' bytes differ with the routing).
     */
    @Test
    void ranksCombineWithTheSlowestTimesAndTheMeanBytes() {
        LocalProfile.Part a = new LocalProfile.Part(1, 2, 3, 4, 100, 200, 30, 40, 50);
        LocalProfile.Part b = new LocalProfile.Part(2, 1, 4, 3, 300, 100, 10, 60, 50);
        assertEquals(new LocalProfile.Part(2, 2, 4, 4, 200, 150, 30, 60, 50), LocalProfile.Part.acrossRanks(List.of(a, b)));
        assertEquals(a, LocalProfile.Part.acrossRanks(List.of(a)));
    }

    @Test
    void theProfilerMeasuresAnExpertParallelSplit() {
        ModelConfig moe = SMALL.withMoe(MoeConfig.of(4, 2, 1, 32));
        LocalProfile.Split ep2 = new LocalProfile.Split(1, false, 2);
        LocalProfile p = LocalProfiler.profile(moe, 2, 2, 16, 1, Set.of(ep2));
        LocalProfile.Pieces whole = p.pieces().get(LocalProfile.Split.NONE), split = p.pieces().get(ep2);
        assertTrue(split.block().get(Recompute.NONE).forwardSeconds() > 0 && split.block().get(Recompute.NONE).backwardSeconds() > 0,
                split.toString());
        assertTrue(whole.block().get(Recompute.NONE).passBytes() > 0 && split.block().get(Recompute.NONE).passBytes() > 0, split.toString());
    }

    /** An MoE model's tp 2 split with sequence parallelism is profiled, and its block keeps fewer bytes than without. */
    @Test
    void theProfilerMeasuresASequenceParallelExpertSplit() {
        ModelConfig moe = SMALL.withMoe(MoeConfig.of(4, 2, 1, 32));
        LocalProfile.Split tp = new LocalProfile.Split(2, false), sp = new LocalProfile.Split(2, true);
        LocalProfile p = LocalProfiler.profile(moe, 2, 2, 16, 1, Set.of(tp, sp));
        LocalProfile.Part withSp = p.pieces().get(sp).block().get(Recompute.NONE), without = p.pieces().get(tp).block().get(Recompute.NONE);
        assertTrue(withSp.forwardSeconds() > 0 && withSp.backwardSeconds() > 0, withSp.toString());
        assertTrue(withSp.passBytes() < without.passBytes(), "an MoE block under sp keeps fewer bytes (" + withSp.passBytes()
                + ") than under tp alone (" + without.passBytes() + ")");
    }

    @Test
    void aBlockPartsBytesGrowByThePerBlockBytesOverWhatAPassHoldsOnce() {
        LocalProfile.Part block = new LocalProfile.Part(0, 0, 0, 0, 1000, 1200, 0, 300, 0);
        assertEquals(0, block.bytesOf(0, false));
        assertEquals(4 * 1000 + 300, block.bytesOf(4, false), "one backward stack per pass, whatever its blocks");
        assertEquals(4 * 1200, block.bytesOf(4, true));
    }

    @Test
    void theProfiledBlockBytesPredictAWholeStacksPass() {
        LocalProfile p = LocalProfiler.profile(SMALL, 1, 2, 16, 1);
        MemoryPool pool = MemoryPool.unlimited("test");
        GptPart.Span blocks = new GptPart.Span(false, 0, SMALL.layers(), false);
        try (ParameterSet params = Gpt.declare(SMALL, List.of(blocks), true).allocate(pool, DType.F32);
             StepArena arena = new StepArena(pool);
             Tensor input = Tensor.allocate(pool, MemoryCategory.BUFFERS, DType.F32, 2 * 16, SMALL.hidden());
             Tensor dOut = Tensor.allocate(pool, MemoryCategory.BUFFERS, DType.F32, 2 * 16, SMALL.hidden());
             Tensor batch = Tensor.allocate(pool, MemoryCategory.BUFFERS, DType.I32, 2, 17)) {
            params.initialize(3);
            input.copyFrom(new float[2 * 16 * SMALL.hidden()]);
            dOut.copyFrom(new float[2 * 16 * SMALL.hidden()]);
            GptPart part = new GptPart(SMALL, params, blocks);
            part.backward(arena, part.forward(arena, batch.slice(1, 0, 16), batch.slice(1, 1, 16), input, true, 1.0), dOut);
            long measured = pool.liveBytes(MemoryCategory.ACTIVATIONS);
            long predicted = p.pieces().get(LocalProfile.Split.NONE).block().get(Recompute.NONE).bytesOf(SMALL.layers(), false);
            assertEquals(measured, predicted, "a pass of " + SMALL.layers() + " blocks");
        }
    }

    @Test
    void theProfilerMeasuresEveryPieceAndTheArenaBytesOfABlock() {
        LocalProfile p = LocalProfiler.profile(SMALL, 2, 2, 16, 1);
        assertEquals(2, p.ranks());
        for (Recompute policy : Recompute.values()) {
            LocalProfile.Part block = p.pieces().get(LocalProfile.Split.NONE).block().get(policy);
            assertTrue(block.forwardSeconds() > 0 && block.backwardSeconds() > 0, policy + ": " + block);
        }
        assertTrue(p.allReduceSecondsPerByte() > 0 && p.allGatherSecondsPerByte() > 0 && p.reduceScatterSecondsPerByte() > 0
                && p.sendSecondsPerByte() > 0 && p.optimizerSecondsPerParameter() > 0, p.toString());
        long saved = ActivationMemory.blockBytes(SMALL, 2, 16, Recompute.NONE, DType.F32);
        LocalProfile.Pieces pieces = p.pieces().get(LocalProfile.Split.NONE);
        LocalProfile.Part block = pieces.block().get(Recompute.NONE);
        assertTrue(block.passBytes() >= saved, "each block of a pass holds what its forward saves (" + saved + "): " + block.passBytes());
        assertTrue(block.sharedPassBytes() > 0, "and a pass holds backward's rewound temporaries once: " + block);
        assertTrue(pieces.block().get(Recompute.FULL).passBytes() >= ActivationMemory.blockBytes(SMALL, 2, 16, Recompute.FULL, DType.F32),
                "full recompute still holds the block's output");
        assertTrue(pieces.head().passBytes() >= 2L * 16 * 96 * 4, "the head holds at least the logits: " + pieces.head().passBytes());
    }
}
