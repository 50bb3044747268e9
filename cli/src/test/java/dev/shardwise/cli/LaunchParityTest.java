package dev.shardwise.cli;

import dev.shardwise.comm.mpi.Mpi;
import dev.shardwise.data.DatasetPreparer;
import dev.shardwise.data.DocSeparator;
import dev.shardwise.data.ProgressListener;
import dev.shardwise.data.TextSource;
import dev.shardwise.train.ConfigLoader;
import dev.shardwise.train.Trainer;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * A job of N processes started through mpirun (each process one rank, the {@code mpi} backend) trains exactly
 * like {@code --ranks N} as threads of one JVM (the {@code local} backend): the same losses, validation
 * losses and final weights and moments, bit for bit, over 20 steps; data parallelism under every ZeRO stage, and
 * pipeline, tensor and expert parallelism each composed with it. Both backends reduce in rank order and
 * give each rank the same number of kernel threads ({@code cores / N}). Skipped without Open MPI.
 */
class LaunchParityTest {
    private static final int STEPS = 20;

    @TempDir
    static Path dir;
    static Path config;

    @BeforeAll
    static void prepareTinyDataAndConfig() throws IOException {
        StringBuilder text = new StringBuilder();
        String[] words = {"the", "king", "shall", "speak", "now", "and", "we", "will", "hear", "him", "o", "my", "lord"};
        for (int i = 0; i < 3000; i++) text.append(words[(i * 7 + i / 5) % words.length]).append(i % 11 == 10 ? ".\n\n" : " ");
        Path data = dir.resolve("data");
        DatasetPreparer.prepare(new DatasetPreparer.Request(List.of(new TextSource("toy.txt", text.toString())),
                new DatasetPreparer.ValFraction(0.1), DocSeparator.BLANK_LINE, new DatasetPreparer.TrainTokenizer(300), data),
                ProgressListener.NONE);
        config = dir.resolve("tiny.yaml");
        Files.writeString(config, """
                data: %s
                batchSize: 1
                seqLen: 8
                gradAccumulation: 2
                steps: %d
                warmupSteps: 2
                evalEvery: 0
                evalBatches: 2
                checkpointEvery: 0
                model: {vocabSize: 300, contextLength: 8, layers: 1, hidden: 16, heads: 2, kvHeads: 2, ffnHidden: 64}
                """.formatted(data, STEPS));
    }

    /** The text of {@code key}'s value in a metrics.jsonl line, e.g. {@code 5.123456789012345}. */
    private static Optional<String> field(String jsonLine, String key) {
        Matcher m = Pattern.compile("\"" + key + "\":\\s*([^,}]+)").matcher(jsonLine);
        return m.find() ? Optional.of(m.group(1).strip()) : Optional.empty();
    }

    private static Optional<MpiRun> mpirun() {
        try {
            return Mpi.isAvailable() ? Optional.of(MpiRun.find(System.getenv("PATH"))) : Optional.empty();
        } catch (IllegalStateException e) {
            return Optional.empty();
        }
    }

    @Test
    void launchedProcessesTrainBitForBitLikeLocalRanks() throws IOException {
        Optional<MpiRun> mpirun = mpirun();
        assumeTrue(mpirun.isPresent(), "Open MPI (mpirun and libmpi) not installed");
        record Case(int ranks, int zero) { }
        int ran = 0;
        // ZeRO 1 runs in the pipeline and tensor-parallel cases below, ZeRO 3 again in the expert-parallel one
        for (Case c : List.of(new Case(4, 0), new Case(4, 2), new Case(4, 3))) {
            String name = "ranks " + c.ranks() + ", zero " + c.zero();
            Path local = dir.resolve("local-" + c.ranks() + "-" + c.zero()), launched = dir.resolve("mpi-" + c.ranks() + "-" + c.zero());

            Map<String, Object> flags = new HashMap<>(Map.of("ranks", c.ranks(), "zero", c.zero(), "runDir", local.toString()));
            new Trainer(ConfigLoader.resolve(ConfigLoader.readYaml(config), config.toString(), flags),
                    new PrintStream(new ByteArrayOutputStream())).run(false);

            ByteArrayOutputStream out = new ByteArrayOutputStream(), err = new ByteArrayOutputStream();
            MpiRun.Outcome outcome = mpirun.get().run(c.ranks(), List.of(), Map.of(), JobCommands.thisJvm(List.of("train",
                            "--config", config.toString(), "--zero", Integer.toString(c.zero()), "--run-dir", launched.toString())),
                    new PrintStream(out, true, StandardCharsets.UTF_8), new PrintStream(err, true, StandardCharsets.UTF_8), false);
            String printed = out.toString(StandardCharsets.UTF_8);
            assertTrue(outcome.succeeded(), name + ": " + outcome.describe() + "\n" + printed + err.toString(StandardCharsets.UTF_8));
            assertTrue(printed.contains("[rank 0] done: " + STEPS + " steps"), name + ": rank 0 reports the run:\n" + printed);
            assertFalse(printed.contains("[rank 1] "), name + ": the other ranks are quiet:\n" + printed);

            List<String> a = Files.readAllLines(local.resolve("metrics.jsonl")), b = Files.readAllLines(launched.resolve("metrics.jsonl"));
            assertEquals(STEPS, b.size(), name + ": one metrics line per step");
            for (int i = 0; i < STEPS; i++) {
                for (String key : List.of("loss", "grad_norm", "val_loss")) {   // full-precision doubles, compared as written
                    assertEquals(field(a.get(i), key), field(b.get(i), key), name + ": step " + (i + 1) + " " + key + ", mpirun vs threads");
                }
            }
            assertTrue(field(b.get(STEPS - 1), "val_loss").isPresent(), name + ": the last step is evaluated");
            assertSameShards(local, launched, name);
            ran++;
        }
        assertEquals(3, ran);
    }

    @Test
    void launchedPipelineTrainsBitForBitLikeLocalRanks() throws IOException {
        // pp 2 x dp 2, ZeRO 1, 4 micro-batches per step under 1F1B; the model has 2 blocks, one per stage
        Path pipeline = dir.resolve("pipeline.yaml");
        Files.writeString(pipeline, Files.readString(config).replace("layers: 1,", "layers: 2,")
                .replace("gradAccumulation: 2", "gradAccumulation: 4"));
        assertLaunchedMatchesThreads("pp 2 x dp 2, zero 1", pipeline, "pp", 2, 1);
    }

    @Test
    void launchedTensorParallelismTrainsBitForBitLikeLocalRanks() throws IOException {
        // tp 2 x dp 2, ZeRO 1: adjacent ranks split each block's heads and features and the vocabulary (301: padded)
        Path tensor = dir.resolve("tensor.yaml");
        Files.writeString(tensor, Files.readString(config).replace("vocabSize: 300,", "vocabSize: 301,")
                .replace("batchSize: 1", "batchSize: 2"));
        assertLaunchedMatchesThreads("tp 2 x dp 2, zero 1", tensor, "tp", 2, 1);
    }

    @Test
    void launchedExpertParallelismTrainsBitForBitLikeLocalRanks() throws IOException {
        // ep 2 x dp 2, ZeRO 3: two blocks of 4 experts, top-2; rank pairs (0, 1) and (2, 3) each split the experts and
        // exchange tokens by all-to-alls (MPI_Ialltoallv across processes) on the pass's thread while the rank's thread
        // gathers and reduce-scatters each block's experts over (0, 2), (1, 3) and its dense parameters over all four
        Path experts = dir.resolve("experts.yaml");
        Files.writeString(experts, Files.readString(config).replace("layers: 1,", "layers: 2,")
                .replace("batchSize: 1", "batchSize: 2")
                .replace("ffnHidden: 64}", "ffnHidden: 64, moe: {experts: 4, topK: 2, expertHidden: 32}}"));
        assertLaunchedMatchesThreads("ep 2 x dp 2, zero 3", experts, "ep", 2, 3);
    }

    /**
     * 4 ranks, ZeRO {@code zero} and {@code --<flag> <value>} from {@code yaml}, as threads and as mpirun's processes:
     * the same losses, gradient norms, validation losses and final checkpoint, bit for bit.
     */
    private static void assertLaunchedMatchesThreads(String name, Path yaml, String flag, int value, int zero) throws IOException {
        Optional<MpiRun> mpirun = mpirun();
        assumeTrue(mpirun.isPresent(), "Open MPI (mpirun and libmpi) not installed");
        Path local = dir.resolve("local-" + flag), launched = dir.resolve("mpi-" + flag);
        Map<String, Object> flags = new HashMap<>(Map.of("ranks", 4, flag, value, "zero", zero, "runDir", local.toString()));
        new Trainer(ConfigLoader.resolve(ConfigLoader.readYaml(yaml), yaml.toString(), flags),
                new PrintStream(new ByteArrayOutputStream())).run(false);

        ByteArrayOutputStream out = new ByteArrayOutputStream(), err = new ByteArrayOutputStream();
        MpiRun.Outcome outcome = mpirun.get().run(4, List.of(), Map.of(), JobCommands.thisJvm(List.of("train",
                        "--config", yaml.toString(), "--" + flag, Integer.toString(value), "--zero", Integer.toString(zero), "--run-dir",
                        launched.toString())),
                new PrintStream(out, true, StandardCharsets.UTF_8), new PrintStream(err, true, StandardCharsets.UTF_8), false);
        String printed = out.toString(StandardCharsets.UTF_8);
        assertTrue(outcome.succeeded(), name + ": " + outcome.describe() + "\n" + printed + err.toString(StandardCharsets.UTF_8));
        assertTrue(printed.contains("[rank 0] done: " + STEPS + " steps"), name + ": rank 0 reports the run:\n" + printed);

        List<String> a = Files.readAllLines(local.resolve("metrics.jsonl")), b = Files.readAllLines(launched.resolve("metrics.jsonl"));
        assertEquals(STEPS, b.size(), name + ": one metrics line per step");
        for (int i = 0; i < STEPS; i++) {
            for (String key : List.of("loss", "grad_norm", "val_loss")) {
                assertEquals(field(a.get(i), key), field(b.get(i), key), name + ": step " + (i + 1) + " " + key + ", mpirun vs threads");
            }
        }
        assertTrue(field(b.get(STEPS - 1), "val_loss").isPresent(), name + ": the last step is evaluated");
        assertSameShards(local, launched, name);
    }

    /** The final checkpoints of two runs of one layout: the same manifest pieces and the same shard files, byte for byte. */
    private static void assertSameShards(Path local, Path launched, String name) throws IOException {
        for (int r = 0; r < 4; r++) {
            String shard = String.format("checkpoints/step-000020/shard-%05d.bin", r);
            assertArrayEquals(Files.readAllBytes(local.resolve(shard)), Files.readAllBytes(launched.resolve(shard)),
                    name + ": final weights and moments, " + shard);
        }
    }
}
