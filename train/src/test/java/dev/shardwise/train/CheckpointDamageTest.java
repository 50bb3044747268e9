package dev.shardwise.train;

import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.PrintStream;
import java.io.RandomAccessFile;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.function.Consumer;

import static org.junit.jupiter.api.Assertions.*;

/**
 * A damaged newest checkpoint (flipped byte, deleted data file, truncated manifest) is detected, and --resume falls
 * back to the newest intact one with one line saying which and why, continuing bit for bit from there.
 */
class CheckpointDamageTest {
    @TempDir
    static Path dir;
    static Path data;
    static Path uninterrupted;

    @BeforeAll
    static void trainOnce() throws IOException {
        data = TrainerResumeTest.tinyData(dir);
        uninterrupted = dir.resolve("full");
        new Trainer(config(uninterrupted), TrainerResumeTest.quiet()).run(false);
    }

    static TrainConfig config(Path runDir) {
        return TrainerResumeTest.config(data, runDir, 2, 3);   // dp 2, ZeRO 3: two shards per checkpoint
    }

    /** Runs the whole run, damages its step-6 checkpoint, resumes; checks the fallback line and the losses. */
    private static void fallsBackAfter(String name, Consumer<Path> damage) throws IOException {
        Path run = dir.resolve(name);
        new Trainer(config(run), TrainerResumeTest.quiet()).run(false);
        damage.accept(run.resolve("checkpoints/step-000006"));
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        Trainer.Result resumed = new Trainer(config(run), new PrintStream(out, true)).run(true);
        String log = out.toString();
        assertTrue(log.contains("step-000006 is damaged") && log.contains("resuming from the newest intact one, step-000003"),
                name + ": one line names the damaged checkpoint and the one used: " + log);
        assertEquals(6, resumed.steps());
        assertEquals(TrainerResumeTest.losses(uninterrupted), TrainerResumeTest.losses(run),
                name + ": the run resumed from step 3 matches the uninterrupted run bit for bit");
        assertTrue(ResumeChoice.problem(run.resolve("checkpoints/step-000006")).isEmpty(), name + ": step 6 is rewritten whole");
    }

    static List<Path> dataFiles(Path checkpoint) {
        try (var files = Files.list(checkpoint)) {
            return files.filter(f -> f.getFileName().toString().endsWith(".bin")).sorted().toList();
        } catch (IOException e) {
            throw new java.io.UncheckedIOException(e);
        }
    }

    @Test
    void aFlippedByteMakesResumeFallBackToTheNewestIntactCheckpoint() throws IOException {
        fallsBackAfter("flipped", c -> {
            try (RandomAccessFile f = new RandomAccessFile(dataFiles(c).getLast().toFile(), "rw")) {
                f.seek(f.length() / 2);
                int value = f.read();
                f.seek(f.length() / 2);
                f.write(value ^ 0x10);
            } catch (IOException e) {
                throw new java.io.UncheckedIOException(e);
            }
        });
    }

    @Test
    void aDeletedShardMakesResumeFallBack() throws IOException {
        fallsBackAfter("deleted", c -> {
            try {
                Files.delete(dataFiles(c).getLast());
            } catch (IOException e) {
                throw new java.io.UncheckedIOException(e);
            }
        });
    }

    @Test
    void aTruncatedManifestMakesResumeFallBack() throws IOException {
        fallsBackAfter("truncated", c -> {
            try (RandomAccessFile f = new RandomAccessFile(c.resolve(Checkpoint.MANIFEST).toFile(), "rw")) {
                f.setLength(f.length() / 2);
            } catch (IOException e) {
                throw new java.io.UncheckedIOException(e);
            }
        });
    }

    @Test
    void resumeFromPicksTheNamedCheckpointAndRefusesADamagedOne() throws IOException {
        Path run = dir.resolve("picked");
        new Trainer(config(run), TrainerResumeTest.quiet()).run(false);
        Trainer.Result r = new Trainer(config(run), TrainerResumeTest.quiet()).run(true, "step-000003");
        assertEquals(6, r.steps());
        assertEquals(TrainerResumeTest.losses(uninterrupted), TrainerResumeTest.losses(run), "resumed from step 3 by name");
        Files.delete(dataFiles(run.resolve("checkpoints/step-000003")).getFirst());
        IOException e = assertThrows(IOException.class, () -> new Trainer(config(run), TrainerResumeTest.quiet()).run(true, "3"));
        assertTrue(e.getMessage().contains("step-000003 is damaged") && e.getMessage().contains("missing"), e.getMessage());
        e = assertThrows(IOException.class, () -> new Trainer(config(run), TrainerResumeTest.quiet()).run(true, "step-000004"));
        assertTrue(e.getMessage().contains("no checkpoint") && e.getMessage().contains("step-000006"), e.getMessage());
    }

    @Test
    void anUnfinishedCheckpointOfAStoppedRunIsRemovedWhenTheRunResumes() throws IOException {
        Path run = dir.resolve("stopped-while-saving");
        new Trainer(config(run), TrainerResumeTest.quiet()).run(false);
        Path partial = run.resolve("checkpoints/step-000009" + RunCheckpoints.PARTIAL);
        Files.createDirectories(partial);
        Files.write(partial.resolve("shard-00000.bin"), new byte[]{1, 2, 3});
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        new Trainer(config(run), new PrintStream(out, true)).run(true, "step-000003");
        assertFalse(Files.exists(partial), "the stale step-000009.partial is gone");
        assertTrue(out.toString().contains("removed step-000009.partial"), out.toString());
        assertEquals(TrainerResumeTest.losses(uninterrupted), TrainerResumeTest.losses(run), "the resumed run is unaffected");
    }

    @Test
    void keepCheckpointsDeletesAllButTheNewest() throws IOException {
        Path run = dir.resolve("kept");
        var flags = TrainerResumeTest.flags(data, run, 1, 0);
        flags.put("checkpointEvery", 1);
        flags.put("keepCheckpoints", 2);
        new Trainer(ConfigLoader.resolve(java.util.Map.of(), "test", flags), TrainerResumeTest.quiet()).run(false);
        assertEquals(List.of("step-000006", "step-000005"),
                ResumeChoice.steps(run.resolve("checkpoints")).stream().map(p -> p.getFileName().toString()).toList());
    }
}
