package dev.shardwise.model;

import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.memory.StepArena;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

import java.util.Arrays;
import java.util.stream.Stream;

import static org.junit.jupiter.api.Assertions.*;

/** {@link ActivationMemory}'s formula against the bytes a block's forward really leaves charged to the pool. */
class ActivationMemoryTest {
    private static final int B = 2, T = 24;

    static Stream<ModelConfig> blocks() {
        ModelConfig gpt = ModelConfig.gpt(50, 32, 2, 64, 4);
        return Stream.concat(Arrays.stream(ModelConfig.Residual.values()).map(gpt::withResidual),
                Stream.of(ModelConfig.llama(50, 32, 2, 64, 8, 2, 176)));
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("blocks")
    void formulaMatchesTheLiveBytesAfterOneBlockForwardUnderEveryPolicy(ModelConfig config) {
        MemoryPool pool = MemoryPool.unlimited("rank 0");
        DType dtype = DType.F32;
        ParameterSet.Builder builder = ParameterSet.builder();
        TransformerBlock.declare(builder, "h", config);
        long[] measured = new long[Recompute.values().length];
        try (ParameterSet params = builder.allocate(pool, dtype);
             Tensor x = Tensor.allocate(pool, MemoryCategory.BUFFERS, dtype, B * T, config.hidden());
             Tensor dy = Tensor.allocate(pool, MemoryCategory.BUFFERS, dtype, B * T, config.hidden());
             Tensor dx = Tensor.allocate(pool, MemoryCategory.BUFFERS, dtype, B * T, config.hidden())) {
            params.initialize(5);
            for (Recompute policy : Recompute.values()) {
                TransformerBlock block = new TransformerBlock(params, "h", config, policy);
                assertEquals(0, pool.liveBytes(MemoryCategory.ACTIVATIONS), "no activations before forward");
                try (StepArena arena = new StepArena(pool)) {
                    TransformerBlock.Saved saved = block.forward(arena, x, Layer.Rows.of(B, T));
                    long live = pool.liveBytes(MemoryCategory.ACTIVATIONS);
                    measured[policy.ordinal()] = live;
                    long formula = ActivationMemory.blockBytes(config, B, T, policy, dtype);
                    System.out.printf("activation bytes %s %s %s/%s B=%d T=%d C=%d: measured %d, formula %d%n", policy,
                            config.residual(), config.norm(), config.mlp(), B, T, config.hidden(), live, formula);
                    assertEquals(formula, live, policy + " " + config.residual() + " " + config.mlp()
                            + ": ActivationMemory.blockBytes vs the pool's live activation bytes after forward");
                    block.backward(arena, dx, dy, x, Layer.Rows.of(B, T), saved);
                    if (policy == Recompute.FULL) {
                        assertEquals(live, pool.liveBytes(MemoryCategory.ACTIVATIONS),
                                "FULL: backward's recompute and temporaries live in a scratch arena closed before it returns");
                    }
                }
            }
        }
        assertTrue(measured[Recompute.FULL.ordinal()] < measured[Recompute.SELECTIVE.ordinal()]
                && measured[Recompute.SELECTIVE.ordinal()] < measured[Recompute.NONE.ordinal()],
                "FULL < SELECTIVE < NONE: " + Arrays.toString(measured));
        assertEquals(0, pool.liveBytes(), "everything freed");
    }
}
