package dev.shardwise.train;

import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;

import static org.junit.jupiter.api.Assertions.*;

/**
 * ZeRO stages 2 and 3 and the offloaded optimizer through the {@link Trainer}: gradient accumulation (reduce-scatter
 * every micro-batch), evaluation, checkpoints that load under any stage, and resume.
 */
class ZeroTrainerTest {
    @TempDir
    static Path dir;
    static Path data;

    @BeforeAll
    static void prepareTinyData() throws IOException {
        data = TrainerResumeTest.tinyData(dir);
    }

    static TrainConfig config(Path runDir, int ranks, int zero, Path offload) {
        Map<String, Object> flags = TrainerResumeTest.flags(data, runDir, ranks, zero);
        if (offload != null) flags.put("offloadOptimizer", offload.toString());
        return ConfigLoader.resolve(Map.of(), "test", flags);
    }

    static void assertClose(List<Double> expected, List<Double> actual, double relative, String what) {
        assertEquals(expected.size(), actual.size(), what + ": steps");
        for (int i = 0; i < expected.size(); i++) {
            double rel = Math.abs(actual.get(i) - expected.get(i)) / Math.abs(expected.get(i));
            assertTrue(rel <= relative, what + ": step " + (i + 1) + " loss " + actual.get(i) + " vs " + expected.get(i)
                    + " (relative " + rel + ")");
        }
    }

    @ParameterizedTest(name = "zero={0}")
    @CsvSource({"2", "3"})
    void shardedStagesTrainLikeStageZeroWithAccumulationAndResumeBitForBit(int stage) throws IOException {
        Path replicated = dir.resolve("z0-" + stage), sharded = dir.resolve("z" + stage), resumed = dir.resolve("z" + stage + "-resumed");
        new Trainer(config(replicated, 2, 0, null), TrainerResumeTest.quiet()).run(false);
        Trainer.Result r = new Trainer(config(sharded, 2, stage, null), TrainerResumeTest.quiet()).run(false);
        // Two micro-batches per step: ZeRO 2/3 average each micro-batch's gradients and add them, stage 0 adds first.
        assertClose(TrainerResumeTest.losses(replicated), TrainerResumeTest.losses(sharded), 1e-6, "zero-" + stage + " vs zero-0");
        assertTrue(Double.isFinite(r.valLoss()), "every rank evaluates under ZeRO " + stage);

        copyRun(sharded, resumed, 3);
        new Trainer(config(resumed, 2, stage, null), TrainerResumeTest.quiet()).run(true);
        assertEquals(TrainerResumeTest.losses(sharded), TrainerResumeTest.losses(resumed),
                "a ZeRO-" + stage + " run resumed from step 3 continues bit for bit");
        CheckpointContents.assertSame(sharded.resolve("checkpoints/step-000006"), resumed.resolve("checkpoints/step-000006"), "gathered weights and moments");
    }

    @Test
    void checkpointsLoadAcrossStagesZeroAndThree() throws IOException {
        Path z0 = dir.resolve("x0"), z3 = dir.resolve("x3");
        new Trainer(config(z0, 2, 0, null), TrainerResumeTest.quiet()).run(false);
        new Trainer(config(z3, 2, 3, null), TrainerResumeTest.quiet()).run(false);

        Path z0to3 = dir.resolve("x0-to-3"), z3to0 = dir.resolve("x3-to-0");
        copyRun(z0, z0to3, 3);
        new Trainer(config(z0to3, 2, 3, null), TrainerResumeTest.quiet()).run(true);
        assertClose(TrainerResumeTest.losses(z0), TrainerResumeTest.losses(z0to3), 1e-6, "zero-0 checkpoint resumed under zero-3");

        copyRun(z3, z3to0, 3);
        new Trainer(config(z3to0, 2, 0, null), TrainerResumeTest.quiet()).run(true);
        assertClose(TrainerResumeTest.losses(z3), TrainerResumeTest.losses(z3to0), 1e-6, "zero-3 checkpoint resumed under zero-0");

        Path z3to1rank = dir.resolve("x3-to-1rank");
        copyRun(z3, z3to1rank, 3);
        new Trainer(config(z3to1rank, 1, 0, null), TrainerResumeTest.quiet()).run(true);
        assertClose(TrainerResumeTest.losses(z3), TrainerResumeTest.losses(z3to1rank), 1e-6, "zero-3 dp=2 checkpoint on one rank");
    }

    @ParameterizedTest(name = "zero={0}")
    @CsvSource({"1", "3"})
    void offloadedOptimizerStateGivesBitIdenticalRuns(int stage) throws IOException {
        Path inMemory = dir.resolve("mem-" + stage), onDisk = dir.resolve("disk-" + stage), offload = dir.resolve("offload-" + stage);
        new Trainer(config(inMemory, 2, stage, null), TrainerResumeTest.quiet()).run(false);
        Trainer.Result r = new Trainer(config(onDisk, 2, stage, offload), TrainerResumeTest.quiet()).run(false);
        assertEquals(TrainerResumeTest.losses(inMemory), TrainerResumeTest.losses(onDisk), "zero-" + stage + " offloaded vs in memory");
        CheckpointContents.assertSame(inMemory.resolve("checkpoints/step-000006"), onDisk.resolve("checkpoints/step-000006"), "zero-" + stage + " checkpoints");
        try (Stream<Path> left = Files.list(offload)) {
            assertEquals(List.of(), left.toList(), "the optimizer state files are deleted at the end");
        }
        assertTrue(r.peakMemoryBytes() > 0);
    }

    /** Copies a run directory keeping only checkpoints up to {@code step} and the metrics before it. */
    static void copyRun(Path from, Path to, int step) throws IOException {
        try (Stream<Path> files = Files.walk(from)) {
            for (Path p : files.toList()) {
                Path target = to.resolve(from.relativize(p).toString());
                if (Files.isDirectory(p)) Files.createDirectories(target);
                else Files.copy(p, target, StandardCopyOption.REPLACE_EXISTING);
            }
        }
        try (Stream<Path> checkpoints = Files.list(to.resolve("checkpoints"))) {
            for (Path c : checkpoints.toList()) {
                if (c.getFileName().toString().compareTo(Checkpoint.directoryName(step)) > 0) Checkpoint.deleteRecursively(c);
            }
        }
    }
}
