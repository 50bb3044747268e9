package dev.shardwise.cli;

import dev.shardwise.comm.RankEnvironment;
import dev.shardwise.train.TrainConfig;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import picocli.CommandLine;

import java.io.IOException;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.nio.file.Files;
import java.nio.file.Path;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** {@code train --parallel auto}: the planner's choice becomes the run's layout; layout flags beside it are refused. */
class AutoLayoutTest {
    private static TrainCommand parse(String... args) {
        TrainCommand command = new TrainCommand();
        new CommandLine(command).parseArgs(args);
        return command;
    }

    @Test
    void theChosenLayoutIsTheRunsLayoutAndKeepsTheGlobalBatch(@TempDir Path dir) throws IOException {
        Path yaml = dir.resolve("small.yaml");
        Files.writeString(yaml, "preset: tiny\nseqLen: 16\nmodel:\n  vocabSize: 96\n  contextLength: 16\n  layers: 2\n  hidden: 32\n  heads: 2\n  kvHeads: 2\n  ffnHidden: 128\n");
        TrainCommand train = parse("--config", yaml.toString(), "--ranks", "2", "--global-batch", "8", "--parallel", "auto");
        StringWriter text = new StringWriter();
        AutoLayout auto = AutoLayout.choose(train, RankEnvironment.SINGLE, new PrintWriter(text, true));
        TrainConfig config = train.resolve(RankEnvironment.SINGLE, auto);
        assertEquals(2, config.layout().worldSize(), text.toString());
        assertEquals(8, (long) config.batchSize() * config.gradAccumulation() * config.layout().dp(), "global batch kept: " + text);
        assertTrue(text.toString().contains("chosen: "), text.toString());
    }

    @Test
    void layoutFlagsBesideAutoAreRefused() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () ->
                AutoLayout.choose(parse("--preset", "tiny", "--zero", "1", "--parallel", "auto"), RankEnvironment.SINGLE,
                        new PrintWriter(new StringWriter())));
        assertTrue(e.getMessage().contains("chooses --zero itself"), e.getMessage());
        RankEnvironment job = new RankEnvironment(0, 2, 0, 2, RankEnvironment.Source.SLURM);
        e = assertThrows(IllegalArgumentException.class, () ->
                AutoLayout.choose(parse("--preset", "tiny", "--parallel", "auto"), job, new PrintWriter(new StringWriter())));
        assertTrue(e.getMessage().contains("without launch"), e.getMessage());
    }
}
