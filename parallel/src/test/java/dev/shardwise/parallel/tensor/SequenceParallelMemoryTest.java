package dev.shardwise.parallel.tensor;

import dev.shardwise.comm.LocalCluster;
import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.memory.StepArena;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;
import dev.shardwise.model.ActivationMemory;
import dev.shardwise.model.Gpt;
import dev.shardwise.model.GptPart;
import dev.shardwise.model.ModelConfig;
import dev.shardwise.model.MoeConfig;
import dev.shardwise.model.ParameterSet;
import dev.shardwise.model.Recompute;
import dev.shardwise.model.TensorParallel;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.*;

/**
 * Sequence parallelism's memory saving (Korthikanti et al. 2022), measured: one block's forward on each rank of a tp
 * group leaves exactly {@link ActivationMemory#blockBytes}'s bytes charged to the rank's pool as activations, with and
 * without sequence parallelism, and the bytes of the sequence region (measured total less the tensor-parallel
 * region, which both layouts share) under sequence parallelism are 1/tp of those without it.
 */
class SequenceParallelMemoryTest {
    static final int B = 2, T = 16;
    static final Map<String, ModelConfig> MODELS = Map.of(
            "gpt", ModelConfig.gpt(64, 32, 1, 32, 4),
            "llama gqa", ModelConfig.llama(64, 32, 1, 32, 4, 2, 96),
            // one MoE block: GELU experts with biases; SwiGLU experts with a shared expert and the noisy gate
            "gpt moe", ModelConfig.gpt(64, 32, 1, 32, 4).withMoe(MoeConfig.of(4, 2, 1, 48)),
            "llama moe shared noisy", ModelConfig.llama(64, 32, 1, 32, 4, 2, 96)
                    .withMoe(MoeConfig.of(4, 2, 1, 48).withSharedExperts(1).withGate(MoeConfig.Gate.NOISY)));

    /** The pool's live activation bytes after one block's forward on this rank (a backward then runs too). */
    static long measure(ModelConfig config, TensorParallel tp, MemoryPool pool, Recompute policy) {
        GptPart.Span block = new GptPart.Span(false, 0, 1, false);   // block 0: an MoE block of an MoE model
        try (ParameterSet params = Gpt.declare(config, List.of(block), false, tp).allocate(pool, DType.F32)) {
            params.initialize(3);
            GptPart part = new GptPart(config, params, block, policy, 1, tp);
            int rows = part.activationRows(B, T);
            try (Tensor tokens = Tensor.allocate(pool, MemoryCategory.BUFFERS, DType.I32, B, T);
                 Tensor x = Tensor.allocate(pool, MemoryCategory.BUFFERS, DType.F32, rows, config.hidden());
                 Tensor dy = Tensor.allocate(pool, MemoryCategory.BUFFERS, DType.F32, rows, config.hidden());
                 StepArena arena = new StepArena(pool)) {
                for (int i = 0; i < rows; i++) for (int c = 0; c < config.hidden(); c++) x.set(Math.sin(i + 0.1 * c), i, c);
                assertEquals(0, pool.liveBytes(MemoryCategory.ACTIVATIONS), "no activations before forward");
                GptPart.Pass pass = part.forward(arena, tokens, null, x, true, 1);
                long live = pool.liveBytes(MemoryCategory.ACTIVATIONS);
                part.backward(arena, pass, dy);
                return live;
            }
        }
    }

    @ParameterizedTest(name = "{0}, tp {1}, recompute {2}")
    @CsvSource({"gpt, 2, none", "gpt, 4, none", "gpt, 2, selective", "gpt, 2, full", "llama gqa, 2, none", "llama gqa, 4, selective"})
    void sequenceRegionActivationsDropByTp(String model, int tp, String recomputeName) {
        ModelConfig config = MODELS.get(model);
        Recompute policy = Recompute.parse(recomputeName);
        long[][] measured = new long[2][];
        for (int sp = 0; sp < 2; sp++) {
            boolean sequence = sp == 1;
            List<Long> ranks = LocalCluster.run(tp, ctx -> measure(config, new CommunicatorTensorParallel(ctx.world(), sequence),
                    ctx.memory(), policy));
            measured[sp] = ranks.stream().mapToLong(Long::longValue).toArray();
            long formula = ActivationMemory.blockBytes(config, B, T, policy, DType.F32, tp, sequence);
            for (int r = 0; r < tp; r++) {
                assertEquals(formula, measured[sp][r], model + " tp " + tp + " " + policy + (sequence ? " sequence-parallel" : "")
                        + " rank " + r + ": ActivationMemory.blockBytes vs the pool's live activation bytes after forward");
            }
        }
        long tensorRegion = ActivationMemory.tensorRegionBytes(config, B, T, policy, DType.F32, tp);
        double without = measured[0][0] - tensorRegion, with = measured[1][0] - tensorRegion;
        double ratio = with / without;
        System.out.printf("%s tp %d %s: block activations %d bytes without sequence parallelism, %d with; sequence region "
                + "%.0f -> %.0f bytes (ratio %.4f, 1/tp = %.4f)%n", model, tp, policy, measured[0][0], measured[1][0], without,
                with, ratio, 1.0 / tp);
        assertTrue(without > 0, "the sequence region holds something");
        assertEquals(1.0 / tp, ratio, 0.1 / tp, model + " tp " + tp + " " + policy + ": sequence region bytes with / without "
                + "sequence parallelism");
    }

    /**
     * A dropless mixture-of-experts block (the router and the experts over the gathered sequence under sequence
     * parallelism) leaves exactly {@link ActivationMemory#moeBlockBytes}'s bytes, with and without sequence
     * parallelism: the sequence region drops by tp, while the router's logits, the dispatched tokens, the experts'
     * outputs and each rank's slice of their hidden features stay as under tensor parallelism alone.
     */
    @ParameterizedTest(name = "{0}, tp {1}, recompute {2}")
    @CsvSource({"gpt moe, 2, none", "gpt moe, 4, selective", "gpt moe, 2, full", "llama moe shared noisy, 2, none",
            "llama moe shared noisy, 4, none"})
    void moeBlockActivationsAreCountedWithAndWithoutSequenceParallelism(String model, int tp, String recomputeName) {
        ModelConfig config = MODELS.get(model);
        Recompute policy = Recompute.parse(recomputeName);
        long[] measured = new long[2];
        for (int sp = 0; sp < 2; sp++) {
            boolean sequence = sp == 1;
            List<Long> ranks = LocalCluster.run(tp, ctx -> measure(config, new CommunicatorTensorParallel(ctx.world(), sequence),
                    ctx.memory(), policy));
            long formula = ActivationMemory.moeBlockBytes(config, B, T, policy, DType.F32, tp, sequence);
            for (int r = 0; r < tp; r++) {
                assertEquals(formula, ranks.get(r), model + " tp " + tp + " " + policy + (sequence ? " sequence-parallel" : "")
                        + " rank " + r + ": ActivationMemory.moeBlockBytes vs the pool's live activation bytes after forward");
            }
            measured[sp] = ranks.getFirst();
        }
        long saved = ActivationMemory.sequenceRegionBytes(config, B, T, policy, DType.F32, tp, false)
                - ActivationMemory.sequenceRegionBytes(config, B, T, policy, DType.F32, tp, true);
        System.out.printf("%s tp %d %s: MoE block activations %d bytes without sequence parallelism, %d with%n", model, tp, policy,
                measured[0], measured[1]);
        assertTrue(saved > 0, "sequence parallelism splits the sequence region");
        assertEquals(saved, measured[0] - measured[1], model + " tp " + tp + " " + policy + ": sequence parallelism saves the sequence region's (tp-1)/tp");
    }
}
