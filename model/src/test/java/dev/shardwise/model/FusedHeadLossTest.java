package dev.shardwise.model;

import dev.shardwise.core.kernels.onednn.OneDnn;
import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.memory.StepArena;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;
import org.junit.jupiter.api.Test;

import java.util.SplittableRandom;
import java.util.function.Function;

import static org.junit.jupiter.api.Assertions.*;

/**
 * The fused head and loss ({@link FusedHeadLoss}) against the head that materialises the [B·T, V] logits: the same
 * loss and gradients to round-off, in float64, fp32 and bf16, over several chunks with a ragged last one; and the
 * fp32 step's memory peak lower by at least the logits' bytes less one chunk's (the chunk lives only during forward,
 * but with backward's temporaries held to one block's worth a step's peak can be forward's, chunk included).
 */
class FusedHeadLossTest {
    private static final ModelConfig CONFIG = ModelConfig.gpt(997, 128, 2, 48, 4);
    private static final int B = 5, T = 100;   // N = 500 rows: a 256-row chunk and a 244-row one

    private record Run(double loss, ParameterSet params, long peakActivations) { }

    private Run run(MemoryPool pool, DType dtype, boolean fused, Function<MemoryPool, MatmulPrecision> precision) {
        ParameterSet params = Gpt.declare(CONFIG).allocate(pool, dtype);
        params.initialize(7);
        params.usePrecision(precision.apply(pool));
        GptPart part = new GptPart(CONFIG, params, GptPart.Span.whole(CONFIG));
        part.fuseHead(fused);
        try (StepArena arena = new StepArena(pool); Tensor tokens = ids(pool, 1); Tensor targets = ids(pool, 2)) {
            targets.set(-1, 0, 5);   // an excluded position
            params.zeroGrads();
            pool.resetPeaks();
            GptPart.Pass pass = part.forward(arena, tokens, targets, null, true, 0.5);
            part.backward(arena, pass, null);
            return new Run(pass.loss(), params, pool.peakBytes(MemoryCategory.ACTIVATIONS));
        }
    }

    @Test
    void fusedHeadMatchesTheMaterialisedLogitsToRoundOff() {
        check(DType.F64, p -> MatmulPrecision.FP32, 1e-14);
        check(DType.F32, p -> MatmulPrecision.FP32, 1e-6);
        if (OneDnn.isAvailable()) check(DType.F32, Bf16Precision::new, 1e-6);   // bf16: the same rounded operands either way
    }

    private void check(DType dtype, Function<MemoryPool, MatmulPrecision> precision, double tolerance) {
        MemoryPool pool = MemoryPool.unlimited("rank 0");
        Run fused = run(pool, dtype, true, precision), whole = run(pool, dtype, false, precision);
        String name = dtype.label() + " " + fused.params.precision().label();
        assertEquals(whole.loss, fused.loss, tolerance * Math.abs(whole.loss), name + " loss");
        int compared = 0;
        for (Parameter p : whole.params.parameters()) {
            double[] want = p.grad().toDoubleArray(), got = fused.params.get(p.name()).grad().toDoubleArray();
            double diff = 0, norm = 0;
            for (int i = 0; i < want.length; i++) {
                diff = Math.max(diff, Math.abs(got[i] - want[i]));
                norm = Math.max(norm, Math.abs(want[i]));
            }
            assertTrue(diff <= tolerance * norm, name + " " + p.name() + ": max diff " + diff + " > " + tolerance + " x max " + norm);
            compared++;
        }
        assertEquals(whole.params.parameters().size(), compared);
        fused.params.precision().close();
        whole.params.precision().close();
        fused.params.close();
        whole.params.close();
    }

    @Test
    void fusedHeadLowersTheFp32StepPeakByAtLeastTheLogitsLessOneChunk() {
        long logits = 4L * B * T * CONFIG.vocabSize(), chunk = 4L * FusedHeadLoss.CHUNK_ROWS * CONFIG.vocabSize();
        Run whole = run(MemoryPool.unlimited("whole"), DType.F32, false, p -> MatmulPrecision.FP32);
        Run fused = run(MemoryPool.unlimited("fused"), DType.F32, true, p -> MatmulPrecision.FP32);
        System.out.printf("activation peak of a step, V=%d, B·T=%d: materialised logits %d bytes, fused %d (logits %d)%n",
                CONFIG.vocabSize(), B * T, whole.peakActivations, fused.peakActivations, logits);
        assertTrue(whole.peakActivations - fused.peakActivations >= logits - chunk, "the fused head's peak " + fused.peakActivations
                + " is not at least the logits' " + logits + " bytes less a chunk's " + chunk + " below the materialised head's "
                + whole.peakActivations);
        whole.params.close();
        fused.params.close();
    }

    private static Tensor ids(MemoryPool pool, long seed) {
        Tensor ids = Tensor.allocate(pool, MemoryCategory.BUFFERS, DType.I32, B, T);
        SplittableRandom r = new SplittableRandom(seed);
        for (int i = 0; i < B * T; i++) ids.set(r.nextInt(CONFIG.vocabSize()), i / T, i % T);
        return ids;
    }
}
