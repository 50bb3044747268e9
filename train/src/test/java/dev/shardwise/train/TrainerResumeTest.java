package dev.shardwise.train;

import dev.shardwise.data.DatasetPreparer;
import dev.shardwise.data.DocSeparator;
import dev.shardwise.data.ProgressListener;
import dev.shardwise.data.TextSource;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.PrintStream;
import java.io.RandomAccessFile;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.*;

/** A stopped and resumed run must continue bit for bit; damaged checkpoints must be refused. */
class TrainerResumeTest {
    @TempDir
    static Path dir;
    static Path data;

    @BeforeAll
    static void prepareTinyData() throws IOException {
        data = tinyData(dir);
    }

    /** A small token dataset (300-token BPE vocabulary) prepared under {@code dir}; returns its directory. */
    static Path tinyData(Path dir) throws IOException {
        StringBuilder text = new StringBuilder();
        String[] words = {"the", "king", "shall", "speak", "now", "and", "we", "will", "hear", "him", "o", "my", "lord"};
        for (int i = 0; i < 3000; i++) {
            text.append(words[(i * 7 + i / 5) % words.length]).append(i % 11 == 10 ? ".\n\n" : " ");
        }
        Path out = dir.resolve("data");
        DatasetPreparer.prepare(new DatasetPreparer.Request(List.of(new TextSource("toy.txt", text.toString())),
                new DatasetPreparer.ValFraction(0.1), DocSeparator.BLANK_LINE, new DatasetPreparer.TrainTokenizer(300), out),
                ProgressListener.NONE);
        return out;
    }

    static TrainConfig config(Path runDir) {
        return config(runDir, 1);
    }

    static TrainConfig config(Path runDir, int ranks) {
        return config(runDir, ranks, 0);
    }

    static TrainConfig config(Path runDir, int ranks, int zero) {
        return config(data, runDir, ranks, zero);
    }

    static TrainConfig config(Path data, Path runDir, int ranks, int zero) {
        return ConfigLoader.resolve(Map.of(), "test", flags(data, runDir, ranks, zero));
    }

    /** The flags of {@link #config(Path, Path, int, int)}, to add to. */
    static Map<String, Object> flags(Path data, Path runDir, int ranks, int zero) {
        Map<String, Object> flags = new HashMap<>();
        flags.put("ranks", ranks);
        flags.put("zero", zero);
        flags.put("data", data.toString());
        flags.put("runDir", runDir.toString());
        flags.put("steps", 6);
        flags.put("batchSize", 4 / ranks);
        flags.put("seqLen", 8);
        flags.put("gradAccumulation", 2);
        flags.put("warmupSteps", 2);
        flags.put("evalEvery", 3);
        flags.put("evalBatches", 2);
        flags.put("checkpointEvery", 3);
        flags.put("model", Map.of("vocabSize", 300, "contextLength", 8, "layers", 1, "hidden", 16, "heads", 2,
                "kvHeads", 2, "ffnHidden", 64));
        return flags;
    }

    static List<Double> losses(Path runDir) throws IOException {
        return MetricsLog.read(runDir.resolve("metrics.jsonl")).stream()
                .map(row -> ((Number) row.get("loss")).doubleValue()).toList();
    }

    static PrintStream quiet() {
        return new PrintStream(new ByteArrayOutputStream());
    }

    @Test
    void resumedRunMatchesUninterruptedRunBitForBit() throws IOException {
        Path a = dir.resolve("run-a"), b = dir.resolve("run-b");
        Trainer.Result full = new Trainer(config(a), quiet()).run(false);
        assertEquals(6, full.steps());
        assertTrue(Files.isRegularFile(a.resolve("loss.png")), "loss plot written");
        assertTrue(Files.isRegularFile(a.resolve("config.yaml")), "resolved config written");
        if (Files.isReadable(Path.of("/proc/self/status"))) {
            Map<String, Object> row = MetricsLog.read(a.resolve("metrics.jsonl")).getFirst();
            assertTrue(((Number) row.get("rss_bytes")).longValue() >= ((Number) row.get("mem_peak_bytes")).longValue(),
                    "the process's resident memory is reported beside the pool's peak and holds it: " + row);
        }

        new Trainer(config(b), quiet()).run(false);
        // Interrupt after step 3: drop the final checkpoint, as if the process had died before writing it.
        Checkpoint.deleteRecursively(b.resolve("checkpoints").resolve(Checkpoint.directoryName(6)));
        Trainer.Result resumed = new Trainer(config(b), quiet()).run(true);
        assertEquals(6, resumed.steps());

        List<Double> la = losses(a), lb = losses(b);
        assertEquals(6, la.size());
        assertEquals(la, lb, "losses of the resumed run equal the uninterrupted run's exactly");
        assertEquals(full.valLoss(), resumed.valLoss(), 0.0, "final validation loss identical");
        CheckpointContents.assertSame(a.resolve("checkpoints/step-000006"), b.resolve("checkpoints/step-000006"), "final weights and moments identical");
    }

    @Test
    void twoDataParallelRanksTrainLikeOneRankWithTheSameGlobalBatch() throws IOException {
        Path one = dir.resolve("run-one"), two = dir.resolve("run-two");
        Trainer.Result single = new Trainer(config(one, 1), quiet()).run(false);
        Trainer.Result parallel = new Trainer(config(two, 2), quiet()).run(false);
        List<Double> a = losses(one), b = losses(two);
        assertEquals(a.size(), b.size());
        for (int i = 0; i < a.size(); i++) {
            assertEquals(a.get(i), b.get(i), 1e-6 * Math.abs(a.get(i)), "step " + (i + 1) + " loss, 2 ranks vs 1");
        }
        assertEquals(single.valLoss(), parallel.valLoss(), 1e-5, "final validation loss, 2 ranks vs 1");
        assertTrue(Files.isRegularFile(two.resolve("checkpoints/step-000006/manifest.json")), "rank 0 wrote the checkpoint");
    }

    @Test
    void zeroStage1TrainsLikeDataParallelAndResumesBitForBit() throws IOException {
        Path ddp = dir.resolve("run-ddp"), zero = dir.resolve("run-zero"), resumed = dir.resolve("run-zero-resumed");
        new Trainer(config(ddp, 2, 0), quiet()).run(false);
        new Trainer(config(zero, 2, 1), quiet()).run(false);
        assertEquals(losses(ddp), losses(zero), "ZeRO-1 computes what replicated AdamW computes");
        new Trainer(config(resumed, 2, 1), quiet()).run(false);
        Checkpoint.deleteRecursively(resumed.resolve("checkpoints").resolve(Checkpoint.directoryName(6)));
        new Trainer(config(resumed, 2, 1), quiet()).run(true);
        assertEquals(losses(zero), losses(resumed), "a ZeRO-1 run resumed from step 3 continues bit for bit");
        CheckpointContents.assertSame(zero.resolve("checkpoints/step-000006"), resumed.resolve("checkpoints/step-000006"), "gathered moments and weights identical");
        CheckpointContents.assertSame(ddp.resolve("checkpoints/step-000006"), zero.resolve("checkpoints/step-000006"),
                "a ZeRO-1 checkpoint is the same file a replicated run writes (layout-independent)");
    }

    @Test
    void checkpointWithAFlippedByteIsRefusedNamingTheTensor() throws IOException {
        Path c = dir.resolve("run-c");
        new Trainer(config(c), quiet()).run(false);
        Checkpoint.deleteRecursively(c.resolve("checkpoints").resolve(Checkpoint.directoryName(6)));
        try (RandomAccessFile f = new RandomAccessFile(c.resolve("checkpoints/step-000003/shard-00000.bin").toFile(), "rw")) {
            f.seek(1000);
            int value = f.read();
            f.seek(1000);
            f.write(value ^ 0x10);
        }
        IOException e = assertThrows(IOException.class, () -> new Trainer(config(c), quiet()).run(true));
        assertTrue(e.getMessage().contains("fails its checksum"), e.getMessage());
        assertTrue(e.getMessage().contains("param/"), "names the tensor: " + e.getMessage());
    }

    @Test
    void aSecondRunIntoTheSameDirectoryNeedsResume() throws IOException {
        Path d = dir.resolve("run-d");
        new Trainer(config(d), quiet()).run(false);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> new Trainer(config(d), quiet()).run(false));
        assertTrue(e.getMessage().contains("--resume"), e.getMessage());
    }

    @Test
    void unknownConfigKeysAndBadValuesAreNamed() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> ConfigLoader.resolve(Map.of("learningRate", 0.1), "configs/x.yaml", Map.of()));
        assertTrue(e.getMessage().contains("learningRate") && e.getMessage().contains("configs/x.yaml"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class,
                () -> ConfigLoader.resolve(Map.of("model", Map.of("heads", 3)), "configs/x.yaml", Map.of()));
        assertTrue(e.getMessage().contains("heads=3"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> ConfigLoader.resolve(Map.of("steps", "many"), "y", Map.of()));
        assertTrue(e.getMessage().contains("steps"), e.getMessage());
    }
}
