package dev.shardwise.model;

import dev.shardwise.core.kernels.onednn.OneDnn;
import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.memory.StepArena;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

import java.util.List;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.*;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * bf16 mixed precision (Megatron's recipe) against float64: a linear layer's output and gradients within the
 * bound bf16 operand rounding gives, whole models' losses and gradients within a stated multiple of bf16's
 * rounding unit, and what the bf16 model keeps for backward.
 */
class Bf16PrecisionTest {
    /** bf16's unit roundoff: 8 significand bits, round to nearest, relative error at most 2^-9 per rounding. */
    private static final double U_BF16 = 0x1p-9;
    private static final double U_F32 = 0x1p-24;
    private final MemoryPool pool = MemoryPool.unlimited("rank 0");

    @BeforeEach
    void needsOneDnn() {
        assumeTrue(OneDnn.isAvailable(), () -> "skipped: " + OneDnn.unavailableReason());
    }

    /**
     * For y = x·Wᵀ + b with x and W each rounded to bf16 (relative error <= u each), products exact in fp32 and
     * sums of K terms in fp32: |y - y64| <= (2u + u² + K·u32)·(|x|·|W|ᵀ) + u32·|y|, elementwise. The same bound with
     * dy in place of x holds for dx = dy·W and dW = dyᵀ·x (dy rounded too).
     */
    @Test
    void linearOutputAndGradientsMatchFloat64WithinBf16RoundingOnOddShapes() {
        int[][] shapes = {{7, 33, 13}, {1, 5, 3}, {129, 17, 65}};   // N, IN, OUT
        int checked = 0;
        for (int[] s : shapes) {
            int n = s[0], in = s[1], out = s[2];
            String name = "linear N=" + n + " IN=" + in + " OUT=" + out;
            try (ParameterSet p32 = linear(in, out).allocate(pool, DType.F32); ParameterSet p64 = linear(in, out).allocate(pool, DType.F64);
                 Bf16Precision bf16 = new Bf16Precision(pool); StepArena arena = new StepArena(pool)) {
                p32.initialize(3);
                p64.values().copyFrom(p32.values().toDoubleArray());   // the same (f32) weights
                p32.usePrecision(bf16);
                Linear l32 = new Linear(p32, "l", true), l64 = new Linear(p64, "l", true);
                double[] xs = random(n * in, 11), dys = random(n * out, 12);
                Tensor x32 = arena.allocate(DType.F32, n, in).copyFrom(xs), x64 = arena.allocate(DType.F64, n, in).copyFrom(x32.toDoubleArray());
                Tensor dy32 = arena.allocate(DType.F32, n, out).copyFrom(dys), dy64 = arena.allocate(DType.F64, n, out).copyFrom(dy32.toDoubleArray());
                Tensor y32 = l32.forward(arena, x32), y64 = l64.forward(arena, x64);
                Tensor dx32 = arena.allocate(DType.F32, n, in), dx64 = arena.allocate(DType.F64, n, in);
                p32.zeroGrads();
                p64.zeroGrads();
                l32.backward(dx32, dy32, x32);
                l64.backward(dx64, dy64, x64);
                double[] w = p64.get("l.weight").value().toDoubleArray();
                // |x|·|W|ᵀ [N, OUT], |dy|·|W| [N, IN], |dy|ᵀ·|x| [OUT, IN]
                double[] xw = absProduct(x64.toDoubleArray(), w, n, in, out, false);
                double[] dyw = absProduct(dy64.toDoubleArray(), w, n, out, in, true);
                double[] dyx = absProductTn(dy64.toDoubleArray(), x64.toDoubleArray(), n, out, in);
                within(name + " y", y32.toDoubleArray(), y64.toDoubleArray(), xw, in);
                within(name + " dx", dx32.toDoubleArray(), dx64.toDoubleArray(), dyw, out);
                within(name + " dW", p32.get("l.weight").grad().toDoubleArray(), p64.get("l.weight").grad().toDoubleArray(), dyx, n);
                checked++;
            }
        }
        assertEquals(shapes.length, checked);
    }

    /**
     * Whole models under bf16 against float64 from the same (f32) weights: the loss within 2^-6 relative and every
     * parameter's gradient within 2^-4 relative (in the 2-norm). Every product rounds its operands (relative 2^-9
     * each) and the errors of a few products per layer add up through the layers and the softmax; 2^-4 is 32
     * roundings' worth, so it passes for bf16 and fails for anything that is not a rounding of the right product
     * (a wrong transpose, a stale weight copy, a bf16 gradient).
     */
    @Test
    void gptAndLlamaLossAndGradientsMatchFloat64WithinBf16Tolerance() {
        List<ModelConfig> configs = List.of(ModelConfig.gpt(37, 16, 2, 24, 3),
                ModelConfig.llama(41, 16, 2, 24, 4, 2, 40),
                ModelConfig.llama(67, 16, 2, 32, 4, 2, 88),   // llama-tiny's proportions: HS 8, GQA 2:1, F = 2.75·C
                ModelConfig.gpt(37, 16, 2, 24, 3).withResidual(ModelConfig.Residual.POST_LN));
        for (ModelConfig config : configs) {
            for (Recompute recompute : Recompute.values()) check(config, recompute);
        }
    }

    private void check(ModelConfig config, Recompute recompute) {
        String name = config + " recompute " + recompute;
        int b = 3, t = 7;
        try (ParameterSet p32 = Gpt.declare(config).allocate(pool, DType.F32); ParameterSet p64 = Gpt.declare(config).allocate(pool, DType.F64);
             Bf16Precision bf16 = new Bf16Precision(pool); StepArena arena = new StepArena(pool);
             Tensor tokens = ids(b, t, 1, config.vocabSize()); Tensor targets = ids(b, t, 2, config.vocabSize())) {
            p32.initialize(5);
            p64.values().copyFrom(p32.values().toDoubleArray());
            p32.usePrecision(bf16);
            GptPart m32 = new GptPart(config, p32, GptPart.Span.whole(config), recompute, 1);
            GptPart m64 = new GptPart(config, p64, GptPart.Span.whole(config), recompute, 1);
            p32.zeroGrads();
            p64.zeroGrads();
            GptPart.Pass pass32 = m32.forward(arena, tokens, targets, null, true, 1.0);
            GptPart.Pass pass64 = m64.forward(arena, tokens, targets, null, true, 1.0);
            m32.backward(arena, pass32, null);
            m64.backward(arena, pass64, null);
            assertEquals(pass64.loss(), pass32.loss(), 0x1p-6 * Math.abs(pass64.loss()), name + " loss");
            for (Parameter p : p64.parameters()) {
                double[] want = p.grad().toDoubleArray(), got = p32.get(p.name()).grad().toDoubleArray();
                double diff = 0, norm = 0;
                for (int i = 0; i < want.length; i++) {
                    diff += (got[i] - want[i]) * (got[i] - want[i]);
                    norm += want[i] * want[i];
                }
                double rel = Math.sqrt(diff / Math.max(norm, 1e-300));
                assertTrue(rel <= 0x1p-4, name + " " + p.name() + ": relative gradient error " + rel + " > 2^-4");
            }
            // the bf16 copies were made once for the pass: one per weight matrix, however many products read it
            assertTrue(bf16.cachedWeights() > 0, name + ": no weight was copied to bf16");
        }
    }

    /**
     * What a block's forward leaves in the arena for backward (Korthikanti et al.'s activation memory, measured on the
     * pool), GPT-2's and LLaMA's: under bf16 at most 0.6x the fp32 bytes. bf16 keeps the matmul inputs (N1, N2
     * outputs, att, GELU; SwiGLU's silu(gate)∘up), qkv (its q and k rotated under RoPE), the GELU's pre-activation or
     * SwiGLU's gate and up and the mid-block residual x1 (N2's input) at 2 bytes and the branch outputs nowhere (they
     * are read at once); the block's output y (the next block's N1 input) and the norms' and softmax's statistics stay
     * fp32.
     */
    @Test
    void bf16BlockKeepsAtMostSixTenthsOfTheFp32ActivationBytes() {
        for (ModelConfig config : List.of(ModelConfig.gpt(101, 32, 1, 64, 4), ModelConfig.llama(101, 32, 1, 64, 4, 2, 176))) {
            String name = config.mlp() == ModelConfig.Mlp.GELU ? "GPT-2" : "LLaMA";
            long fp32 = blockActivationBytes(config, MatmulPrecision.FP32);
            long bf16;
            try (Bf16Precision precision = new Bf16Precision(pool)) {
                bf16 = blockActivationBytes(config, precision);
            }
            double ratio = (double) bf16 / fp32;
            System.out.printf("activation bytes per %s block, B=2 T=32 C=64: fp32 %d, bf16 %d (%.3fx)%n", name, fp32, bf16, ratio);
            assertEquals(ActivationMemory.blockBytes(config, 2, 32, Recompute.NONE, DType.F32), fp32, name + ": fp32 as ActivationMemory counts");
            assertTrue(ratio <= 0.6, name + ": bf16 block activations " + bf16 + " bytes are " + ratio + "x fp32's " + fp32 + " (bar: 0.6x)");
        }
    }

    /**
     * A whole step's activation peak (the pool's ACTIVATIONS; Korthikanti et al.'s activation memory plus backward's
     * temporaries and the fused head's logits chunk) under bf16 at most 0.6x fp32's, for GPT-2 and LLaMA-style models
     * of four blocks whose T, C, F, V keep the proportions of the presets (the head's [256, V] chunk is 8 of the
     * [B·T, C] tensors, between tiny's 4 and gpt2-124m's 16). The forward saving holds only if backward's fp32
     * gradient temporaries do not pile up block after block, so in both precisions the peak is also at most one
     * block's fp32 activations above what forward leaves: each block's backward runs in an arena scope.
     */
    @Test
    void bf16StepActivationPeakIsAtMostSixTenthsOfFp32s() {
        int b = 4, t = 128;
        List<ModelConfig> configs = List.of(ModelConfig.gpt(2048, t, 4, 128, 4), ModelConfig.llama(2048, t, 4, 128, 4, 2, 344));
        for (ModelConfig config : configs) {
            String name = config.mlp() == ModelConfig.Mlp.GELU ? "GPT-2" : "LLaMA";
            StepPeak fp32 = stepActivationPeak(config, b, t, MatmulPrecision.FP32), bf16;
            try (Bf16Precision precision = new Bf16Precision(pool)) {
                bf16 = stepActivationPeak(config, b, t, precision);
            }
            long perBlock = ActivationMemory.blockBytes(config, b, t, Recompute.NONE, DType.F32);
            double ratio = (double) bf16.peak / fp32.peak;
            System.out.printf("activation peak of a step, %s 4 blocks B=%d T=%d C=%d V=%d: fp32 %d, bf16 %d (%.3fx); "
                    + "after forward fp32 %d, bf16 %d%n", name, b, t, config.hidden(), config.vocabSize(), fp32.peak, bf16.peak,
                    ratio, fp32.afterForward, bf16.afterForward);
            for (StepPeak p : List.of(fp32, bf16)) {
                assertTrue(p.peak - p.afterForward <= perBlock, name + ": backward adds " + (p.peak - p.afterForward)
                        + " bytes to forward's " + p.afterForward + ", more than one block's fp32 activations (" + perBlock + ")");
            }
            assertTrue(ratio <= 0.6, name + ": bf16 step peak " + bf16.peak + " is " + ratio + "x fp32's " + fp32.peak + " (bar: 0.6x)");
        }
    }

    /** A step's activation peak and what forward left for backward, in bytes. */
    private record StepPeak(long afterForward, long peak) { }

    private StepPeak stepActivationPeak(ModelConfig config, int b, int t, MatmulPrecision precision) {
        MemoryPool own = MemoryPool.unlimited("step");
        try (ParameterSet params = Gpt.declare(config).allocate(own, DType.F32); StepArena arena = new StepArena(own);
             Tensor tokens = ids(b, t, 1, config.vocabSize()); Tensor targets = ids(b, t, 2, config.vocabSize())) {
            params.initialize(1);
            params.usePrecision(precision);
            GptPart part = new GptPart(config, params, GptPart.Span.whole(config));
            params.zeroGrads();
            GptPart.Pass pass = part.forward(arena, tokens, targets, null, true, 1.0);
            long afterForward = own.liveBytes(MemoryCategory.ACTIVATIONS);
            part.backward(arena, pass, null);
            return new StepPeak(afterForward, own.peakBytes(MemoryCategory.ACTIVATIONS));
        }
    }

    private long blockActivationBytes(ModelConfig config, MatmulPrecision precision) {
        int b = 2, t = 32, c = config.hidden();
        try (ParameterSet params = Gpt.declare(config).allocate(pool, DType.F32); StepArena arena = new StepArena(pool);
             Tensor x = Tensor.allocate(pool, MemoryCategory.BUFFERS, DType.F32, b * t, c)) {
            params.initialize(1);
            params.usePrecision(precision);
            x.copyFrom(random(b * t * c, 3));
            TransformerBlock block = new TransformerBlock(params, "h.0", config, Recompute.NONE);
            long before = pool.liveBytes(MemoryCategory.ACTIVATIONS);
            block.forward(arena, x, b, t);
            return pool.liveBytes(MemoryCategory.ACTIVATIONS) - before;
        }
    }

    @Test
    void weightCopiesAreMadeOncePerStepAndFreedWithTheirUnitsValues() {
        try (ParameterSet params = linear(9, 5).allocate(pool, DType.F32); Bf16Precision bf16 = new Bf16Precision(pool)) {
            params.initialize(1);
            params.usePrecision(bf16);
            Parameter w = params.get("l.weight");
            Tensor first = bf16.operand(w);
            assertSame(first, bf16.operand(w), "one copy per step, however many products read it");
            w.value().fill(0.5);
            assertNotEquals(0.5, first.toDoubleArray()[0], "the copy is of the step's weights until told otherwise");
            bf16.weightsChanged();
            assertEquals(0.5, bf16.operand(w).toDoubleArray()[0], "remade after the update");
            Tensor master = w.value();
            w.bindValue(null);                       // ZeRO 3 released the unit
            params.get("l.bias").bindValue(null);
            try (Tensor other = Tensor.allocate(pool, MemoryCategory.PARAMETERS, DType.F32, 5, 9)) {
                w.bindValue(other.fill(0.25));       // gathered again into new storage: a new copy, the old one freed
                assertEquals(0.25, bf16.operand(w).toDoubleArray()[0]);
                assertEquals(1, bf16.cachedWeights());
                w.bindValue(null);
                ParameterSet.Builder b = ParameterSet.builder();
                Linear.declare(b, "m", 3, 2, false, 0.1);
                try (ParameterSet more = b.allocate(pool, DType.F32)) {
                    bf16.operand(more.get("m.weight"));
                    assertEquals(1, bf16.cachedWeights(), "the released weight's copy was freed when the next was made");
                }
            }
            w.bindValue(master);
        }
    }

    private static ParameterSet.Builder linear(int in, int out) {
        ParameterSet.Builder builder = ParameterSet.builder();
        Linear.declare(builder, "l", in, out, true, 0.3);
        return builder;
    }

    private static void within(String what, double[] got, double[] want, double[] absProduct, int k) {
        double factor = 2 * U_BF16 + U_BF16 * U_BF16 + k * U_F32;
        double worst = 0;
        for (int i = 0; i < got.length; i++) {
            double bound = factor * absProduct[i] + U_F32 * Math.abs(want[i]) + 1e-30;
            worst = Math.max(worst, Math.abs(got[i] - want[i]) / bound);
        }
        assertTrue(worst <= 1, what + ": error reaches " + worst + "x the bf16 rounding bound");
        assertTrue(worst > 0, what + ": bit-identical to float64; the bf16 path did not run");
    }

    /** |a|·|b|ᵀ with a [rows, k], b [cols, k] (or |a|·|b| with b [k, cols] when {@code bNotTransposed}). */
    private static double[] absProduct(double[] a, double[] b, int rows, int k, int cols, boolean bNotTransposed) {
        double[] c = new double[rows * cols];
        for (int i = 0; i < rows; i++) {
            for (int j = 0; j < cols; j++) {
                double s = 0;
                for (int q = 0; q < k; q++) s += Math.abs(a[i * k + q]) * Math.abs(bNotTransposed ? b[q * cols + j] : b[j * k + q]);
                c[i * cols + j] = s;
            }
        }
        return c;
    }

    /** |a|ᵀ·|b| with a [n, rows], b [n, cols]. */
    private static double[] absProductTn(double[] a, double[] b, int n, int rows, int cols) {
        double[] c = new double[rows * cols];
        for (int i = 0; i < rows; i++) {
            for (int j = 0; j < cols; j++) {
                double s = 0;
                for (int q = 0; q < n; q++) s += Math.abs(a[q * rows + i]) * Math.abs(b[q * cols + j]);
                c[i * cols + j] = s;
            }
        }
        return c;
    }

    private static double[] random(int n, long seed) {
        SplittableRandom r = new SplittableRandom(seed);
        double[] v = new double[n];
        for (int i = 0; i < n; i++) v[i] = r.nextDouble(-1, 1);
        return v;
    }

    private Tensor ids(int b, int t, long seed, int vocab) {
        Tensor ids = Tensor.allocate(pool, MemoryCategory.BUFFERS, DType.I32, b, t);
        SplittableRandom r = new SplittableRandom(seed);
        for (int i = 0; i < b * t; i++) ids.set(r.nextInt(vocab), i / t, i % t);
        return ids;
    }
}
