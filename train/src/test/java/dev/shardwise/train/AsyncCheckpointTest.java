package dev.shardwise.train;

import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.*;

/**
 * Asynchronous checkpoints (flash checkpoint) write what synchronous ones write: with a save every step (so each
 * save finds the previous one in flight), every checkpoint is committed intact with the same tensors, the run
 * trains the same, and metrics.jsonl reports each save's hold-up of training.
 */
class AsyncCheckpointTest {
    @TempDir
    Path dir;

    @ParameterizedTest(name = "ranks={0} zero={1}")
    @CsvSource({"1, 0", "2, 3"})
    void asynchronousSavesMatchSynchronousOnes(int ranks, int zero) throws IOException {
        Path data = TrainerResumeTest.tinyData(dir);
        Path sync = dir.resolve("sync"), async = dir.resolve("async");
        for (Path run : List.of(sync, async)) {
            Map<String, Object> flags = TrainerResumeTest.flags(data, run, ranks, zero);
            flags.put("checkpointEvery", 1);
            flags.put("asyncCheckpoints", run == async);
            new Trainer(ConfigLoader.resolve(Map.of(), "test", flags), TrainerResumeTest.quiet()).run(false);
        }
        assertEquals(TrainerResumeTest.losses(sync), TrainerResumeTest.losses(async), "training is the same");
        for (int step = 1; step <= 6; step++) {
            String name = "checkpoints/" + Checkpoint.directoryName(step);
            assertTrue(Files.isRegularFile(async.resolve(name).resolve(Checkpoint.MANIFEST)), name + " committed");
            CheckpointContents.assertSame(sync.resolve(name), async.resolve(name), "async vs sync " + name);
        }
        List<Map<String, Object>> rows = MetricsLog.read(async.resolve("metrics.jsonl"));
        for (Map<String, Object> row : rows.subList(1, rows.size())) {
            assertTrue(row.get("checkpoint_stall_ms") instanceof Number n && n.doubleValue() >= 0, "stall reported: " + row);
            assertEquals(true, row.get("checkpoint_async"), "marked asynchronous: " + row);
        }
        assertEquals(false, MetricsLog.read(sync.resolve("metrics.jsonl")).get(1).get("checkpoint_async"));
    }
}
