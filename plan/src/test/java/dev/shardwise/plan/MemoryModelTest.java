package dev.shardwise.plan;

import dev.shardwise.model.Recompute;
import dev.shardwise.parallel.ParallelLayout;
import dev.shardwise.parallel.pipeline.Instruction;
import dev.shardwise.parallel.pipeline.PipelineSchedule;
import dev.shardwise.parallel.pipeline.ScheduleKind;
import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

class MemoryModelTest {
    private final ModelSpec gpt = Specs.model("gpt3-175b");

    @Test
    void blockActivationsFollowKorthikantiTable2() {
        double s = 2048, b = 1, h = 12288, a = 96;
        for (int t : new int[] {1, 2, 8}) {
            ParallelLayout plain = new ParallelLayout(1, t, 1, 1, 1, false, 0, Recompute.NONE, 1);
            assertEquals(s * b * h * (10 + 24.0 / t + 5 * a * s / (h * t)), MemoryModel.blockActivationBytes(gpt, plain, Recompute.NONE), 1, "none, tp=" + t);
            assertEquals(s * b * h * (10 + 24.0 / t), MemoryModel.blockActivationBytes(gpt, plain, Recompute.SELECTIVE), 1, "selective, tp=" + t);
            assertEquals(2 * s * b * h, MemoryModel.blockActivationBytes(gpt, plain, Recompute.FULL), 1, "full, tp=" + t);
            if (t > 1) {
                ParallelLayout sp = new ParallelLayout(1, t, 1, 1, 1, true, 0, Recompute.NONE, 1);
                assertEquals(s * b * h / t * (34 + 5 * a * s / h), MemoryModel.blockActivationBytes(gpt, sp, Recompute.NONE), 1, "none+sp, tp=" + t);
                assertEquals(s * b * h * 34 / t, MemoryModel.blockActivationBytes(gpt, sp, Recompute.SELECTIVE), 1, "selective+sp, tp=" + t);
            }
        }
    }

    @Test
    void zeroStagesShardOptimizerThenGradientsThenWeightsOverDp() {
        CostModel costs = new CostModel(gpt, Specs.cluster("a100x3072"), CostParameters.FITTED);
        MemoryBreakdown[] m = new MemoryBreakdown[4];
        for (int zero = 0; zero <= 3; zero++) {
            m[zero] = costs.memory(new ParallelLayout(16, 8, 1, 1, 1, true, zero, Recompute.FULL, 1), ScheduleKind.ONE_F_ONE_B, 256);
        }
        double params = MemoryModel.stageParameters(gpt, new ParallelLayout(16, 8, 1, 1, 1, true, 0, Recompute.FULL, 1), LayerSplit.of(gpt.layers(), 1), 0);
        assertEquals(12 * params, m[0].optimizer(), 1, "zero 0 optimizer: 12 bytes per parameter");
        assertEquals(12 * params / 16, m[1].optimizer(), 1, "zero 1 optimizer over dp=16");
        assertEquals(2 * params, m[1].gradients(), 1, "zero 1 keeps gradients whole");
        assertEquals(2 * params / 16, m[2].gradients(), 1, "zero 2 gradients over dp=16");
        assertEquals(2 * params / 16, m[3].parameters(), 1, "zero 3 weights over dp=16");
        assertTrue(params > 175e9 / 8 * 0.99 && params < 175e9 / 8 * 1.02, "gpt3-175b per tp=8 rank: " + params);
    }

    @Test
    void oneFOneBHoldsPMicroBatchesOnTheFirstStageAndInterleavingMore() {
        CostModel costs = new CostModel(gpt, Specs.cluster("a100x3072"), CostParameters.FITTED);
        ParallelLayout oneF = new ParallelLayout(1, 8, 8, 1, 1, true, 0, Recompute.FULL, 1);
        ParallelLayout inter = new ParallelLayout(1, 8, 8, 2, 1, true, 0, Recompute.FULL, 1);
        double perBlock = MemoryModel.blockActivationBytes(gpt, oneF, Recompute.FULL);
        double working = MemoryModel.blockActivationBytes(gpt, oneF, Recompute.NONE) - perBlock;
        MemoryBreakdown a = costs.memory(oneF, ScheduleKind.ONE_F_ONE_B, 64);
        assertEquals(0, a.stage());
        assertEquals(8 * 12 * perBlock + working, a.activations(), 1, "1F1B stage 0: p=8 micro-batches x 12 blocks");
        MemoryBreakdown b = costs.memory(inter, ScheduleKind.INTERLEAVED, 64);
        assertTrue(b.activations() > a.activations(), "interleaving keeps more in flight: " + b.activations() + " vs " + a.activations());
    }

    @Test
    void inFlightCountMatchesTheFullInstructionListsForManyMicroBatches() {
        CostModel costs = new CostModel(gpt, Specs.cluster("a100x3072"), CostParameters.FITTED);
        int cases = 0;
        for (ScheduleKind kind : new ScheduleKind[] {ScheduleKind.ONE_F_ONE_B, ScheduleKind.INTERLEAVED, ScheduleKind.ZB_H1}) {
            for (int pp : new int[] {2, 4, 8, 16}) {
                int vpp = kind == ScheduleKind.INTERLEAVED ? 2 : 1;
                int m = 12 * pp;
                ParallelLayout layout = new ParallelLayout(1, 8, pp, vpp, 1, true, 0, Recompute.FULL, 1);
                MemoryBreakdown mem = costs.memory(layout, kind, m);   // counted on lists capped at m = 2p
                int live = 0, max = 0;
                for (Instruction i : PipelineSchedule.build(kind, pp, vpp, m).program(mem.stage())) {
                    if (i instanceof Instruction.Forward) max = Math.max(max, ++live);
                    else if (i instanceof Instruction.Backward || i instanceof Instruction.BackwardWeight) live--;
                }
                double perBlock = MemoryModel.blockActivationBytes(gpt, layout, Recompute.FULL);
                double expected = max * (96.0 / (pp * vpp)) * perBlock + MemoryModel.blockActivationBytes(gpt, layout, Recompute.NONE) - perBlock
                        + (mem.stage() == pp - 1 ? 2048.0 * 51200 / 8 * 4 : 0);
                assertEquals(expected, mem.activations(), 1, kind + " p=" + pp + " m=" + m + " stage " + mem.stage() + ": " + max + " chunks in flight");
                cases++;
            }
        }
        assertEquals(12, cases);
    }
}
