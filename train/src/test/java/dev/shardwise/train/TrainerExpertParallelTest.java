package dev.shardwise.train;

import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.parallel.ZeroMemory;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.*;

/**
 * The trainer under expert parallelism (GShard; {@code train --ep N}) against the same layout at ep 1: the same
 * routing (every rank routes its own micro-batch's tokens, dropless), so over 20 steps the training and validation
 * losses agree within 1e-5 relative, only the reduction order differing. Checkpoints hold each expert once under its
 * global name, so an ep 2 run resumes bit for bit and its checkpoint loads at ep 1 (and an ep 1 one at ep 2).
 */
class TrainerExpertParallelTest {
    @TempDir
    static Path dir;
    static Path data;

    @BeforeAll
    static void prepareTinyData() throws IOException {
        data = TrainerResumeTest.tinyData(dir);
    }

    /**
     * {@code ranks} ranks as dp = ranks/pp replicas of {@code pp} stages (1 or 2, a block each), ep of them splitting the experts: a 2-block
     * model with 4 experts of hidden 32, top-2, in every block; micro-batches of 2 rows, 2 per step per replica.
     */
    static Map<String, Object> flags(Path runDir, int ranks, int pp, int ep, int zero, int steps) {
        return flags(runDir, ranks, pp, 1, ep, zero, steps);
    }

    /**
     * As {@link #flags(Path, int, int, int, int, int)} with {@code vpp} model chunks per stage: vpp 2 runs the
     * interleaved schedule on a model of pp·vpp blocks, cut a block per chunk, so every chunk holds one MoE block.
     */
    static Map<String, Object> flags(Path runDir, int ranks, int pp, int vpp, int ep, int zero, int steps) {
        Map<String, Object> flags = new HashMap<>(TrainerResumeTest.flags(data, runDir, ranks, zero));
        int layers = Math.max(2, pp * vpp);
        flags.put("pp", pp);
        flags.put("vpp", vpp);
        if (vpp > 1) flags.put("schedule", "interleaved");
        // one MoE block per chunk (balancing would give stage 0 both of pp 2's)
        if (pp > 1) flags.put("pipelineCut", java.util.stream.IntStream.range(0, layers).boxed().toList());
        flags.put("ep", ep);
        flags.put("batchSize", 2);
        flags.put("gradAccumulation", 2);
        flags.put("steps", steps);
        flags.put("evalEvery", 5);
        flags.put("checkpointEvery", 10);
        flags.put("model", Map.of("vocabSize", 300, "contextLength", 8, "layers", layers, "hidden", 16, "heads", 2,
                "kvHeads", 2, "ffnHidden", 64, "moe", Map.of("experts", 4, "topK", 2, "expertHidden", 32)));
        return flags;
    }

    static TrainConfig config(Path runDir, int ranks, int pp, int ep, int zero) {
        return config(runDir, ranks, pp, 1, ep, zero);
    }

    static TrainConfig config(Path runDir, int ranks, int pp, int vpp, int ep, int zero) {
        return ConfigLoader.resolve(Map.of(), "test", flags(runDir, ranks, pp, vpp, ep, zero, 20));
    }

    static List<Double> column(Path runDir, String key) throws IOException {
        return MetricsLog.read(runDir.resolve("metrics.jsonl")).stream().filter(row -> row.get(key) instanceof Number)
                .map(row -> ((Number) row.get(key)).doubleValue()).toList();
    }

    static void assertClose(List<Double> expected, List<Double> got, double relative, String name) {
        assertEquals(expected.size(), got.size(), name + ": entries");
        assertFalse(expected.isEmpty(), name + ": nothing to compare");
        for (int i = 0; i < expected.size(); i++) {
            assertEquals(expected.get(i), got.get(i), relative * Math.abs(expected.get(i)), name + " " + (i + 1));
        }
    }

    /**
     * ep against ep 1 at the same layout; vpp 2 is the interleaved schedule (4 chunks of one MoE block over pp 2, each
     * rank running two), whose chunks each run their experts' all-to-alls over the same dp group.
     */
    @ParameterizedTest(name = "ranks={0} pp={1} vpp={2} ep={3} zero={4}")
    @CsvSource({"2, 1, 1, 2, 0", "4, 1, 1, 4, 1", "4, 1, 1, 2, 1", "4, 2, 1, 2, 0", "4, 1, 1, 2, 2", "4, 1, 1, 2, 3", "4, 2, 1, 2, 3",
            "4, 2, 2, 2, 0", "4, 2, 2, 2, 1", "4, 2, 2, 2, 2", "4, 2, 2, 2, 3"})
    void expertParallelTrainsLikeEp1(int ranks, int pp, int vpp, int ep, int zero) throws IOException {
        String name = "ranks " + ranks + " pp " + pp + " vpp " + vpp + " ep " + ep + " zero " + zero;
        String layout = ranks + "-" + pp + (vpp > 1 ? "-vpp" + vpp : "") + "-" + zero;
        Path reference = dir.resolve("ep1-" + layout), run = dir.resolve("ep" + ep + "-" + layout);
        if (!Files.exists(reference)) {   // ep 2 and ep 4 over dp 4 at ZeRO 1 share their reference
            new Trainer(config(reference, ranks, pp, vpp, 1, zero), TrainerResumeTest.quiet()).run(false);
        }
        new Trainer(config(run, ranks, pp, vpp, ep, zero), TrainerResumeTest.quiet()).run(false);
        assertClose(column(reference, "loss"), column(run, "loss"), 1e-5, name + ": loss of step");
        assertClose(column(reference, "val_loss"), column(run, "val_loss"), 1e-5, name + ": validation loss");
        // AdamW hardly sees a gradient's scale; the norm does (each expert's gradient counted once, scaled by 1/ep)
        assertClose(column(reference, "grad_norm"), column(run, "grad_norm"), 1e-5, name + ": gradient norm");
        // the routers see the same tokens: the balance loss and the expert load (summed over the chunks) agree too
        assertClose(column(reference, "aux_loss"), column(run, "aux_loss"), 1e-5, name + ": auxiliary (balance) loss");
        assertClose(column(reference, "moe_load_max_over_mean"), column(run, "moe_load_max_over_mean"), 1e-5,
                name + ": expert load max/mean");
        assertEquals(20, column(run, "loss").size(), name + ": 20 steps");
        // rank 0's pool holds exactly the model state --dry-run says it allocates (ZeRO 2/3: its padded pieces of the
        // dense runs over dp and of the experts over the expert-data-parallel group), within 2% of ZeRO's formula
        TrainConfig config = config(run, ranks, pp, vpp, ep, zero);
        ZeroMemory allocated = MemoryReport.allocated(config, 0), formula = MemoryReport.formula(config, 0);
        Map<String, Object> last = MetricsLog.read(run.resolve("metrics.jsonl")).getLast();
        for (MemoryCategory c : MemoryReport.MODEL_STATE) {
            long peak = ((Number) last.get("mem_peak_" + c.label().replace('-', '_'))).longValue();
            assertEquals(allocated.bytes(c), peak, name + ": " + c.label() + " in rank 0's pool against --dry-run");
            assertEquals(formula.bytes(c), peak, 0.02 * formula.bytes(c), name + ": " + c.label() + " against ZeRO's formula");
        }
        assertEquals(4, column(run, "val_loss").size(), name + ": every 5 steps");
        List<Double> loss = column(reference, "loss");
        assertTrue(loss.getLast() < loss.getFirst(), name + ": the reference trains");
        CheckpointIndex index = Checkpoint.index(run.resolve("checkpoints").resolve(Checkpoint.directoryName(20)));
        long stored = index.files().values().stream().mapToLong(Long::longValue).sum(), elements = 0;
        for (CheckpointIndex.TensorInfo t : index.tensors().values()) elements += t.numel();
        assertEquals(4 * elements, stored, name + ": the shards hold every element of every tensor exactly once");
    }

    /**
     * Mixture-of-experts blocks under tensor parallelism (each expert's linears split as Megatron splits an MLP, the
     * router whole), with and without sequence parallelism (the router and the experts over the gathered sequence):
     * tp 2 against one rank, and ep 2 × tp 2 (4 ranks, dp 2) against dp 2 without either, the same global batch:
     * losses, validation losses, gradient norms and the auxiliary (balance) loss within 1e-5 relative over 20 steps,
     * and rank 0's pool holding exactly the model state the dry run prints.
     */
    @ParameterizedTest(name = "ranks={0} tp={1} ep={2} zero={3} sp={5} against ranks={4}")
    @CsvSource({"2, 2, 1, 0, 1, false", "4, 2, 2, 1, 2, false", "4, 2, 2, 3, 2, false", "2, 2, 1, 0, 1, true", "4, 2, 2, 1, 2, true"})
    void expertsUnderTensorParallelismTrainLikeOneTpRank(int ranks, int tp, int ep, int zero, int referenceRanks, boolean sp)
            throws IOException {
        String name = "ranks " + ranks + " tp " + tp + " ep " + ep + " zero " + zero + (sp ? " sp" : "");
        Path reference = dir.resolve("tp-reference-" + referenceRanks);
        Path run = dir.resolve("tp" + tp + "-ep" + ep + "-" + ranks + "-zero" + zero + (sp ? "-sp" : ""));
        if (!Files.exists(reference)) new Trainer(config(reference, referenceRanks, 1, 1, 0), TrainerResumeTest.quiet()).run(false);
        Map<String, Object> flags = flags(run, ranks, 1, ep, zero, 20);
        flags.put("tp", tp);
        flags.put("sequenceParallel", sp);
        TrainConfig config = ConfigLoader.resolve(Map.of(), "test", flags);
        new Trainer(config, TrainerResumeTest.quiet()).run(false);
        assertClose(column(reference, "loss"), column(run, "loss"), 1e-5, name + ": loss of step");
        assertClose(column(reference, "val_loss"), column(run, "val_loss"), 1e-5, name + ": validation loss");
        assertClose(column(reference, "grad_norm"), column(run, "grad_norm"), 1e-5, name + ": gradient norm");
        assertClose(column(reference, "aux_loss"), column(run, "aux_loss"), 1e-5, name + ": auxiliary (balance) loss");
        ZeroMemory allocated = MemoryReport.allocated(config, 0);
        Map<String, Object> last = MetricsLog.read(run.resolve("metrics.jsonl")).getLast();
        for (MemoryCategory c : MemoryReport.MODEL_STATE) {
            long peak = ((Number) last.get("mem_peak_" + c.label().replace('-', '_'))).longValue();
            assertEquals(allocated.bytes(c), peak, name + ": " + c.label() + " in rank 0's pool against --dry-run");
        }
    }

    /**
     * The balance loss is computed over the same tokens whatever the layout: under tp 2 with sequence parallelism the
     * router sees the whole gathered sequence, so a model with shared experts, biases and loss-free balancing (its
     * balance bias updated from the load) logs the same auxiliary loss and expert load as tp 2 without it, within
     * 1e-5 relative (only the reduction order differs).
     */
    @Test
    void theBalanceLossIsTheSameWithAndWithoutSequenceParallelism() throws IOException {
        Map<String, List<Double>> aux = new HashMap<>(), load = new HashMap<>(), loss = new HashMap<>();
        for (boolean sp : List.of(false, true)) {
            for (String balance : List.of("aux", "bias")) {
                Path run = dir.resolve("balance-" + balance + (sp ? "-sp" : ""));
                Map<String, Object> flags = flags(run, 2, 1, 1, 0, 10);
                flags.put("tp", 2);
                flags.put("sequenceParallel", sp);
                flags.put("model", Map.of("vocabSize", 300, "contextLength", 8, "layers", 2, "hidden", 16, "heads", 2, "kvHeads", 2,
                        "ffnHidden", 64, "moe", Map.of("experts", 4, "topK", 2, "expertHidden", 32, "sharedExperts", 1,
                                "balance", balance, "zLossWeight", 0.001)));
                new Trainer(ConfigLoader.resolve(Map.of(), "test", flags), TrainerResumeTest.quiet()).run(false);
                aux.put(balance + sp, column(run, "aux_loss"));
                load.put(balance + sp, column(run, "moe_load_max_over_mean"));
                loss.put(balance + sp, column(run, "loss"));
            }
        }
        for (String balance : List.of("aux", "bias")) {
            String name = "balance " + balance + ", tp 2 with sequence parallelism against without";
            assertClose(aux.get(balance + false), aux.get(balance + true), 1e-5, name + ": auxiliary loss of step");
            assertClose(load.get(balance + false), load.get(balance + true), 1e-5, name + ": expert load max/mean of step");
            assertClose(loss.get(balance + false), loss.get(balance + true), 1e-5, name + ": loss of step");
        }
    }

    /**
     * An ep 2 × dp 2 run with ZeRO 1 (each expert's AdamW state sharded over the two ranks holding it) resumed from
     * its step-10 checkpoint ends bit for bit like the uninterrupted run (its checkpoints saved asynchronously, the
     * other's synchronously: the same contents); its checkpoint holds every expert once by
     * global name, and loads at ep 1 (one rank holding all experts) with the next loss within 1e-6.
     */
    @Test
    void anEp2CheckpointResumesBitForBitAndLoadsAtEp1() throws IOException {
        Path whole = dir.resolve("ckpt-ep2"), resumed = dir.resolve("ckpt-ep2-resumed");
        new Trainer(config(whole, 4, 1, 2, 1), TrainerResumeTest.quiet()).run(false);
        Path ten = whole.resolve("checkpoints").resolve(Checkpoint.directoryName(10));
        CheckpointIndex index = Checkpoint.index(ten);
        for (int e = 0; e < 4; e++) {
            for (String kind : List.of("param/", "adam_m/", "adam_v/")) {
                String tensor = kind + "h.1.mlp.experts." + e + ".fc.weight";
                assertTrue(index.manifest().get("tensors") instanceof Map<?, ?> t && t.containsKey(tensor), tensor + " saved");
            }
        }

        // this copy saves asynchronously (each rank's pieces copied to host buffers, written in the background)
        Map<String, Object> async = flags(resumed, 4, 1, 2, 1, 20);
        async.put("asyncCheckpoints", true);
        new Trainer(ConfigLoader.resolve(Map.of(), "test", async), TrainerResumeTest.quiet()).run(false);
        Checkpoint.deleteRecursively(resumed.resolve("checkpoints").resolve(Checkpoint.directoryName(20)));
        new Trainer(ConfigLoader.resolve(Map.of(), "test", async), TrainerResumeTest.quiet()).run(true, "10");
        assertEquals(column(whole, "loss"), column(resumed, "loss"), "losses of the resumed ep 2 run");
        CheckpointContents.assertSame(whole.resolve("checkpoints").resolve(Checkpoint.directoryName(20)),
                resumed.resolve("checkpoints").resolve(Checkpoint.directoryName(20)), "final weights and moments identical");

        record Layout(int ranks, int ep, int zero) { }
        List<Double> expected = column(whole, "loss");
        for (Layout l : List.of(new Layout(4, 1, 1), new Layout(4, 1, 0), new Layout(2, 1, 0))) {
            String name = "the ep 2 checkpoint resumed at ranks " + l.ranks() + ", ep " + l.ep() + ", zero " + l.zero();
            Path run = dir.resolve("ckpt-as-" + l.ranks() + "-" + l.ep() + "-" + l.zero());
            copyStep(whole, run, 10);
            Map<String, Object> flags = flags(run, l.ranks(), 1, l.ep(), l.zero(), 11);
            flags.put("batchSize", 8 / l.ranks());   // the same global batch of 8 rows per micro-batch step
            new Trainer(ConfigLoader.resolve(Map.of(), "test", flags), TrainerResumeTest.quiet()).run(true);
            List<Double> got = column(run, "loss");
            assertEquals(11, got.size(), name);
            assertEquals(expected.get(10), got.get(10), 1e-6 * expected.get(10), name + ": loss of step 11");
        }
    }

    /**
     * ZeRO 3 under ep 2 × dp 2 (each expert's parameters, gradients and AdamW state sharded over the two ranks holding
     * it, the dense ones over dp): its step-10 checkpoint (saved asynchronously) resumes bit for bit, and loads at ep 1 (ZeRO 0 and 3) and at
     * ep 2 under ZeRO 2 with the next loss within 1e-6; an ep 1 checkpoint loads at ep 2 × dp 2 under ZeRO 3 likewise.
     */
    @Test
    void anEp2Zero3CheckpointLoadsAtEp1AndBack() throws IOException {
        Path whole = dir.resolve("ckpt-ep2-zero3");
        Map<String, Object> async = flags(whole, 4, 1, 2, 3, 11);
        async.put("asyncCheckpoints", true);   // each rank's pieces copied to host buffers, written in the background
        new Trainer(ConfigLoader.resolve(Map.of(), "test", async), TrainerResumeTest.quiet()).run(false);
        record Layout(int ep, int zero) { }
        List<Double> expected = column(whole, "loss");
        for (Layout l : List.of(new Layout(2, 3), new Layout(1, 0), new Layout(1, 3), new Layout(2, 2))) {
            String name = "the ep 2 ZeRO 3 checkpoint resumed at ep " + l.ep() + ", zero " + l.zero();
            Path run = dir.resolve("ckpt-zero3-as-" + l.ep() + "-" + l.zero());
            copyStep(whole, run, 10);
            new Trainer(ConfigLoader.resolve(Map.of(), "test", flags(run, 4, 1, l.ep(), l.zero(), 11)), TrainerResumeTest.quiet())
                    .run(true);
            List<Double> got = column(run, "loss");
            assertEquals(11, got.size(), name);
            if (l.equals(new Layout(2, 3))) assertEquals(expected.get(10), got.get(10), name + ": loss of step 11, bit for bit");
            else assertEquals(expected.get(10), got.get(10), 1e-6 * expected.get(10), name + ": loss of step 11");
        }

        Path ep1 = dir.resolve("ckpt-ep1-zero1"), run = dir.resolve("ckpt-ep1-as-ep2-zero3");
        new Trainer(ConfigLoader.resolve(Map.of(), "test", flags(ep1, 4, 1, 1, 1, 11)), TrainerResumeTest.quiet()).run(false);
        copyStep(ep1, run, 10);
        new Trainer(ConfigLoader.resolve(Map.of(), "test", flags(run, 4, 1, 2, 3, 11)), TrainerResumeTest.quiet()).run(true);
        double want = column(ep1, "loss").get(10), got = column(run, "loss").get(10);
        assertEquals(want, got, 1e-6 * want, "loss of step 11 at ep 2 x dp 2 ZeRO 3 from an ep 1 checkpoint");
    }

    /**
     * The AdamW moments offloaded to a memory-mapped file per rank (ZeRO-Infinity) under ep 2 × dp 2, at ZeRO 1 (the
     * expert-parallel update) and ZeRO 3: the same losses bit for bit as in memory, and no optimizer state in the pool.
     */
    @ParameterizedTest(name = "zero={0}")
    @CsvSource({"1", "3"})
    void offloadedMomentsUnderExpertParallelismTrainBitForBit(int zero) throws IOException {
        Path memory = dir.resolve("offload-ref-" + zero), disk = dir.resolve("offload-" + zero);
        new Trainer(ConfigLoader.resolve(Map.of(), "test", flags(memory, 4, 1, 2, zero, 6)), TrainerResumeTest.quiet()).run(false);
        Map<String, Object> flags = flags(disk, 4, 1, 2, zero, 6);
        flags.put("offloadOptimizer", dir.resolve("moments-" + zero).toString());
        TrainConfig config = ConfigLoader.resolve(Map.of(), "test", flags);
        new Trainer(config, TrainerResumeTest.quiet()).run(false);
        assertEquals(column(memory, "loss"), column(disk, "loss"), "zero " + zero + ": losses with the moments on disk");
        assertEquals(0, MemoryReport.allocated(config, 0).optimizerState(), "zero " + zero + ": --dry-run's optimizer state");
        assertEquals(0L, ((Number) MetricsLog.read(disk.resolve("metrics.jsonl")).getLast().get("mem_peak_optimizer_state")).longValue(),
                "zero " + zero + ": optimizer state in rank 0's pool");
    }

    /** A dp 2 run at ep 1 resumes at ep 2 (each rank reading only its two experts) with the next loss within 1e-6. */
    @Test
    void anEp1CheckpointLoadsAtEp2() throws IOException {
        Path whole = dir.resolve("ckpt-ep1"), run = dir.resolve("ckpt-ep1-as-ep2");
        new Trainer(config(whole, 2, 1, 1, 0), TrainerResumeTest.quiet()).run(false);
        copyStep(whole, run, 10);
        new Trainer(ConfigLoader.resolve(Map.of(), "test", flags(run, 2, 1, 2, 1, 11)), TrainerResumeTest.quiet()).run(true);
        double expected = column(whole, "loss").get(10), got = column(run, "loss").get(10);
        assertEquals(expected, got, 1e-6 * expected, "loss of step 11 at ep 2 from an ep 1 checkpoint");
    }

    /** An ep 2 × tp 2 checkpoint (expert slices by global name) loads at dp 2 without either: the next loss within 1e-6. */
    @Test
    void anEp2Tp2CheckpointLoadsWithoutEitherParallelism() throws IOException {
        Path whole = dir.resolve("ckpt-ep2-tp2"), run = dir.resolve("ckpt-ep2-tp2-as-dp2");
        Map<String, Object> flags = flags(whole, 4, 1, 2, 1, 11);
        flags.put("tp", 2);
        new Trainer(ConfigLoader.resolve(Map.of(), "test", flags), TrainerResumeTest.quiet()).run(false);
        copyStep(whole, run, 10);
        new Trainer(ConfigLoader.resolve(Map.of(), "test", flags(run, 2, 1, 1, 0, 11)), TrainerResumeTest.quiet()).run(true);
        double expected = column(whole, "loss").get(10), got = column(run, "loss").get(10);
        assertEquals(expected, got, 1e-6 * expected, "loss of step 11 at dp 2 from an ep 2 x tp 2 checkpoint");
    }

    @Test
    void badExpertParallelLayoutsAreRefusedWithTheFix() {
        Map<String, Object> three = flags(dir.resolve("bad"), 4, 1, 3, 0, 20);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> ConfigLoader.resolve(Map.of(), "test", three));
        assertTrue(e.getMessage().contains("ep=3") && e.getMessage().contains("dp=4"), e.getMessage());

        Map<String, Object> experts = flags(dir.resolve("bad"), 8, 1, 8, 0, 20);
        e = assertThrows(IllegalArgumentException.class, () -> ConfigLoader.resolve(Map.of(), "test", experts));
        assertTrue(e.getMessage().contains("model.experts=4") && e.getMessage().contains("ep"), e.getMessage());

        Map<String, Object> dense = flags(dir.resolve("bad"), 2, 1, 2, 0, 20);
        dense.put("model", Map.of("vocabSize", 300, "contextLength", 8, "layers", 2, "hidden", 16, "heads", 2, "kvHeads", 2, "ffnHidden", 64));
        e = assertThrows(IllegalArgumentException.class, () -> ConfigLoader.resolve(Map.of(), "test", dense));
        assertTrue(e.getMessage().contains("dense model") && e.getMessage().contains("use ep=1"), e.getMessage());

        // MoE blocks' products are fp32 only: bf16 is refused before anything runs, saying what to use
        Map<String, Object> bf16 = flags(dir.resolve("bad"), 2, 1, 1, 0, 20);
        bf16.put("precision", "bf16");
        e = assertThrows(IllegalArgumentException.class, () -> ConfigLoader.resolve(Map.of(), "test", bf16));
        assertTrue(e.getMessage().contains("precision=bf16") && e.getMessage().contains("--precision fp32"), e.getMessage());
    }

    /** The dry run's table: every rank holds the dense parameters and 2 of the 4 experts of each block. */
    @Test
    void memoryReportDividesTheExpertsByEp() {
        TrainConfig ep1 = config(dir.resolve("mem"), 2, 1, 1, 0), ep2 = config(dir.resolve("mem"), 2, 1, 2, 0);
        MemoryReport.ExpertShare share = MemoryReport.expertShare(ep2, 0);
        // 2 blocks × 4 experts × (fc 16·32 + 32, proj 32·16 + 16) = 8 · 1072 parameters, half on each rank
        assertEquals(4 * 1072, share.experts());
        assertEquals(ep1.model().parameterCount() - 8 * 1072, share.dense());
        assertEquals(4L * (share.dense() + share.experts()), MemoryReport.allocated(ep2, 0).parameters());
        assertEquals(MemoryReport.allocated(ep1, 0).parameters() - 4L * 4 * 1072, MemoryReport.allocated(ep2, 0).parameters());
        TrainConfig zero1 = config(dir.resolve("mem"), 4, 1, 2, 1);
        long expertDp = 2;
        assertEquals(8 * ((share.dense() + 3) / 4) + 8 * (share.experts() / expertDp),
                MemoryReport.allocated(zero1, 0).optimizerState(), "ZeRO 1: dense state / dp, expert state / (dp/ep)");
        String table = MemoryReport.table(ep2);
        assertTrue(table.contains("ep 2") && table.contains("expert parallelism over ep=2"), table);
        table = MemoryReport.table(config(dir.resolve("mem"), 4, 1, 2, 3));
        assertTrue(table.contains("16Ψd/N+16Ψe/N") && table.contains("ZeRO 3 shards the dense parameters, gradients and "
                + "AdamW state over dp=4 and the experts' over the 2 rank(s)"), table);
    }

    /**
     * {@code --timeline} under ep 2 × pp 2: each stage's row holds its MoE block's all-to-alls (dispatch and combine
     * in forward, their gradients in backward) as spans of their own, each inside the forward or backward that ran it.
     */
    @Test
    void timelineShowsTheAllToAllsInsideTheirPasses() throws IOException {
        Path run = dir.resolve("ep-timeline"), trace = dir.resolve("ep-timeline.json");
        Map<String, Object> flags = flags(run, 4, 2, 2, 0, 2);
        flags.put("timeline", trace.toString());
        new Trainer(ConfigLoader.resolve(Map.of(), "test", flags), TrainerResumeTest.quiet()).run(false);
        String json = Files.readString(trace);
        record Event(String name, int stage, double start, double end) { }
        java.util.regex.Matcher m = java.util.regex.Pattern.compile(
                "\\{\"name\":\"([^\"]+)\",\"cat\":\"[^\"]+\",\"ph\":\"X\",\"pid\":(\\d+),\"tid\":\\d+,\"ts\":([0-9.]+),\"dur\":([0-9.]+)")
                .matcher(json);
        List<Event> events = new java.util.ArrayList<>();
        while (m.find()) {
            double ts = Double.parseDouble(m.group(3));
            events.add(new Event(m.group(1), Integer.parseInt(m.group(2)), ts, ts + Double.parseDouble(m.group(4))));
        }
        for (int stage = 0; stage < 2; stage++) {
            for (String exchange : List.of("counts", "dispatch", "combine", "combine-grad", "dispatch-grad")) {
                int s = stage;
                // 2 micro-batches through the stage's one MoE block: one of each per micro-batch
                List<Event> spans = events.stream().filter(e -> e.stage() == s && e.name().equals("a2a " + exchange)).toList();
                assertEquals(2, spans.size(), "stage " + stage + ": a2a " + exchange + " once per micro-batch:\n" + json);
                for (Event a : spans) {
                    String pass = exchange.endsWith("grad") ? "B" : "F";
                    assertTrue(events.stream().anyMatch(e -> e.stage() == s && e.name().startsWith(pass)
                            && e.start() <= a.start() + 0.002 && a.end() <= e.end() + 0.002),   // µs printed to 3 decimals
                            "stage " + stage + ": " + a + " lies inside a " + pass + " instruction");
                }
            }
        }
    }

    static void copyStep(Path from, Path to, int step) throws IOException {
        Path source = from.resolve("checkpoints").resolve(Checkpoint.directoryName(step));
        Path target = to.resolve("checkpoints").resolve(Checkpoint.directoryName(step));
        Files.createDirectories(target);
        try (var files = Files.list(source)) {
            for (Path f : files.toList()) Files.copy(f, target.resolve(f.getFileName()));
        }
        Files.copy(from.resolve("metrics.jsonl"), to.resolve("metrics.jsonl"));
    }
}
