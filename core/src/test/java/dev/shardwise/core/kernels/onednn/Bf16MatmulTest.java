package dev.shardwise.core.kernels.onednn;

import dev.shardwise.core.exec.ComputePool;
import dev.shardwise.core.kernels.Bf16Convert;
import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * {@link Bf16Matmul} against float64 references, skipped (naming {@code apt-get install libdnnl2}) without oneDNN.
 *
 * <p>Two bounds per element of {@code C = alpha·op(A)·op(B) + beta·C0}, with {@code S = Σ_p |a_ip|·|b_pj|} over the
 * fp32 inputs a, b and unit roundoffs {@code u = 2^-8} (bf16: 8 significant bits, round to nearest) and
 * {@code e = 2^-24} (fp32):
 * <ul>
 *   <li>against the exact product of the <em>fp32</em> inputs: rounding each input to bf16 changes each product
 *       {@code a·b} by at most {@code (2u + u²)·|a·b|}, i.e. about {@code 2·2^-8 = 2^-7} relative; summing K fp32
 *       products adds at most {@code (K + 2)·e} relative (each bf16·bf16 product is exact in fp32, so only the
 *       K - 1 additions, the alpha scale and the beta sum round):
 *       {@code |err| <= |alpha|·S·(2u + u² + (K + 2)·e·(1 + 2u + u²)) + |beta·C0|·2e};</li>
 *   <li>against the exact product of the <em>bf16-rounded</em> inputs (S̃ over them): only fp32 accumulation
 *       remains, {@code |err| <= |alpha|·S̃·(K + 2)·e + |beta·C0|·2e}. This one fails if oneDNN accumulated or
 *       stored in bf16 (error near 2^-8 relative) or if A or B were read with the wrong layout.</li>
 * </ul>
 */
class Bf16MatmulTest {
    private static final double U_BF16 = 0x1p-8, U_F32 = 0x1p-24;

    private final MemoryPool memory = MemoryPool.unlimited("Bf16MatmulTest");
    private final List<Tensor> owners = new ArrayList<>();
    private Bf16Matmul matmul;

    @BeforeEach
    void requireOneDnn() {
        assumeTrue(OneDnn.isAvailable(), () -> "skipped: " + OneDnn.unavailableReason());
        matmul = new Bf16Matmul();
    }

    @AfterEach
    void release() {
        if (matmul != null) matmul.close();
        for (Tensor t : owners) t.close();
    }

    @Test
    void oddShapesMatchFloat64WithinBf16RoundingForEveryTranspose() {
        int[] sizes = {1, 3, 7, 33, 129};
        SplittableRandom rnd = new SplittableRandom(17);
        int ran = 0;
        for (int m : sizes) for (int n : sizes) for (int k : sizes) {
            for (int t = 0; t < 4; t++) {
                boolean transA = (t & 1) != 0, transB = (t & 2) != 0;
                check(m, n, k, transA, transB, 1f, 0f, 0, rnd);
                ran++;
            }
        }
        assertEquals(sizes.length * sizes.length * sizes.length * 4, ran, "cases run");
    }

    @Test
    void gpt2FcLayerProductsMatchFloat64() {
        // GPT-2 small's MLP fc layer 768 -> 3072 on 128 tokens, in the three products of training it.
        SplittableRandom rnd = new SplittableRandom(768);
        check(128, 3072, 768, false, true, 1f, 0f, 0, rnd);   // forward  out [128, 3072] = x [128, 768] · W [3072, 768]ᵀ
        check(128, 768, 3072, false, false, 1f, 1f, 0, rnd);  // backward dx  [128, 768] += dout [128, 3072] · W
        check(3072, 768, 128, true, false, 1f, 1f, 0, rnd);   // backward dW  [3072, 768] += dout [128, 3072]ᵀ · x
    }

    @Test
    void alphaAndBetaAccumulateIntoPaddedRows() {
        SplittableRandom rnd = new SplittableRandom(3);
        for (float beta : new float[]{1f, 0.5f, -2f}) {
            for (int t = 0; t < 4; t++) {
                check(33, 17, 65, (t & 1) != 0, (t & 2) != 0, -0.75f, beta, 5, rnd);
            }
        }
    }

    @Test
    void betaZeroIgnoresNaNInC() {
        Tensor a = bf16(2, 3, new SplittableRandom(1), 0), b = bf16(3, 4, new SplittableRandom(2), 0);
        Tensor c = f32(2, 4, 0).fill(Double.NaN);
        matmul.matmul(c, a, b, false, false, 1f, 0f);
        for (double v : c.toDoubleArray()) assertFalse(Double.isNaN(v), "beta = 0 must not read C");
    }

    @Test
    void primitivesAreCreatedOncePerShapeAndReused() {
        SplittableRandom rnd = new SplittableRandom(5);
        Tensor a = bf16(8, 16, rnd, 0), b = bf16(16, 24, rnd, 0), c = f32(8, 24, 0);
        for (int i = 0; i < 3; i++) matmul.matmul(c, a, b, false, false, 1f, 0f);
        assertEquals(1, matmul.cachedPrimitives(), "one primitive for one (shape, transposes, alpha, beta)");
        matmul.matmul(c, a, b, false, false, 1f, 1f);
        assertEquals(2, matmul.cachedPrimitives(), "beta is part of the key");
        assertFalse(matmul.implementations().isEmpty(), "implementation names");
    }

    @Test
    void leastRecentlyUsedPrimitivesAreDroppedAndRebuiltWhenNeeded() {
        matmul.close();
        matmul = new Bf16Matmul(2);
        SplittableRandom rnd = new SplittableRandom(6);
        for (int round = 0; round < 2; round++) {
            for (int k : new int[]{5, 9, 13}) check(6, 7, k, false, false, 1f, 0f, 0, rnd);
            assertEquals(2, matmul.cachedPrimitives(), "cache capped at 2 after round " + round);
        }
    }

    @Test
    void rejectsWrongDtypesAndShapesNamingTheArgument() {
        SplittableRandom rnd = new SplittableRandom(9);
        Tensor a = bf16(4, 5, rnd, 0), b = bf16(5, 6, rnd, 0), c = f32(4, 6, 0);
        Tensor aF32 = f32(4, 5, 0);
        var dtype = assertThrows(IllegalArgumentException.class, () -> matmul.matmul(c, aF32, b, false, false, 1f, 0f));
        assertTrue(dtype.getMessage().contains("a and b bf16"), dtype.getMessage());
        var inner = assertThrows(IllegalArgumentException.class, () -> matmul.matmul(c, a, b, false, true, 1f, 0f));
        assertTrue(inner.getMessage().contains("op(b)"), inner.getMessage());
    }

    @Test
    void threadCountFollowsTheCallersPoolAndStaysOnTheCallingThread() throws Exception {
        OneDnn lib = OneDnn.instance();
        assumeTrue(lib.controlsThreads(), () -> "skipped: this oneDNN build's threads are not set per call: " + OneDnn.description());
        int before = lib.threadsForCaller();
        int[] seen = new int[1];
        Thread other = new Thread(() -> {
            try (ComputePool one = new ComputePool("one thread", 1); Bf16Matmul mine = new Bf16Matmul()) {
                ComputePool.runWith(one, () -> {
                    SplittableRandom rnd = new SplittableRandom(4);
                    mine.matmul(f32(4, 4, 0), bf16(4, 4, rnd, 0), bf16(4, 4, rnd, 0), false, false, 1f, 0f);
                    seen[0] = lib.threadsForCaller();
                });
            }
        });
        other.start();
        other.join();
        assertEquals(1, seen[0], "OpenMP threads on the thread whose pool has 1 thread");
        assertEquals(before, lib.threadsForCaller(), "OpenMP threads of another thread must not change");
    }

    @Test
    void failedStatusNamesTheCallAndTheStatus() {
        var e = assertThrows(IllegalStateException.class, () -> OneDnn.check(3, "dnnl_primitive_desc_create(matmul)"));
        assertTrue(e.getMessage().contains("dnnl_primitive_desc_create(matmul)") && e.getMessage().contains("dnnl_unimplemented"),
                e.getMessage());
    }

    // ---- one case ----

    /**
     * Runs one product on random operands (stored layouts as the transposes say, rows padded by {@code pad}) and
     * checks both bounds of the class comment.
     */
    private void check(int m, int n, int k, boolean transA, boolean transB, float alpha, float beta, int pad,
                       SplittableRandom rnd) {
        int ar = transA ? k : m, ac = transA ? m : k, br = transB ? n : k, bc = transB ? k : n;
        Operand opA = operand(ar, ac, rnd, pad), opB = operand(br, bc, rnd, pad);
        Tensor a = opA.view(), b = opB.view();
        double[] a32 = opA.fp32(), b32 = opB.fp32(), aBf = stored(a), bBf = stored(b);
        Tensor c = f32(m, n, pad);
        double[] c0 = new double[m * n];
        for (int i = 0; i < m; i++) for (int j = 0; j < n; j++) {
            float v = (float) (rnd.nextDouble() * 2 - 1);
            c0[i * n + j] = v;
            c.set(v, i, j);
        }
        matmul.matmul(c, a, b, transA, transB, alpha, beta);

        String name = String.format(Locale.ROOT, "M=%d N=%d K=%d transA=%b transB=%b alpha=%s beta=%s pad=%d",
                m, n, k, transA, transB, alpha, beta, pad);
        double worstFp32 = 0, worstBf16 = 0;
        for (int i = 0; i < m; i++) for (int j = 0; j < n; j++) {
            double exact32 = 0, abs32 = 0, exactBf = 0, absBf = 0;
            for (int p = 0; p < k; p++) {
                int ai = transA ? p * ac + i : i * ac + p, bi = transB ? j * bc + p : p * bc + j;
                exact32 += a32[ai] * b32[bi];
                abs32 += Math.abs(a32[ai] * b32[bi]);
                exactBf += aBf[ai] * bBf[bi];
                absBf += Math.abs(aBf[ai] * bBf[bi]);
            }
            double got = c.getDouble(i, j), old = beta * c0[i * n + j];
            double accumulate = (k + 2) * U_F32;
            double boundFp32 = Math.abs(alpha) * abs32 * (2 * U_BF16 + U_BF16 * U_BF16 + accumulate * (1 + 2 * U_BF16 + U_BF16 * U_BF16))
                    + Math.abs(old) * 2 * U_F32 + Double.MIN_NORMAL;
            double boundBf16 = Math.abs(alpha) * absBf * accumulate + Math.abs(old) * 2 * U_F32 + Double.MIN_NORMAL;
            double errFp32 = Math.abs(got - (alpha * exact32 + old)), errBf16 = Math.abs(got - (alpha * exactBf + old));
            worstFp32 = Math.max(worstFp32, errFp32 / boundFp32);
            worstBf16 = Math.max(worstBf16, errBf16 / boundBf16);
            if (!(errFp32 <= boundFp32) || !(errBf16 <= boundBf16)) {
                fail(String.format(Locale.ROOT, "%s: C[%d, %d] = %s; vs fp32 inputs |err| %.3e > bound %.3e or vs bf16 "
                        + "inputs |err| %.3e > bound %.3e", name, i, j, got, errFp32, boundFp32, errBf16, boundBf16));
            }
        }
        if (pad > 0) {
            Tensor whole = owners.get(owners.size() - 1);
            for (int i = 0; i < m; i++) for (int j = n; j < n + pad; j++) {
                assertEquals(777.0, whole.getDouble(i, j), name + ": padding of C at [" + i + ", " + j + "] was written");
            }
        }
        assertTrue(worstFp32 <= 1 && worstBf16 <= 1, name);
    }

    // ---- operands ----

    /** A bf16 operand and the fp32 values it was rounded from (row-major, without padding). */
    private record Operand(Tensor view, double[] fp32) { }

    private Tensor bf16(int rows, int cols, SplittableRandom rnd, int pad) {
        return operand(rows, cols, rnd, pad).view();
    }

    /**
     * A [rows, cols] bf16 view (rows {@code cols + pad} apart) of uniform values in [-1, 1) rounded from fp32 by
     * {@link Bf16Convert}, with the fp32 values.
     */
    private Operand operand(int rows, int cols, SplittableRandom rnd, int pad) {
        float[] v = new float[rows * (cols + pad)];
        double[] kept = new double[rows * cols];
        for (int r = 0; r < rows; r++) for (int c = 0; c < cols + pad; c++) {
            float x = c < cols ? (float) (rnd.nextDouble() * 2 - 1) : 777f;
            v[r * (cols + pad) + c] = x;
            if (c < cols) kept[r * cols + c] = x;
        }
        Tensor f = Tensor.allocate(memory, MemoryCategory.ACTIVATIONS, DType.F32, rows, cols + pad).copyFrom(v);
        Tensor h = Tensor.allocate(memory, MemoryCategory.ACTIVATIONS, DType.BF16, rows, cols + pad);
        owners.add(f);
        owners.add(h);
        Bf16Convert.fromFloat(h, f);
        return new Operand(pad == 0 ? h : h.slice(1, 0, cols), kept);
    }

    /** The stored values of a 2-D view, row-major. */
    private static double[] stored(Tensor t) {
        int rows = t.dim(0), cols = t.dim(1);
        double[] v = new double[rows * cols];
        for (int r = 0; r < rows; r++) for (int c = 0; c < cols; c++) v[r * cols + c] = t.getDouble(r, c);
        return v;
    }

    /** A [rows, cols] f32 view (rows {@code cols + pad} apart, padding 777). */
    private Tensor f32(int rows, int cols, int pad) {
        Tensor t = Tensor.allocate(memory, MemoryCategory.ACTIVATIONS, DType.F32, rows, cols + pad).fill(777.0);
        owners.add(t);
        return pad == 0 ? t : t.slice(1, 0, cols);
    }
}
