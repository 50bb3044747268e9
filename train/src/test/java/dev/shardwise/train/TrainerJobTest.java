package dev.shardwise.train;

import dev.shardwise.comm.RankEnvironment;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** A trainer in a process of a multi-process job checks the job against its config before touching anything. */
class TrainerJobTest {

    @Test
    void ranksThatDisagreeWithTheJobAreRefusedBeforeTheRunDirectoryIsWritten(@TempDir Path dir) {
        Path runDir = dir.resolve("run");
        TrainConfig config = ConfigLoader.resolve(Map.of(), "test", Map.of("ranks", 2, "runDir", runDir.toString(),
                "data", dir.resolve("no-data").toString()));
        RankEnvironment fourProcesses = new RankEnvironment(1, 4, 1, 4, RankEnvironment.Source.OPEN_MPI);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> new Trainer(config, fourProcesses, TrainerResumeTest.quiet()).run(false));
        assertTrue(e.getMessage().contains("ranks=2") && e.getMessage().contains("one of 4")
                && e.getMessage().contains("Open MPI"), e.getMessage());
        assertFalse(Files.exists(runDir), "nothing written");
    }
}
