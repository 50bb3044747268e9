package dev.shardwise.train;

import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.model.Gpt;
import dev.shardwise.model.ModelConfig;
import dev.shardwise.model.ParameterSet;
import dev.shardwise.model.MoeConfig;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.*;

/**
 * The trainer with mixture-of-experts blocks: the auxiliary losses and the expert load reach metrics.jsonl, a run
 * matches the single rank under data parallelism with ZeRO 1 and under a pipeline (expert parameters are ordinary
 * parameters at ep 1), and the routing bias of loss-free balancing is saved with the model config and resumed.
 */
class TrainerMoeTest {
    @TempDir
    static Path dir;
    static Path data;

    @BeforeAll
    static void prepareTinyData() throws IOException {
        data = TrainerResumeTest.tinyData(dir);
    }

    /** A 2-block model with 4 experts of hidden 32, top-2, in every block; micro-batches of 2 rows. */
    static TrainConfig config(Path runDir, int ranks, int pp, int zero, String balance) {
        return config(runDir, ranks, pp, 1, zero, balance, 2);
    }

    /**
     * As above with {@code layers} blocks and {@code vpp} model chunks per stage (vpp 2: the interleaved schedule, a
     * block per chunk).
     */
    static TrainConfig config(Path runDir, int ranks, int pp, int vpp, int zero, String balance, int layers) {
        Map<String, Object> flags = new HashMap<>(TrainerResumeTest.flags(data, runDir, ranks, zero));
        flags.put("pp", pp);
        if (vpp > 1) {
            flags.put("vpp", vpp);
            flags.put("schedule", "interleaved");
            flags.put("pipelineCut", java.util.stream.IntStream.range(0, layers).boxed().toList());
        }
        flags.put("batchSize", 2 * pp / ranks);
        flags.put("gradAccumulation", 4);
        flags.put("model", Map.of("vocabSize", 300, "contextLength", 8, "layers", layers, "hidden", 16, "heads", 2,
                "kvHeads", 2, "ffnHidden", 64, "moe", Map.of("experts", 4, "topK", 2, "balance", balance)));
        return ConfigLoader.resolve(Map.of(), "test", flags);
    }

    static void assertSameLosses(List<Double> expected, List<Double> got, String name) {
        assertEquals(expected.size(), got.size(), name + ": steps");
        for (int i = 0; i < expected.size(); i++) {
            assertEquals(expected.get(i), got.get(i), 1e-5 * Math.abs(expected.get(i)), name + ": loss of step " + (i + 1));
        }
    }

    /**
     * The balance loss is computed per micro-batch, so a layout keeps each micro-batch whole to match: a pipeline of
     * two stages runs the single rank's micro-batches; its balance loss is summed over the stages' layers. With vpp 2
     * (the interleaved schedule, 4 blocks in 4 chunks, two per stage) each stage sums its two chunks' MoE blocks.
     */
    @ParameterizedTest(name = "vpp={0}")
    @CsvSource({"1", "2"})
    void auxBalanceTrainsAndAPipelineMatchesTheSingleRank(int vpp) throws IOException {
        Path single = dir.resolve("aux-1-layers" + 2 * vpp), pipeline = dir.resolve("aux-pp2-vpp" + vpp);
        new Trainer(config(single, 1, 1, 1, 0, "aux", 2 * vpp), TrainerResumeTest.quiet()).run(false);
        new Trainer(config(pipeline, 2, 2, vpp, 0, "aux", 2 * vpp), TrainerResumeTest.quiet()).run(false);
        String layout = "pp 2" + (vpp > 1 ? " vpp " + vpp : "");
        assertSameLosses(TrainerResumeTest.losses(single), TrainerResumeTest.losses(pipeline), layout + " vs one rank");
        List<Map<String, Object>> rows = MetricsLog.read(single.resolve("metrics.jsonl"));
        List<Map<String, Object>> piped = MetricsLog.read(pipeline.resolve("metrics.jsonl"));
        for (int i = 0; i < rows.size(); i++) {
            Map<String, Object> row = rows.get(i);
            double aux = ((Number) row.get("aux_loss")).doubleValue();
            // 2·vpp layers of 0.01·balance (about 0.01 each: E·Σ f·P is near 1 when the top-k choice follows P) + 0.001·z-loss
            assertTrue(aux > 0.02 * vpp, "step " + (i + 1) + ": aux_loss " + aux + " holds every layer's balance and z-loss terms");
            assertEquals(aux, ((Number) piped.get(i).get("aux_loss")).doubleValue(), 1e-5 * aux,
                    "step " + (i + 1) + ": the balance loss is the same under pp 1 and " + layout);
            // 4 micro-batches of 2·8 tokens, k = 2, over 4 experts: 4·16·2/4 = 32 per expert on average per layer
            assertEquals(32.0, ((Number) row.get("moe_load_mean")).doubleValue(), 1e-12, "mean tokens per expert");
            assertTrue(((Number) row.get("moe_load_max")).doubleValue() >= 32, "max load at least the mean");
            double worst = ((Number) row.get("moe_load_max_over_mean")).doubleValue();
            double layerMean = ((Number) row.get("moe_load_max_over_mean_layers")).doubleValue();
            assertTrue(worst >= 1, "max/mean at least 1");
            assertTrue(layerMean >= 1 && layerMean <= worst, "the mean over layers " + layerMean + " in [1, worst " + worst + "]");
            // pp 2 holds one MoE layer per chunk: the stages' sums and counts make the same mean
            assertEquals(layerMean, ((Number) piped.get(i).get("moe_load_max_over_mean_layers")).doubleValue(), 1e-6,
                    "step " + (i + 1) + ": the mean over layers is the same under pp 1 and " + layout);
            // the worst layer's max/mean, whichever stage and chunk holds it
            assertEquals(worst, ((Number) piped.get(i).get("moe_load_max_over_mean")).doubleValue(), 1e-6,
                    "step " + (i + 1) + ": the worst layer's load is the same under pp 1 and " + layout);
            // the load summed over the last 50 steps: the step's own at step 1, the same under pp 1 and pp 2 always
            double window = ((Number) row.get("moe_load_max_over_mean_50")).doubleValue();
            double windowLayers = ((Number) row.get("moe_load_max_over_mean_layers_50")).doubleValue();
            if (i == 0) assertEquals(worst, window, 1e-12, "one step in the window");
            assertTrue(windowLayers >= 1 && windowLayers <= window, "window: " + windowLayers + " in [1, " + window + "]");
            assertEquals(windowLayers, ((Number) piped.get(i).get("moe_load_max_over_mean_layers_50")).doubleValue(), 1e-6,
                    "step " + (i + 1) + ": the window's mean over layers is the same under pp 1 and " + layout);
            assertEquals(0.0, ((Number) row.get("moe_dropped")).doubleValue(), "dropless drops nothing");
            // the routers' score spread, averaged over the layers: positive, and the same when each stage holds one
            double spread = ((Number) row.get("moe_router_spread")).doubleValue();
            assertTrue(spread > 0, "step " + (i + 1) + ": moe_router_spread " + spread);
            assertEquals(spread, ((Number) piped.get(i).get("moe_router_spread")).doubleValue(), 1e-6 * spread,
                    "step " + (i + 1) + ": the router spread is the same under pp 1 and " + layout);
        }
    }

    /**
     * Loss-free balancing under dp 2 with ZeRO 1 matches the single rank (the bias moves by the relative load error,
     * the same whether loads are summed or averaged over replicas; the z-loss is a mean over tokens like the
     * cross-entropy); the bias is a saved tensor, so a resumed run continues bit for bit, and the manifest carries
     * the MoE config.
     */
    @Test
    void biasBalanceMatchesUnderDataParallelZero1AndResumesBitForBit() throws IOException {
        Path single = dir.resolve("bias-1"), dp = dir.resolve("bias-dp2"), resumed = dir.resolve("bias-resumed");
        TrainConfig config = config(single, 1, 1, 0, "bias");
        new Trainer(config, TrainerResumeTest.quiet()).run(false);
        new Trainer(config(dp, 2, 1, 1, "bias"), TrainerResumeTest.quiet()).run(false);
        assertSameLosses(TrainerResumeTest.losses(single), TrainerResumeTest.losses(dp), "dp 2 ZeRO 1 vs one rank");

        Path last = single.resolve("checkpoints").resolve(Checkpoint.directoryName(6));
        ModelConfig saved = Checkpoint.modelConfig(last);
        assertEquals(config.model(), saved, "the manifest's model config, MoE included");
        assertEquals(MoeConfig.Balance.BIAS, saved.moe().balance());
        try (ParameterSet params = Gpt.declare(saved).allocate(MemoryPool.unlimited("check"), DType.F32)) {
            Checkpoint.loadParameters(last, params);
            double[] bias = params.get("h.0.mlp.router.balance_bias").value().toDoubleArray();
            double moved = 0, sum = 0;
            for (double b : bias) {
                moved += Math.abs(b);
                sum += b;
            }
            // 6 steps of γ·(mean - load_e)/mean, γ = 0.1: each step's moves sum to 0, and |mean - load_e| summed over
            // the 4 experts is at most 2·4·mean
            double rate = MoeConfig.DEFAULT_BIAS_RATE;
            assertTrue(moved > 0 && moved <= 6 * 2 * 4 * rate, "the saved routing bias moved: " + java.util.Arrays.toString(bias));
            assertEquals(0, sum, 1e-6, "the proportional rule keeps the biases' sum at 0: " + java.util.Arrays.toString(bias));
        }

        new Trainer(config(resumed, 1, 1, 0, "bias"), TrainerResumeTest.quiet()).run(false);
        Checkpoint.deleteRecursively(resumed.resolve("checkpoints").resolve(Checkpoint.directoryName(6)));
        new Trainer(config(resumed, 1, 1, 0, "bias"), TrainerResumeTest.quiet()).run(true);
        assertEquals(TrainerResumeTest.losses(single), TrainerResumeTest.losses(resumed), "losses of the resumed run");
        CheckpointContents.assertSame(last, resumed.resolve("checkpoints").resolve(Checkpoint.directoryName(6)),
                "final weights, routing bias and moments identical");
    }
}
