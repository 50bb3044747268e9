package dev.shardwise.cli;

import dev.shardwise.comm.RankEnvironment;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import picocli.CommandLine;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;

import static org.junit.jupiter.api.Assertions.assertEquals;

/** Under a launcher, {@code train}'s rank count defaults to the job's number of processes. */
class TrainCommandJobTest {
    private static final RankEnvironment FOUR = new RankEnvironment(2, 4, 0, 2, RankEnvironment.Source.SLURM);

    private static TrainCommand parse(String... args) {
        TrainCommand command = new TrainCommand();
        new CommandLine(command).parseArgs(args);
        return command;
    }

    @Test
    void ranksDefaultToTheJobsSizeUnlessGiven(@TempDir Path dir) throws IOException {
        assertEquals(4, parse("--preset", "tiny").resolve(FOUR).ranks(), "no --ranks: one rank per process");
        assertEquals(1, parse("--preset", "tiny").resolve(RankEnvironment.SINGLE).ranks(), "a process on its own");
        assertEquals(3, parse("--preset", "tiny", "--ranks", "3").resolve(FOUR).ranks(), "--ranks is kept (Trainer refuses it)");
        Path yaml = dir.resolve("c.yaml");
        Files.writeString(yaml, "ranks: 2\n");
        assertEquals(2, parse("--config", yaml.toString()).resolve(FOUR).ranks(), "a config's ranks is kept");
    }
}
