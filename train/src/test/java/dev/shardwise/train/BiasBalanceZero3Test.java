package dev.shardwise.train;

import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.parallel.ZeroMemory;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.*;

/**
 * Loss-free balancing (Wang et al. 2024; DeepSeek-V3) under ZeRO 3: each rank adds the bias update to the elements of
 * the routing bias its shard holds, so dp 2 (moments in memory or offloaded), ep 2 × dp 2, pp 2 × dp 2 and
 * ep 2 × tp 2 runs train like one rank over 20 steps (losses, validation losses and gradient norms within 1e-5
 * relative, the same routing bias bit for bit); AdamW leaves the bias alone (its moments stay 0); the checkpoint holds
 * it once under its global name and loads under ZeRO 0, 1 and 3 whichever of them wrote it.
 */
class BiasBalanceZero3Test {
    static final String BIAS = "h.0.mlp.router.balance_bias", OTHER_BIAS = "h.1.mlp.router.balance_bias";

    @TempDir
    static Path dir;
    static Path data;

    @BeforeAll
    static void prepareTinyData() throws IOException {
        data = TrainerResumeTest.tinyData(dir);
    }

    /**
     * {@code ranks} ranks (dp = ranks, ep of them splitting the experts) on the same global batch of 8 rows per
     * micro-batch, 2 micro-batches per step: a 2-block model with 4 experts of hidden 32, top-2, balance bias.
     */
    static Map<String, Object> flags(Path runDir, int ranks, int ep, int zero, int steps) {
        return flags(runDir, ranks, 1, 1, ep, zero, steps);
    }

    /** As above with {@code pp} stages of one block each and {@code tp}-way tensor parallelism: dp = ranks/(pp·tp). */
    static Map<String, Object> flags(Path runDir, int ranks, int pp, int tp, int ep, int zero, int steps) {
        Map<String, Object> flags = new HashMap<>(TrainerResumeTest.flags(data, runDir, ranks, zero));
        flags.put("ep", ep);
        flags.put("pp", pp);
        flags.put("tp", tp);
        if (pp == 2) flags.put("pipelineCut", List.of(0, 1));
        flags.put("batchSize", 8 * pp * tp / ranks);
        flags.put("gradAccumulation", 2);
        flags.put("steps", steps);
        flags.put("evalEvery", 5);
        flags.put("checkpointEvery", 10);
        flags.put("model", Map.of("vocabSize", 300, "contextLength", 8, "layers", 2, "hidden", 16, "heads", 2,
                "kvHeads", 2, "ffnHidden", 64, "moe", Map.of("experts", 4, "topK", 2, "expertHidden", 32, "balance", "bias")));
        return flags;
    }

    static void train(Map<String, Object> flags, boolean resume) throws IOException {
        new Trainer(ConfigLoader.resolve(Map.of(), "test", flags), TrainerResumeTest.quiet()).run(resume);
    }

    /** The single-rank run every layout is compared with (trained once). */
    static Path reference() throws IOException {
        Path reference = dir.resolve("one-rank");
        if (!Files.exists(reference.resolve("metrics.jsonl"))) train(flags(reference, 1, 1, 0, 20), false);
        return reference;
    }

    /** Tensor {@code name} (float32) of the run's checkpoint at {@code step}, whole, whatever layout wrote it. */
    static float[] saved(Path runDir, int step, String name) throws IOException {
        byte[] bytes = CheckpointContents.read(runDir.resolve("checkpoints").resolve(Checkpoint.directoryName(step))).get(name);
        assertNotNull(bytes, name + " saved at step " + step + " of " + runDir.getFileName());
        float[] out = new float[bytes.length / 4];
        ByteBuffer.wrap(bytes).order(ByteOrder.LITTLE_ENDIAN).asFloatBuffer().get(out);
        return out;
    }

    /** The routing biases (AdamW never moves them: their moments stay 0) and how far they moved, at {@code step}. */
    static float[] biases(Path runDir, int step, String name) throws IOException {
        float[] first = saved(runDir, step, "param/" + BIAS), second = saved(runDir, step, "param/" + OTHER_BIAS);
        for (String kind : List.of("adam_m/", "adam_v/")) {
            for (String bias : List.of(BIAS, OTHER_BIAS)) {
                float[] moment = saved(runDir, step, kind + bias);
                assertArrayEquals(new float[moment.length], moment, name + ": " + kind + bias + " stays 0 (AdamW leaves the bias alone)");
            }
        }
        float[] both = Arrays.copyOf(first, first.length + second.length);
        System.arraycopy(second, 0, both, first.length, second.length);
        double moved = 0;
        for (float b : both) moved += Math.abs(b);
        assertTrue(moved > 0, name + ": the routing biases moved: " + Arrays.toString(both));
        return both;
    }

    @ParameterizedTest(name = "ranks={0} pp={1} tp={2} ep={3} offload={4}")
    @CsvSource({"2, 1, 1, 1, false", "2, 1, 1, 1, true", "4, 1, 1, 2, false", "4, 1, 1, 2, true", "4, 2, 1, 1, false",
                "4, 1, 2, 2, false"})
    void biasBalanceAtZero3TrainsLikeOneRank(int ranks, int pp, int tp, int ep, boolean offload) throws IOException {
        String name = "ZeRO 3, ranks " + ranks + ", pp " + pp + ", tp " + tp + ", ep " + ep + (offload ? ", moments offloaded" : "");
        Path reference = reference(), run = dir.resolve("zero3-" + ranks + "-" + pp + "-" + tp + "-" + ep + "-" + offload);
        Map<String, Object> flags = flags(run, ranks, pp, tp, ep, 3, 20);
        if (offload) flags.put("offloadOptimizer", dir.resolve("moments-" + ranks + "-" + pp + "-" + tp + "-" + ep).toString());
        train(flags, false);
        TrainerExpertParallelTest.assertClose(TrainerExpertParallelTest.column(reference, "loss"),
                TrainerExpertParallelTest.column(run, "loss"), 1e-5, name + ": loss of step");
        TrainerExpertParallelTest.assertClose(TrainerExpertParallelTest.column(reference, "val_loss"),
                TrainerExpertParallelTest.column(run, "val_loss"), 1e-5, name + ": validation loss");
        TrainerExpertParallelTest.assertClose(TrainerExpertParallelTest.column(reference, "grad_norm"),
                TrainerExpertParallelTest.column(run, "grad_norm"), 1e-5, name + ": gradient norm");
        assertEquals(20, TrainerExpertParallelTest.column(run, "loss").size(), name + ": 20 steps");
        // the same loads every step (the same routing), so the same bias updates, bit for bit
        assertArrayEquals(biases(reference, 20, "one rank"), biases(run, 20, name), name + ": routing biases after 20 steps");

        // the bias is one more element of the sharded parameters: rank 0's pool holds exactly what --dry-run says
        TrainConfig layout = ConfigLoader.resolve(Map.of(), "test", flags);
        ZeroMemory allocated = MemoryReport.allocated(layout, 0);
        Map<String, Object> last = MetricsLog.read(run.resolve("metrics.jsonl")).getLast();
        for (MemoryCategory c : MemoryReport.MODEL_STATE) {
            long peak = ((Number) last.get("mem_peak_" + c.label().replace('-', '_'))).longValue();
            assertEquals(allocated.bytes(c), peak, name + ": " + c.label() + " in rank 0's pool against --dry-run");
        }
        CheckpointIndex index = Checkpoint.index(run.resolve("checkpoints").resolve(Checkpoint.directoryName(20)));
        long stored = index.files().values().stream().mapToLong(Long::longValue).sum(), elements = 0;
        for (CheckpointIndex.TensorInfo t : index.tensors().values()) elements += t.numel();
        assertEquals(4 * elements, stored, name + ": the shards hold every element of every tensor exactly once");
        assertEquals(4, index.tensors().get("param/" + BIAS).numel(), name + ": the bias saved whole under its global name");
    }

    /**
     * A ZeRO 3 dp 2 run's step-10 checkpoint resumes at ZeRO 3 bit for bit and at ZeRO 0 and 1, and a ZeRO 1 one at
     * ZeRO 3, each ending like the run that wrote it (steps 11 and 12): losses within 1e-5 relative, the same routing
     * bias.
     */
    @Test
    void aZero3BiasCheckpointResumesAtZero0And1AndBack() throws IOException {
        Path zero3 = dir.resolve("ckpt-zero3"), zero1 = dir.resolve("ckpt-zero1");
        train(flags(zero3, 2, 1, 3, 12), false);
        train(flags(zero1, 2, 1, 1, 12), false);
        record Resume(Path from, int zero) { }
        for (Resume r : List.of(new Resume(zero3, 3), new Resume(zero3, 0), new Resume(zero3, 1), new Resume(zero1, 3))) {
            String name = "the " + r.from().getFileName() + " checkpoint resumed at ZeRO " + r.zero();
            Path run = dir.resolve(r.from().getFileName() + "-as-zero" + r.zero());
            TrainerExpertParallelTest.copyStep(r.from(), run, 10);
            train(flags(run, 2, 1, r.zero(), 12), true);
            List<Double> expected = TrainerExpertParallelTest.column(r.from(), "loss"), got = TrainerExpertParallelTest.column(run, "loss");
            if (r.from() == zero3 && r.zero() == 3) assertEquals(expected, got, name + ": losses bit for bit");
            else TrainerExpertParallelTest.assertClose(expected, got, 1e-5, name + ": loss of step");
            assertArrayEquals(biases(r.from(), 12, r.from().getFileName().toString()), biases(run, 12, name),
                    name + ": routing biases after 12 steps");
        }
    }
}
