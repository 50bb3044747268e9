package dev.shardwise.train;

import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.*;

/**
 * The resharding matrix: a checkpoint saved after 3 steps under dp 4 ZeRO 0, dp 4 ZeRO 3, pp 2 x dp 2, tp 2 x dp 2 or
 * tp 2 x pp 2 loads under each of the others (and under one rank, pp 2 x vpp 2 x dp 2 with ZeRO 1, and tp 2 x dp 2 with
 * ZeRO 3; a vocabulary of 301 gives tp ranks a padding row that belongs to no global element), and the next step's loss is within 1e-6 relative of continuing under the saving layout; under
 * the saving layout it continues bit for bit. A format-1 checkpoint (one file, whole tensors) still resumes.
 */
class CheckpointReshardingTest {
    @TempDir
    static Path dir;
    static Path data;

    /** A layout with 8 sequences per step (batchSize x dp x microBatches). */
    record Layout(String name, int ranks, int tp, int pp, int vpp, int zero, int batchSize, int microBatches) { }

    /** The layouts that save (and load). */
    static final List<Layout> LAYOUTS = List.of(new Layout("dp4-zero0", 4, 1, 1, 1, 0, 1, 2),
            new Layout("dp4-zero3", 4, 1, 1, 1, 3, 1, 2), new Layout("pp2-dp2", 4, 1, 2, 1, 0, 1, 4),
            new Layout("tp2-dp2", 4, 2, 1, 1, 0, 2, 2), new Layout("tp2-pp2", 4, 2, 2, 1, 0, 4, 2));

    /** Further layouts that load every saved checkpoint: one rank (another world size), and interleaved chunks with ZeRO 1. */
    static final List<Layout> LOAD_ONLY = List.of(new Layout("single", 1, 1, 1, 1, 0, 4, 2),
            new Layout("pp2-vpp2-dp2-zero1", 4, 1, 2, 2, 1, 1, 4), new Layout("tp2-dp2-zero3", 4, 2, 1, 1, 3, 2, 2));

    @BeforeAll
    static void prepareTinyData() throws IOException {
        data = TrainerResumeTest.tinyData(dir);
    }

    static TrainConfig config(Path runDir, Layout layout) {
        Map<String, Object> flags = new HashMap<>(TrainerResumeTest.flags(data, runDir, layout.ranks(), layout.zero()));
        flags.put("tp", layout.tp());
        flags.put("pp", layout.pp());
        flags.put("vpp", layout.vpp());
        flags.put("batchSize", layout.batchSize());
        flags.put("gradAccumulation", layout.microBatches());
        flags.put("steps", 4);
        flags.put("evalEvery", 0);
        flags.put("model", Map.of("vocabSize", 301, "contextLength", 8, "layers", 4, "hidden", 16, "heads", 2,
                "kvHeads", 2, "ffnHidden", 64));
        return ConfigLoader.resolve(Map.of(), "test", flags);
    }

    /** A new run directory holding only checkpoint step 3 of {@code from}. */
    static Path withCheckpointOf(Path from, String name) throws IOException {
        Path run = dir.resolve(name), source = from.resolve("checkpoints/step-000003"), target = run.resolve("checkpoints/step-000003");
        Files.createDirectories(target);
        try (var files = Files.list(source)) {
            for (Path f : files.toList()) Files.copy(f, target.resolve(f.getFileName()), StandardCopyOption.REPLACE_EXISTING);
        }
        return run;
    }

    @Test
    void everyLayoutLoadsEveryOthersCheckpoint() throws IOException {
        Map<String, Path> saved = new LinkedHashMap<>();
        for (Layout l : LAYOUTS) {
            Path run = dir.resolve("save-" + l.name());
            new Trainer(config(run, l), TrainerResumeTest.quiet()).run(false);
            saved.put(l.name(), run);
        }
        int pairs = 0;
        for (Layout from : LAYOUTS) {
            double expected = TrainerResumeTest.losses(saved.get(from.name())).get(3);
            for (Layout to : java.util.stream.Stream.concat(LAYOUTS.stream(), LOAD_ONLY.stream()).toList()) {
                Path run = withCheckpointOf(saved.get(from.name()), from.name() + "-to-" + to.name());
                new Trainer(config(run, to), TrainerResumeTest.quiet()).run(true);
                List<Double> losses = TrainerResumeTest.losses(run);
                assertEquals(1, losses.size(), from.name() + " -> " + to.name() + ": one step after the checkpoint");
                double actual = losses.getFirst();
                if (from.equals(to)) {
                    assertEquals(expected, actual, 0.0, from.name() + " resumed under its own layout continues bit for bit");
                    CheckpointContents.assertSame(saved.get(from.name()).resolve("checkpoints/step-000004"),
                            run.resolve("checkpoints/step-000004"), from.name() + " resumed: step-4 weights and moments");
                } else {
                    assertEquals(expected, actual, 1e-6 * Math.abs(expected), from.name() + " -> " + to.name()
                            + ": step-4 loss vs continuing under " + from.name() + " (relative 1e-6)");
                }
                pairs++;
            }
        }
        assertEquals(LAYOUTS.size() * (LAYOUTS.size() + LOAD_ONLY.size()), pairs);
    }

    @Test
    void eachRankWritesOnlyItsOwnShard() throws IOException {
        for (Layout l : List.of(LAYOUTS.get(1), LAYOUTS.get(3))) {   // dp 4 ZeRO 3; tp 2 x dp 2
            Path run = dir.resolve("shards-" + l.name());
            new Trainer(config(run, l), TrainerResumeTest.quiet()).run(false);
            CheckpointIndex index = CheckpointIndex.open(run.resolve("checkpoints/step-000004"));
            assertEquals(4, index.files().size(), l.name() + ": one shard file per rank: " + index.files());
            long total = index.files().values().stream().mapToLong(Long::longValue).sum(), whole = 0;
            for (CheckpointIndex.TensorInfo t : index.tensors().values()) whole += t.numel() * 4;
            assertEquals(whole, total, l.name() + ": the shards together hold every global element exactly once (no padding, "
                    + "no tensor twice)");
            for (long bytes : index.files().values()) {
                assertTrue(bytes < whole / 2, l.name() + ": a rank's shard is a part, not the whole: " + bytes);
            }
            assertEquals("{ranks=4, dp=" + 4 / l.tp() + ", tp=" + l.tp() + ", pp=1, vpp=1, ep=1, zero=" + l.zero() + "}",
                    String.valueOf(index.manifest().get("layout")), "the manifest records the layout it was saved under");
        }
    }

    @Test
    void aFormatOneCheckpointStillResumes() throws IOException {
        Layout single = LOAD_ONLY.getFirst();
        Path full = dir.resolve("v1-full"), old = dir.resolve("v1-old");
        new Trainer(config(full, single), TrainerResumeTest.quiet()).run(false);
        new Trainer(config(old, single), TrainerResumeTest.quiet()).run(false);
        Path checkpoints = old.resolve("checkpoints");
        Map<String, Object> manifest = Checkpoint.readManifest(checkpoints.resolve("step-000003"));
        Map<String, byte[]> contents = CheckpointContents.read(checkpoints.resolve("step-000003"));
        CheckpointIndex index = CheckpointIndex.open(checkpoints.resolve("step-000003"));
        try (Arena arena = Arena.ofConfined()) {
            Map<String, Tensor> tensors = new LinkedHashMap<>();
            for (Map.Entry<String, byte[]> e : contents.entrySet()) {
                MemorySegment segment = arena.allocate(e.getValue().length, 64);
                MemorySegment.copy(MemorySegment.ofArray(e.getValue()), 0, segment, 0, e.getValue().length);
                tensors.put(e.getKey(), Tensor.wrap(segment, DType.F32, index.tensors().get(e.getKey()).shape()));
            }
            Map<String, Object> metadata = new LinkedHashMap<>();
            for (String key : List.of("state", "model", "tokenizer", "data")) metadata.put(key, manifest.get(key));
            Checkpoint.deleteRecursively(checkpoints);
            Checkpoint.write(checkpoints, 3, tensors, metadata, List.of());
        }
        assertEquals(CheckpointIndex.FORMAT_1, CheckpointIndex.open(checkpoints.resolve("step-000003")).format());
        new Trainer(config(old, single), TrainerResumeTest.quiet()).run(true);
        assertEquals(TrainerResumeTest.losses(full), TrainerResumeTest.losses(old), "resumed from a format-1 checkpoint bit for bit");
    }
}
