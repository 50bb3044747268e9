package dev.shardwise.train;

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
 * The trainer under tensor parallelism (Shoeybi et al. 2019), composed with pipeline and data parallelism and ZeRO:
 * its losses and validation losses match the single-rank run's within 1e-5 relative (ARCHITECTURE idea 5); its
 * checkpoints hold the global tensors (the tp ranks' slices put together, the padded vocabulary's padding rows
 * dropped), so a tp run resumes bit for bit and its checkpoint loads under other layouts, and back.
 */
class TrainerTensorParallelTest {
    static final double TOLERANCE = 1e-5;

    @TempDir
    static Path dir;
    static Path data;

    @BeforeAll
    static void prepareTinyData() throws IOException {
        data = TrainerResumeTest.tinyData(dir);
    }

    /**
     * dp·tp·pp ranks, a 2-block model whose vocabulary (301) tp 2 does not divide, a global micro-batch of 4
     * sequences and 4 micro-batches per step.
     */
    static TrainConfig config(Path runDir, int dp, int tp, int pp, int zero) {
        return config(runDir, dp, tp, pp, zero, Map.of());
    }

    /** As {@link #config(Path, int, int, int, int)}, with {@code extra} flags (a schedule, recompute). */
    static TrainConfig config(Path runDir, int dp, int tp, int pp, int zero, Map<String, Object> extra) {
        Map<String, Object> flags = new HashMap<>(TrainerResumeTest.flags(data, runDir, dp * tp * pp, zero));
        flags.put("tp", tp);
        flags.put("pp", pp);
        flags.put("dp", dp);
        flags.put("batchSize", 4 / dp);
        flags.put("gradAccumulation", 4);
        flags.put("model", Map.of("vocabSize", 301, "contextLength", 8, "layers", 2, "hidden", 16, "heads", 2,
                "kvHeads", 2, "ffnHidden", 64));
        flags.putAll(extra);
        return ConfigLoader.resolve(Map.of(), "test", flags);
    }

    static Map<String, List<Double>> run(Path runDir, int dp, int tp, int pp, int zero) throws IOException {
        return run(config(runDir, dp, tp, pp, zero));
    }

    static Map<String, List<Double>> run(TrainConfig config) throws IOException {
        Path runDir = config.runDir();
        new Trainer(config, TrainerResumeTest.quiet()).run(false);
        return curves(runDir);
    }

    /** Training losses and validation losses by step, from metrics.jsonl. */
    static Map<String, List<Double>> curves(Path runDir) throws IOException {
        List<Map<String, Object>> rows = MetricsLog.read(runDir.resolve("metrics.jsonl"));
        return Map.of("loss", rows.stream().map(r -> ((Number) r.get("loss")).doubleValue()).toList(),
                "val_loss", rows.stream().filter(r -> r.containsKey("val_loss"))
                        .map(r -> ((Number) r.get("val_loss")).doubleValue()).toList());
    }

    private static Map<String, List<Double>> single, singleDeeper;

    private static synchronized Map<String, List<Double>> single() throws IOException {
        if (single == null) single = run(dir.resolve("single"), 1, 1, 1, 0);
        return single;
    }

    static void assertClose(List<Double> expected, List<Double> got, String what) {
        assertEquals(expected.size(), got.size(), what + ": steps");
        double worst = 0;
        for (int i = 0; i < expected.size(); i++) {
            double e = expected.get(i), g = got.get(i);
            worst = Math.max(worst, Math.abs(e - g) / Math.abs(e));
            assertEquals(e, g, TOLERANCE * Math.abs(e), what + " of step/evaluation " + (i + 1));
        }
        System.out.printf("%s vs single rank: largest relative gap %.2e over %d values%n", what, worst, expected.size());
    }

    @Test
    void tp2MatchesTheSingleRankRun() throws IOException {
        Map<String, List<Double>> got = run(config(dir.resolve("tp2"), 1, 2, 1, 0, Map.of("saveCheckpoints", false)));
        assertFalse(Files.exists(dir.resolve("tp2").resolve("checkpoints")), "saveCheckpoints: false saves none");
        assertClose(single().get("loss"), got.get("loss"), "tp 2: loss");
        assertClose(single().get("val_loss"), got.get("val_loss"), "tp 2: validation loss");
    }

    @Test
    void tp2xPp2xDp2WithZero1MatchesTheSingleRankRun() throws IOException {
        Map<String, List<Double>> got = run(dir.resolve("tp2pp2dp2"), 2, 2, 2, 1);
        assertClose(single().get("loss"), got.get("loss"), "tp 2 x pp 2 x dp 2, ZeRO 1: loss");
        assertClose(single().get("val_loss"), got.get("val_loss"), "tp 2 x pp 2 x dp 2, ZeRO 1: validation loss");
    }

    /** Sequence parallelism through the trainer (--sequence-parallel): T = 8 positions split 4 + 4 over tp 2. */
    @Test
    void tp2xPp2xDp2WithZero3SequenceParallelAndSelectiveRecomputeMatchesTheSingleRankRun() throws IOException {
        TrainConfig config = config(dir.resolve("tp2pp2dp2-sp"), 2, 2, 2, 3, Map.of("sequenceParallel", true,
                "recompute", "selective"));
        assertTrue(config.layout().sequenceParallel(), "sequenceParallel reaches the layout");
        Map<String, List<Double>> got = run(config);
        assertClose(single().get("loss"), got.get("loss"), "tp 2 x pp 2 x dp 2, ZeRO 3, sequence parallel, selective: loss");
        assertClose(single().get("val_loss"), got.get("val_loss"), "tp 2 x pp 2 x dp 2, ZeRO 3, sequence parallel, selective: validation loss");
    }

    /** Every schedule, with recompute, on a 4-block model (vpp 2 needs 4 chunks). */
    @ParameterizedTest(name = "tp 2 x pp 2, {0}, vpp {1}, recompute {2}, ZeRO {3}")
    @CsvSource({"gpipe, 1, full, 0", "interleaved, 2, selective, 1", "zb-h1, 1, none, 0", "zb-h1, 1, selective, 2"})
    void tp2xPp2MatchesTheSingleRankRunUnderEverySchedule(String schedule, int vpp, String recompute, int zero) throws IOException {
        Map<String, Object> deeper = Map.of("model", Map.of("vocabSize", 301, "contextLength", 8, "layers", 4, "hidden", 16,
                "heads", 2, "kvHeads", 2, "ffnHidden", 64));
        Map<String, List<Double>> expected;
        synchronized (TrainerTensorParallelTest.class) {
            if (singleDeeper == null) singleDeeper = run(config(dir.resolve("single-4-blocks"), 1, 1, 1, 0, deeper));
            expected = singleDeeper;
        }
        Map<String, Object> extra = new HashMap<>(deeper);
        extra.put("schedule", schedule);
        extra.put("vpp", vpp);
        extra.put("recompute", recompute);
        Map<String, List<Double>> got = run(config(dir.resolve("tp2pp2-" + schedule + vpp + recompute + zero), 1, 2, 2, zero, extra));
        String name = "tp 2 x pp 2, " + schedule + ", vpp " + vpp + ", recompute " + recompute + ", ZeRO " + zero;
        assertClose(expected.get("loss"), got.get("loss"), name + ": loss");
        assertClose(expected.get("val_loss"), got.get("val_loss"), name + ": validation loss");
    }

    @Test
    void aTensorParallelRunResumesBitForBit() throws IOException {
        Path a = dir.resolve("tp-a"), b = dir.resolve("tp-b");
        new Trainer(config(a, 1, 2, 1, 0), TrainerResumeTest.quiet()).run(false);
        new Trainer(config(b, 1, 2, 1, 0), TrainerResumeTest.quiet()).run(false);
        Checkpoint.deleteRecursively(b.resolve("checkpoints").resolve(Checkpoint.directoryName(6)));
        new Trainer(config(b, 1, 2, 1, 0), TrainerResumeTest.quiet()).run(true);
        assertEquals(TrainerResumeTest.losses(a), TrainerResumeTest.losses(b), "losses of the resumed tp 2 run");
        CheckpointContents.assertSame(a.resolve("checkpoints/step-000006"), b.resolve("checkpoints/step-000006"), "final weights and moments identical");
    }

    /** A checkpoint of layout {@code from} (dp, tp, pp, zero) at step 3, resumed under {@code to}: the remaining losses agree. */
    private static void resumesUnder(int[] from, int[] to) throws IOException {
        String name = "dp " + from[0] + " tp " + from[1] + " pp " + from[2] + " zero " + from[3] + " -> dp " + to[0] + " tp "
                + to[1] + " pp " + to[2] + " zero " + to[3];
        Path original = dir.resolve("from-" + String.join("-", name.split("\\D+")));
        new Trainer(config(original, from[0], from[1], from[2], from[3]), TrainerResumeTest.quiet()).run(false);
        List<Double> expected = TrainerResumeTest.losses(original);
        Path run = dir.resolve("to-" + String.join("-", name.split("\\D+")));
        Path checkpoint = run.resolve("checkpoints").resolve(Checkpoint.directoryName(3));
        Files.createDirectories(checkpoint);
        try (var files = Files.list(original.resolve("checkpoints").resolve(Checkpoint.directoryName(3)))) {
            for (Path f : files.toList()) Files.copy(f, checkpoint.resolve(f.getFileName()));
        }
        Files.copy(original.resolve("metrics.jsonl"), run.resolve("metrics.jsonl"));
        new Trainer(config(run, to[0], to[1], to[2], to[3]), TrainerResumeTest.quiet()).run(true);
        List<Double> got = TrainerResumeTest.losses(run);
        assertEquals(6, got.size(), name);
        for (int i = 3; i < 6; i++) {
            assertEquals(expected.get(i), got.get(i), TOLERANCE * Math.abs(expected.get(i)), name + ": loss of step " + (i + 1));
        }
    }

    @Test
    void aTp2CheckpointResumesOnOneRank() throws IOException {
        resumesUnder(new int[]{1, 2, 1, 0}, new int[]{1, 1, 1, 0});
    }

    @Test
    void aSingleRankCheckpointResumesAtTp2() throws IOException {
        resumesUnder(new int[]{1, 1, 1, 0}, new int[]{1, 2, 1, 0});
    }

    @Test
    void aSingleRankCheckpointResumesAtTp2xDp2UnderZero3() throws IOException {
        resumesUnder(new int[]{1, 1, 1, 0}, new int[]{2, 2, 1, 3});
    }

    @Test
    void aTp2xPp2CheckpointResumesDataParallelUnderZero3() throws IOException {
        resumesUnder(new int[]{1, 2, 2, 1}, new int[]{2, 1, 1, 3});
    }
}
