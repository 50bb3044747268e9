package dev.shardwise.cli;

import dev.shardwise.comm.RankEnvironment;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import picocli.CommandLine;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;

import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;

/** Under a launcher, {@code train}'s rank count defaults to the job's number of processes; the layout flags (--tp too) reach the config. */
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

    @Test
    void layoutFlagsSetTheLayoutAndDpSetsTheWorldUnderALauncher() throws IOException {
        var c = parse("--preset", "tiny", "--ranks", "4", "--pp", "2", "--vpp", "2", "--schedule", "gpipe",
                "--pipeline-cut", "0,1,2,3", "--recompute", "full", "--recompute-every", "2", "--zero", "1")
                .resolve(RankEnvironment.SINGLE);
        assertEquals(List.of(2, 1, 2, 2, 1), List.of(c.layout().dp(), c.layout().tp(), c.layout().pp(), c.layout().vpp(),
                c.layout().zeroStage()), "dp = ranks / (tp·pp)");
        assertEquals("gpipe full 2 [0, 1, 2, 3]", c.schedule() + " " + c.layout().recompute() + " " + c.recomputeEvery()
                + " " + c.pipelineCut());
        assertEquals(2, parse("--preset", "tiny", "--dp", "2").resolve(FOUR).ranks(),
                "--dp without --ranks gives dp·tp·pp ranks, not the job's size (Trainer refuses the mismatch)");
        var t = parse("--preset", "tiny", "--ranks", "8", "--tp", "2", "--pp", "2", "--zero", "1", "--no-checkpoints")
                .resolve(RankEnvironment.SINGLE);
        assertEquals(List.of(2, 2, 2, 1), List.of(t.layout().dp(), t.layout().tp(), t.layout().pp(), t.layout().zeroStage()),
                "--tp: dp = ranks / (tp·pp)");
        assertEquals(false, t.saveCheckpoints(), "--no-checkpoints");
    }
}
