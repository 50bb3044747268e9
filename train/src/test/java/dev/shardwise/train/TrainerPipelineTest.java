package dev.shardwise.train;

import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.*;

/**
 * The trainer under pipeline parallelism: checkpoints hold every stage's tensors by global name, so a pipeline run
 * resumes bit for bit and its checkpoint loads under another layout (a single rank, or pp x dp with ZeRO).
 */
class TrainerPipelineTest {
    @TempDir
    static Path dir;
    static Path data;

    @BeforeAll
    static void prepareTinyData() throws IOException {
        data = TrainerResumeTest.tinyData(dir);
    }

    /** {@code ranks} ranks as {@code pp} stages (dp = ranks / pp), a 2-block model, 4 micro-batches of 2 per step. */
    static TrainConfig config(Path runDir, int ranks, int pp, int zero) {
        return ConfigLoader.resolve(Map.of(), "test", flags(runDir, ranks, pp, zero));
    }

    static Map<String, Object> flags(Path runDir, int ranks, int pp, int zero) {
        Map<String, Object> flags = new HashMap<>(TrainerResumeTest.flags(data, runDir, ranks, zero));
        flags.put("pp", pp);
        flags.put("batchSize", 2 * pp / ranks);
        flags.put("gradAccumulation", 4);
        flags.put("model", Map.of("vocabSize", 300, "contextLength", 8, "layers", 2, "hidden", 16, "heads", 2,
                "kvHeads", 2, "ffnHidden", 64));
        return flags;
    }

    @Test
    void aPipelineRunResumesBitForBit() throws IOException {
        Path a = dir.resolve("pp-a"), b = dir.resolve("pp-b");
        new Trainer(config(a, 2, 2, 0), TrainerResumeTest.quiet()).run(false);
        assertTrue(Files.isRegularFile(a.resolve("checkpoints/step-000006/manifest.json")), "the pipeline run saved");
        new Trainer(config(b, 2, 2, 0), TrainerResumeTest.quiet()).run(false);
        Checkpoint.deleteRecursively(b.resolve("checkpoints").resolve(Checkpoint.directoryName(6)));
        new Trainer(config(b, 2, 2, 0), TrainerResumeTest.quiet()).run(true);
        assertEquals(TrainerResumeTest.losses(a), TrainerResumeTest.losses(b), "losses of the resumed pipeline run");
        CheckpointContents.assertSame(a.resolve("checkpoints/step-000006"), b.resolve("checkpoints/step-000006"), "final weights and moments identical");
    }

    @Test
    void aPipelineCheckpointResumesUnderOtherLayouts() throws IOException {
        Path pipeline = dir.resolve("pp-layouts");
        new Trainer(config(pipeline, 2, 2, 0), TrainerResumeTest.quiet()).run(false);
        List<Double> expected = TrainerResumeTest.losses(pipeline);
        record Layout(int ranks, int pp, int zero) { }
        for (Layout layout : List.of(new Layout(1, 1, 0), new Layout(4, 2, 1), new Layout(4, 2, 3), new Layout(2, 1, 2))) {
            String name = "resumed as ranks " + layout.ranks() + ", pp " + layout.pp() + ", zero " + layout.zero();
            Path run = dir.resolve("pp-as-" + layout.ranks() + "-" + layout.pp() + "-" + layout.zero());
            Files.createDirectories(run.resolve("checkpoints"));
            copy(pipeline.resolve("checkpoints").resolve(Checkpoint.directoryName(3)), run.resolve("checkpoints").resolve(Checkpoint.directoryName(3)));
            Files.copy(pipeline.resolve("metrics.jsonl"), run.resolve("metrics.jsonl"));
            new Trainer(config(run, layout.ranks(), layout.pp(), layout.zero()), TrainerResumeTest.quiet()).run(true);
            List<Double> got = TrainerResumeTest.losses(run);
            assertEquals(6, got.size(), name);
            for (int i = 3; i < 6; i++) {
                assertEquals(expected.get(i), got.get(i), 1e-5 * Math.abs(expected.get(i)), name + ": loss of step " + (i + 1));
            }
        }
    }

    @Test
    void timelineHoldsEveryStagesExecutedScheduleAndMetricsTheBubble() throws IOException {
        Path run = dir.resolve("pp-timeline"), trace = dir.resolve("pp-timeline.json");
        Map<String, Object> flags = flags(run, 4, 2, 1);
        flags.put("timeline", trace.toString());
        new Trainer(ConfigLoader.resolve(Map.of(), "test", flags), TrainerResumeTest.quiet()).run(false);
        String json = Files.readString(trace);
        assertTrue(json.startsWith("{\"traceEvents\":["), "a Chrome trace");
        assertTrue(json.contains("\"name\":\"stage 0\"") && json.contains("\"name\":\"stage 1\""), "one row per stage");
        assertTrue(json.contains("\"F3.0\"") && json.contains("\"B3.0\"") && json.contains("recv-act"), "forward, backward, receives");
        Map<String, Object> row = MetricsLog.read(run.resolve("metrics.jsonl")).getLast();
        double bubble = ((Number) row.get("bubble")).doubleValue();
        assertTrue(bubble > 0 && bubble < 1, "metrics carry the stage's bubble: " + row);
        assertTrue(row.containsKey("pipeline_wait_ms"), "and its pipeline-wait time");
    }

    private static void copy(Path from, Path to) throws IOException {
        Files.createDirectories(to);
        try (var files = Files.list(from)) {
            for (Path f : files.toList()) Files.copy(f, to.resolve(f.getFileName()));
        }
    }
}
