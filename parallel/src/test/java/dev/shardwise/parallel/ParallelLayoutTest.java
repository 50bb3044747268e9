package dev.shardwise.parallel;

import dev.shardwise.model.Recompute;
import org.junit.jupiter.api.Test;

import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.function.Function;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class ParallelLayoutTest {

    private static final ParallelLayout.ModelDimensions GPT_SMALL =
            new ParallelLayout.ModelDimensions(16, 1024, 4096, 16, 16, 50304, 1024, 0);

    /** The table in ParallelLayout's class Javadoc, group for group. */
    @Test
    void layoutBuildsTheDocumented16RankGroups() {
        ParallelLayout layout = ParallelLayout.of(2, 2, 4);
        assertEquals(16, layout.worldSize());

        int[] tpRank = {0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1};
        int[] dpRank = {0, 0, 1, 1, 0, 0, 1, 1, 0, 0, 1, 1, 0, 0, 1, 1};
        int[] ppStage = {0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3};
        for (int g = 0; g < 16; g++) {
            ParallelLayout.Coordinates c = layout.coordinates(g);
            assertEquals(tpRank[g], c.tpRank(), "tpRank of global rank " + g);
            assertEquals(dpRank[g], c.dpRank(), "dpRank of global rank " + g);
            assertEquals(ppStage[g], c.ppStage(), "ppStage of global rank " + g);
        }
        assertEquals(List.of(List.of(0, 1), List.of(2, 3), List.of(4, 5), List.of(6, 7),
                        List.of(8, 9), List.of(10, 11), List.of(12, 13), List.of(14, 15)),
                layout.tensorParallelGroups(), "tp groups");
        assertEquals(List.of(List.of(0, 2), List.of(1, 3), List.of(4, 6), List.of(5, 7),
                        List.of(8, 10), List.of(9, 11), List.of(12, 14), List.of(13, 15)),
                layout.dataParallelGroups(), "dp groups");
        assertEquals(List.of(List.of(0, 4, 8, 12), List.of(1, 5, 9, 13), List.of(2, 6, 10, 14),
                        List.of(3, 7, 11, 15)),
                layout.pipelineGroups(), "pp groups");
        assertEquals(List.of(List.of(0, 1, 4, 5, 8, 9, 12, 13), List.of(2, 3, 6, 7, 10, 11, 14, 15)),
                layout.modelParallelGroups(), "model-parallel groups");
        assertEquals(List.of(List.of(0, 12), List.of(1, 13), List.of(2, 14), List.of(3, 15)),
                layout.embeddingGroups(), "embedding groups");

        // "With ep=2 in the same layout the expert-parallel groups equal the dp groups and each
        // expert-data-parallel group is a single rank."
        ParallelLayout withExperts = new ParallelLayout(2, 2, 4, 1, 2, false, 0, Recompute.NONE, 1);
        assertEquals(layout.dataParallelGroups(), withExperts.expertParallelGroups(), "ep groups with ep=2");
        List<List<Integer>> singles = new ArrayList<>();
        for (int g = 0; g < 16; g++) {
            singles.add(List.of(g));
        }
        assertEquals(singles, withExperts.expertDataParallelGroups(), "expert-dp groups with ep=2");
    }

    @Test
    void coordinatesRoundTripToGlobalRankForManyLayouts() {
        int layouts = 0;
        for (ParallelLayout layout : manyLayouts()) {
            layouts++;
            for (int g = 0; g < layout.worldSize(); g++) {
                ParallelLayout.Coordinates c = layout.coordinates(g);
                String where = layout + " global rank " + g + " " + c;
                assertEquals(g, layout.globalRank(c), where);
                assertEquals(g, c.tpRank() + c.dpRank() * layout.tp() + c.ppStage() * layout.tp() * layout.dp(),
                        "rank equation for " + where);
                assertTrue(c.epRank() < layout.ep() && c.expertDpRank() < layout.expertDp(), where);
                assertEquals(c.dpRank(), c.expertDpRank() * layout.ep() + c.epRank(), "ep split of dp, " + where);
            }
        }
        assertTrue(layouts > 50, "only " + layouts + " layouts checked");
    }

    /** Each kind of group partitions the world, and its members share exactly the coordinates they should. */
    @Test
    void everyGroupKindPartitionsTheWorldAlongItsAxis() {
        for (ParallelLayout layout : manyLayouts()) {
            checkPartition(layout, "tp", layout.tensorParallelGroups(), layout.tp(),
                    c -> List.of(c.dpRank(), c.ppStage()), ParallelLayout.Coordinates::tpRank);
            checkPartition(layout, "dp", layout.dataParallelGroups(), layout.dp(),
                    c -> List.of(c.tpRank(), c.ppStage()), ParallelLayout.Coordinates::dpRank);
            checkPartition(layout, "pp", layout.pipelineGroups(), layout.pp(),
                    c -> List.of(c.tpRank(), c.dpRank()), ParallelLayout.Coordinates::ppStage);
            checkPartition(layout, "ep", layout.expertParallelGroups(), layout.ep(),
                    c -> List.of(c.tpRank(), c.ppStage(), c.expertDpRank()), ParallelLayout.Coordinates::epRank);
            checkPartition(layout, "edp", layout.expertDataParallelGroups(), layout.expertDp(),
                    c -> List.of(c.tpRank(), c.ppStage(), c.epRank()), ParallelLayout.Coordinates::expertDpRank);
            checkPartition(layout, "mp", layout.modelParallelGroups(), layout.tp() * layout.pp(),
                    c -> List.of(c.dpRank()), c -> c.tpRank() + c.ppStage() * layout.tp());
        }
    }

    private static void checkPartition(ParallelLayout layout, String kind, List<List<Integer>> groups, int size,
                                       Function<ParallelLayout.Coordinates, List<Integer>> shared,
                                       Function<ParallelLayout.Coordinates, Integer> rankInGroup) {
        Set<Integer> seen = new HashSet<>();
        int previousFirst = -1;
        for (int i = 0; i < groups.size(); i++) {
            List<Integer> group = groups.get(i);
            String where = layout + " " + kind + "[" + i + "]=" + group;
            assertEquals(size, group.size(), "size of " + where);
            assertTrue(group.getFirst() > previousFirst, "groups numbered by smallest rank: " + where);
            previousFirst = group.getFirst();
            List<Integer> common = shared.apply(layout.coordinates(group.getFirst()));
            for (int k = 0; k < group.size(); k++) {
                ParallelLayout.Coordinates c = layout.coordinates(group.get(k));
                assertTrue(seen.add(group.get(k)), "rank " + group.get(k) + " in two groups, " + where);
                assertEquals(common, shared.apply(c), "shared coordinates in " + where);
                assertEquals(k, rankInGroup.apply(c), "rank order in " + where);
            }
        }
        assertEquals(layout.worldSize(), seen.size(), layout + " " + kind + " groups cover the world");
    }

    @Test
    void tpNotDividingHeadsIsRejectedWithTheValidChoices() {
        var e = assertThrows(IllegalArgumentException.class,
                () -> ParallelLayout.divide("model.heads", 16, "tp", 3));
        assertEquals("tp=3 does not divide model.heads=16; use tp in {1, 2, 4, 8, 16}", e.getMessage());

        var gpt2Vocab = new ParallelLayout.ModelDimensions(16, 1024, 4096, 16, 16, 50257, 1024, 0);
        var fit = assertThrows(IllegalArgumentException.class,
                () -> new ParallelLayout(1, 3, 1, 1, 1, false, 0, Recompute.NONE, 1).validateFor(gpt2Vocab));
        assertTrue(fit.getMessage().contains("tp=3 does not divide model.heads=16; use tp in {1, 2, 4, 8, 16}"),
                fit.getMessage());
        assertTrue(fit.getMessage().contains("model.kvHeads=16"), "every problem reported: " + fit.getMessage());
        assertTrue(fit.getMessage().contains("pad the vocabulary to 50304"), fit.getMessage());
    }

    @Test
    void moreChunksThanLayersIsRejectedButAnUnevenSplitFits() {
        new ParallelLayout(1, 1, 4, 3, 1, false, 0, Recompute.NONE, 1).validateFor(GPT_SMALL);   // 12 chunks of 16 layers
        ParallelLayout layout = new ParallelLayout(1, 1, 4, 5, 1, false, 0, Recompute.NONE, 1);
        var e = assertThrows(IllegalArgumentException.class, () -> layout.validateFor(GPT_SMALL));
        assertTrue(e.getMessage().contains("pp·vpp=4·5=20 model chunks but model.layers=16; every chunk needs at least "
                + "one block: use pp·vpp <= 16"), e.getMessage());
        assertEquals(2, new ParallelLayout(1, 1, 4, 2, 1, false, 0, Recompute.NONE, 1).layersPerChunk(16));
        var even = assertThrows(IllegalArgumentException.class,
                () -> new ParallelLayout(1, 1, 4, 3, 1, false, 0, Recompute.NONE, 1).layersPerChunk(16));
        assertEquals("pp·vpp=12 does not divide model.layers=16; use pp·vpp in {1, 2, 4, 8, 16}", even.getMessage());
    }

    @Test
    void worldSizeMismatchSaysWhichDpFits() {
        ParallelLayout layout = ParallelLayout.of(2, 2, 4);
        var twelve = assertThrows(IllegalArgumentException.class, () -> layout.requireWorldSize(12));
        assertEquals("world size 12 does not match the layout's dp·tp·pp = 2·2·4 = 16; launch 16 ranks, or "
                + "choose tp·pp dividing 12", twelve.getMessage());
        var eight = assertThrows(IllegalArgumentException.class, () -> layout.requireWorldSize(8));
        assertTrue(eight.getMessage().contains("use dp=1 for 8 ranks"), eight.getMessage());
        layout.requireWorldSize(16);

        assertEquals(3, ParallelLayout.dataParallelSize(24, 2, 4));
        var derive = assertThrows(IllegalArgumentException.class, () -> ParallelLayout.dataParallelSize(12, 2, 4));
        assertEquals("tp·pp=8 does not divide world size=12; use tp·pp in {1, 2, 3, 4, 6, 12}", derive.getMessage());
    }

    @Test
    void zeroStageOutsideZeroToThreeIsRejected() {
        for (int stage : new int[] {-1, 4}) {
            var e = assertThrows(IllegalArgumentException.class,
                    () -> new ParallelLayout(1, 1, 1, 1, 1, false, stage, Recompute.NONE, 1), "stage " + stage);
            assertTrue(e.getMessage().startsWith("zeroStage=" + stage + " is not a ZeRO stage; use 0 (off), 1"),
                    e.getMessage());
        }
        for (int stage = 0; stage <= 3; stage++) {
            assertEquals(stage, new ParallelLayout(1, 1, 1, 1, 1, false, stage, Recompute.FULL, 1).zeroStage());
        }
    }

    @Test
    void microBatchBelowOneIsRejected() {
        var e = assertThrows(IllegalArgumentException.class,
                () -> new ParallelLayout(1, 1, 1, 1, 1, false, 0, Recompute.NONE, 0));
        assertEquals("microBatch=0 must be at least 1; a micro-batch holds at least one sequence", e.getMessage());
    }

    @Test
    void incompatibleOptionsAreRejectedNamingBoth() {
        assertMessage("tp=0 must be at least 1; use tp=1 for no tensor parallelism",
                () -> new ParallelLayout(1, 0, 1, 1, 1, false, 0, Recompute.NONE, 1));
        assertMessage("ep=3 does not divide dp=4: expert-parallel groups are made of data-parallel ranks; "
                        + "use ep in {1, 2, 4}",
                () -> new ParallelLayout(4, 1, 1, 1, 3, false, 0, Recompute.NONE, 1));
        assertMessage("vpp=2 needs pp >= 2: virtual stages interleave model chunks over several pipeline stages; "
                        + "use pp >= 2 or vpp=1",
                () -> new ParallelLayout(1, 1, 1, 2, 1, false, 0, Recompute.NONE, 1));
        assertMessage("sequenceParallel=true needs tp >= 2: it splits over the tp group the activations tensor "
                        + "parallelism replicates; use tp >= 2 or sequenceParallel=false",
                () -> new ParallelLayout(1, 1, 1, 1, 1, true, 0, Recompute.NONE, 1));
        assertThrows(NullPointerException.class, () -> new ParallelLayout(1, 1, 1, 1, 1, false, 0, null, 1));
        assertThrows(IllegalArgumentException.class, () -> ParallelLayout.of(1 << 16, 1 << 8, 1 << 8));
    }

    @Test
    void validateForChecksSequenceAndExperts() {
        var moe = new ParallelLayout.ModelDimensions(4, 256, 1024, 4, 2, 8192, 250, 6);
        new ParallelLayout(4, 2, 2, 1, 2, false, 1, Recompute.SELECTIVE, 2).validateFor(moe);
        var sp = assertThrows(IllegalArgumentException.class,
                () -> new ParallelLayout(1, 4, 1, 1, 1, true, 0, Recompute.NONE, 1).validateFor(moe));
        assertFalse(sp.getMessage().contains("kvHeads"), "2 kv heads replicate over tp 4: " + sp.getMessage());
        new ParallelLayout(1, 4, 1, 1, 1, false, 0, Recompute.NONE, 1).validateFor(moe);
        var kv = assertThrows(IllegalArgumentException.class, () -> new ParallelLayout(1, 2, 1, 1, 1, false, 0, Recompute.NONE, 1)
                .validateFor(new ParallelLayout.ModelDimensions(4, 240, 960, 6, 3, 8192, 256, 0)));
        assertTrue(kv.getMessage().contains("tp=2 neither divides model.kvHeads=3 nor is a multiple of it")
                && kv.getMessage().contains("use tp in {1, 3, 6}"), kv.getMessage());
        assertTrue(sp.getMessage().contains("tp=4 does not divide model.sequence (with sequenceParallel)=250"),
                sp.getMessage());
        var ep = assertThrows(IllegalArgumentException.class,
                () -> new ParallelLayout(4, 1, 1, 1, 4, false, 0, Recompute.NONE, 1).validateFor(moe));
        assertTrue(ep.getMessage().contains("ep=4 does not divide model.experts=6; use ep in {1, 2, 3, 6}"),
                ep.getMessage());
        var dense = assertThrows(IllegalArgumentException.class,
                () -> new ParallelLayout(2, 1, 1, 1, 2, false, 0, Recompute.NONE, 1).validateFor(GPT_SMALL));
        assertTrue(dense.getMessage().contains("ep=2 but model.experts=0 (a dense model); use ep=1"),
                dense.getMessage());
    }

    @Test
    void chunksAreDealtRoundRobinOverStages() {
        ParallelLayout layout = new ParallelLayout(1, 1, 2, 2, 1, false, 0, Recompute.NONE, 1);
        assertEquals(0, layout.firstLayer(0, 0, 8));
        assertEquals(2, layout.firstLayer(1, 0, 8));
        assertEquals(4, layout.firstLayer(0, 1, 8));
        assertEquals(6, layout.firstLayer(1, 1, 8));
        assertThrows(IllegalArgumentException.class, () -> layout.firstLayer(2, 0, 8));
    }

    @Test
    void globalRankRejectsCoordinatesOutsideTheLayout() {
        ParallelLayout layout = new ParallelLayout(4, 2, 1, 1, 2, false, 0, Recompute.NONE, 1);
        assertMessage("tpRank=2 is outside [0, tp=2)",
                () -> layout.globalRank(new ParallelLayout.Coordinates(2, 0, 0, 0, 0)));
        assertThrows(IllegalArgumentException.class,
                () -> layout.globalRank(new ParallelLayout.Coordinates(0, 1, 0, 0, 0)), "epRank inconsistent");
        assertMessage("globalRank=8 is outside [0, worldSize=8)", () -> layout.coordinates(8));
    }

    @Test
    void recomputeParsesConfigNames() {
        assertEquals(Recompute.SELECTIVE, Recompute.parse("Selective"));
        assertEquals("full", Recompute.FULL.toString());
        assertMessage("recompute='some' is not a recompute policy; use one of none, selective, full",
                () -> Recompute.parse("some"));
    }

    private static void assertMessage(String expected, org.junit.jupiter.api.function.Executable call) {
        assertEquals(expected, assertThrows(IllegalArgumentException.class, call).getMessage());
    }

    /** Every layout with dp, tp, pp in 1..4, vpp 1 or 2 where allowed, and every ep dividing dp. */
    static List<ParallelLayout> manyLayouts() {
        List<ParallelLayout> out = new ArrayList<>();
        for (int dp = 1; dp <= 4; dp++) {
            for (int tp = 1; tp <= 4; tp++) {
                for (int pp = 1; pp <= 4; pp++) {
                    for (int ep = 1; ep <= dp; ep++) {
                        if (dp % ep == 0) {
                            int vpp = pp > 1 ? 2 : 1;
                            out.add(new ParallelLayout(dp, tp, pp, vpp, ep, tp > 1, (dp + tp) % 4,
                                    Recompute.values()[pp % 3], 1 + ep % 2));
                        }
                    }
                }
            }
        }
        return out;
    }
}
