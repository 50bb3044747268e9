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
 * Grouped-query attention with fewer kv heads than tp ranks through the trainer (the issue's `model: {kvHeads: 2}` at
 * tp 4, on a llama-tiny-shaped model with 8 heads): each kv head is replicated on two ranks. The run matches the
 * single rank's losses within 1e-5 relative, and its checkpoint (the replicated rows put back into the global qkv
 * tensors once) resumes on one rank with the losses the tp 4 run went on to have.
 */
class TrainerGroupedQueryTest {
    static final double TOLERANCE = 1e-5;

    @TempDir
    static Path dir;
    static Path data;

    @BeforeAll
    static void prepareTinyData() throws IOException {
        data = TrainerResumeTest.tinyData(dir);
    }

    static TrainConfig config(Path runDir, int tp) {
        Map<String, Object> flags = new HashMap<>(TrainerResumeTest.flags(data, runDir, tp, 0));
        flags.put("preset", "llama-tiny");
        flags.put("tp", tp);
        flags.put("batchSize", 4);
        flags.put("model", Map.of("vocabSize", 300, "contextLength", 8, "layers", 2, "hidden", 32, "heads", 8,
                "kvHeads", 2, "ffnHidden", 64));
        return ConfigLoader.resolve(Map.of(), "test", flags);
    }

    @Test
    void twoKvHeadsAtTp4MatchTheSingleRankAndResumeOnOneRank() throws IOException {
        Path single = dir.resolve("single"), split = dir.resolve("tp4");
        new Trainer(config(single, 1), TrainerResumeTest.quiet()).run(false);
        new Trainer(config(split, 4), TrainerResumeTest.quiet()).run(false);
        List<Double> expected = TrainerResumeTest.losses(single), got = TrainerResumeTest.losses(split);
        assertEquals(6, got.size(), "steps");
        for (int i = 0; i < expected.size(); i++) {
            assertEquals(expected.get(i), got.get(i), TOLERANCE * Math.abs(expected.get(i)), "kvHeads 2 at tp 4: loss of step " + (i + 1));
        }
        Path resumed = dir.resolve("resumed");
        Path checkpoint = resumed.resolve("checkpoints").resolve(Checkpoint.directoryName(3));
        Files.createDirectories(checkpoint);
        try (var files = Files.list(split.resolve("checkpoints").resolve(Checkpoint.directoryName(3)))) {
            for (Path f : files.toList()) Files.copy(f, checkpoint.resolve(f.getFileName()));
        }
        Files.copy(split.resolve("metrics.jsonl"), resumed.resolve("metrics.jsonl"));
        new Trainer(config(resumed, 1), TrainerResumeTest.quiet()).run(true);
        List<Double> after = TrainerResumeTest.losses(resumed);
        assertEquals(6, after.size(), "steps after resuming");
        for (int i = 3; i < 6; i++) {
            assertEquals(got.get(i), after.get(i), TOLERANCE * Math.abs(got.get(i)),
                    "the tp 4 checkpoint resumed on one rank: loss of step " + (i + 1));
        }
    }
}
