package dev.shardwise.plan;

import dev.shardwise.model.Recompute;
import dev.shardwise.parallel.ParallelLayout;
import dev.shardwise.parallel.pipeline.ScheduleKind;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** Grouped-query attention, SwiGLU MLPs and mixtures of experts with expert parallelism in the planner's models. */
class ModelFamiliesTest {
    private static final ModelSpec MIXTRAL = Specs.model("mixtral-8x7b");

    @Test
    void presetsCountThePublishedParameters() {
        // Llama 2 70B has an untied output head (0.26B) and no learned positions; the spec ties and adds positions.
        assertEquals(69e9, Specs.model("llama2-70b").parameters(), 0.02 * 69e9, "llama2-70b");
        assertEquals(46.7e9, MIXTRAL.parameters(), 0.01 * 46.7e9, "mixtral-8x7b, all experts");
        assertEquals(12.9e9, MIXTRAL.activeParameters(), 0.03 * 12.9e9, "mixtral-8x7b, two experts per token");
    }

    @Test
    void aDenseMultiHeadSpecKeepsTheGptFormulas() {
        ModelSpec gpt = new ModelSpec("g", 24, 1024, 16, 4096, 50304, 1024);
        double s = 1024, h = 1024, f = 4096;
        assertEquals(8 * s * h * h + 4 * s * h * f + 4 * s * s * h, gpt.blockForwardFlops(), 1);
        assertEquals(4 * h * h + 4 * h + 2 * h * f + f + h + 4 * h, gpt.blockParameters(), 1e-6);
        assertEquals(gpt.parameters(), gpt.activeParameters(), 1e-6);
    }

    @Test
    void groupedQueryAttentionNarrowsKeyValueWeightsAndActivations() {
        ModelSpec mha = new ModelSpec("mha", 8, 1024, 16, 4096, 32000, 512);
        ModelSpec gqa = new ModelSpec("gqa", 8, 1024, 16, 4096, 32000, 512, 2, 0, 0, 0, false);
        double h = 1024, hd = 64, dropped = 14 * hd;    // 14 of 16 key/value heads gone
        assertEquals(2 * h * dropped + 2 * dropped, mha.blockParameters() - gqa.blockParameters(), 1e-6, "K and V weights and biases");
        assertEquals(2 * 512 * h * 2 * dropped, mha.blockForwardFlops() - gqa.blockForwardFlops(), 1, "K and V products");
        ParallelLayout one = new ParallelLayout(1, 1, 1, 1, 1, false, 0, Recompute.NONE, 1);
        double sbh = 512 * h;
        assertEquals(4 * (14.0 / 16) * sbh, MemoryModel.blockActivationBytes(mha, one, Recompute.NONE)
                - MemoryModel.blockActivationBytes(gqa, one, Recompute.NONE), 1, "K and V saved for 2 of 16 heads");
        // tp 4 over 2 kv heads replicates them: accepted; tp 3 neither divides nor is divided by them: refused.
        new CostModel(gqa, Specs.cluster("a100x8"), CostParameters.FITTED)
                .estimate(new ParallelLayout(2, 4, 1, 1, 1, true, 0, Recompute.NONE, 1), ScheduleKind.ONE_F_ONE_B, 16);
        ModelSpec odd = new ModelSpec("odd", 8, 960, 12, 3840, 32004, 512, 4, 0, 0, 0, false);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> MemoryModel.checkDivisible(odd,
                new ParallelLayout(1, 3, 1, 1, 1, false, 0, Recompute.NONE, 1)));
        assertTrue(e.getMessage().contains("kv_heads=4"), e.getMessage());
    }

    /**
     * An MoE block's activations under tensor and sequence parallelism: the dispatched copies of its tokens
     * (topK·2·s·b·h bytes) are whole on every tp rank, the rest splits by t as Korthikanti et al. count it.
     */
    @Test
    void anMoeBlocksDispatchedTokensAreNotSplitByTp() {
        double sbh = (double) MIXTRAL.seq() * MIXTRAL.hidden(), dispatched = MIXTRAL.topK() * 2 * sbh;
        for (Recompute recompute : List.of(Recompute.NONE, Recompute.SELECTIVE)) {
            double[] rest = new double[3];
            for (int i = 0; i < 3; i++) {
                int t = 2 << i;
                double bytes = MemoryModel.blockActivationBytes(MIXTRAL, new ParallelLayout(1, t, 1, 1, 1, true, 0, recompute, 1), recompute);
                rest[i] = (bytes - dispatched) * t;
            }
            assertEquals(rest[0], rest[1], 1e-6 * rest[0], recompute + ": the rest splits by t (2 and 4)");
            assertEquals(rest[0], rest[2], 1e-6 * rest[0], recompute + ": the rest splits by t (2 and 8)");
            double without = MemoryModel.blockActivationBytes(MIXTRAL, new ParallelLayout(1, 2, 1, 1, 1, false, 0, recompute, 1), recompute);
            assertEquals(10 * sbh / 2, without - rest[0] / 2 - dispatched, 1e-6 * without,
                    recompute + ": without sp only the sequence region (10·s·b·h) stays whole");
        }
    }

    @Test
    void expertStateIsShardedOverTheExpertDataParallelGroup() {
        CostModel costs = new CostModel(MIXTRAL, Specs.cluster("a100x3072"), CostParameters.FITTED);
        ParallelLayout layout = new ParallelLayout(8, 2, 4, 1, 4, true, 1, Recompute.FULL, 1);
        MemoryBreakdown m = costs.memory(layout, ScheduleKind.ONE_F_ONE_B, 64);
        int[] split = LayerSplit.of(MIXTRAL.layers(), layout.pp());
        double experts = MemoryModel.stageExpertParameters(MIXTRAL, layout, split, m.stage());
        double shared = MemoryModel.stageParameters(MIXTRAL, layout, split, m.stage()) - experts;
        assertEquals(32.0 / 4 * 8 / 4 * MIXTRAL.mlpParameters() / 2, experts, 1e-3, "8 blocks x 2 of 8 experts, halved by tp");
        assertEquals(12 * (shared / 8 + experts / 2), m.optimizer(), 1, "ZeRO 1: shared state over dp=8, experts' over dp/ep=2");
        assertEquals(2 * (shared + experts), m.parameters(), 1, "weights whole below ZeRO 3");
    }

    @Test
    void expertParallelismPaysAllToAllsAndHoldsFewerExperts() {
        CostModel costs = new CostModel(MIXTRAL, Specs.cluster("a100x3072").withNodes(8), CostParameters.FITTED);
        Estimate dense = costs.estimate(new ParallelLayout(8, 2, 4, 1, 1, true, 1, Recompute.FULL, 1), ScheduleKind.ONE_F_ONE_B, 256);
        Estimate spread = costs.estimate(new ParallelLayout(8, 2, 4, 1, 8, true, 1, Recompute.FULL, 1), ScheduleKind.ONE_F_ONE_B, 256);
        assertEquals(0, dense.epCommSeconds(), "ep 1 sends no tokens");
        assertTrue(spread.epCommSeconds() > 0, "ep 8 dispatches and combines");
        assertTrue(spread.memory().parameters() < 0.3 * dense.memory().parameters(),
                "ep 8 holds one expert per block instead of eight: " + spread.memory().parameters() + " vs " + dense.memory().parameters());
        assertEquals(dense.modelFlops(), spread.modelFlops(), 1, "the same tokens do the same work");
    }

    @Test
    void theSearchTriesExpertParallelismForMoeModelsOnly() {
        List<Estimate> moe = new Planner(new CostModel(MIXTRAL, Specs.cluster("a100-40gb-x64"), CostParameters.FITTED)).search(256, 16);
        assertFalse(moe.isEmpty(), "some layout of mixtral-8x7b fits 64 A100 40GB");
        assertTrue(moe.stream().anyMatch(e -> e.layout().ep() > 1), "ep > 1 among the best: " + moe.stream().map(Estimate::layoutText).toList());
        for (Estimate e : moe) assertTrue(e.fits(), e.layoutText());
        List<Estimate> dense = new Planner(new CostModel(Specs.model("gpt-7.5b"), Specs.cluster("a100-40gb-x64"), CostParameters.FITTED)).search(256, 16);
        assertTrue(dense.stream().allMatch(e -> e.layout().ep() == 1), "a dense model is never given ep > 1");
        IllegalArgumentException err = assertThrows(IllegalArgumentException.class, () ->
                new Planner(new CostModel(Specs.model("gpt-7.5b"), Specs.cluster("a100-40gb-x64"), CostParameters.FITTED))
                        .explain("tp=2,pp=4,dp=8,ep=2", 256));
        assertTrue(err.getMessage().contains("use ep=1"), err.getMessage());
    }

    @Test
    void moeKeysInUserFilesAreChecked(@TempDir Path dir) throws Exception {
        Path file = dir.resolve("m.yaml");
        Files.writeString(file, "layers: 4\nhidden: 256\nheads: 4\nvocab: 1000\nseq: 128\nexperts: 8\nmlp: swiglu\n");
        ModelSpec m = Specs.model(file.toString());
        assertEquals(2, m.topK(), "top_k defaults to 2");
        assertEquals(1, m.moeEvery(), "every block is MoE by default");
        assertTrue(m.gatedMlp());
        Files.writeString(file, "layers: 4\nhidden: 256\nheads: 4\nvocab: 1000\nseq: 128\ntop_k: 2\n");
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> Specs.model(file.toString()));
        assertTrue(e.getMessage().contains("need experts"), e.getMessage());
        Files.writeString(file, "layers: 4\nhidden: 256\nheads: 4\nvocab: 1000\nseq: 128\nexperts: 4\ntop_k: 5\n");
        e = assertThrows(IllegalArgumentException.class, () -> Specs.model(file.toString()));
        assertTrue(e.getMessage().contains("top_k=5"), e.getMessage());
    }
}
