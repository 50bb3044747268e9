package dev.shardwise.core.kernels;

import dev.shardwise.core.exec.ComputePool;
import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.*;

/**
 * {@link Gemm} against a float64 reference computed here, for every transpose combination, odd shapes,
 * alpha/beta variants, padded (strided) views, batches, and each implementation.
 *
 * <p>Tolerance for fp32 results, per element: a K-term fp32 sum in any order (with or without fma) is within
 * {@code γ_K·Σ|terms| ≈ K·2^-24·Σ|a·b|} of the exact sum (Higham, Accuracy and Stability, §3.1), plus one
 * rounding each for alpha, beta·C and the final add; we allow twice that bound, computed from the same inputs
 * in float64. F64 results get the same bound with 2^-53.
 */
class GemmTest {
    private static final int[] ODD = {1, 3, 7, 33, 129};
    private static final boolean[][] TRANSPOSES = {{false, false}, {false, true}, {true, false}, {true, true}};

    private final MemoryPool memory = MemoryPool.unlimited("rank 0");

    /** The fp32 implementations that can run here; the OpenBLAS ones only when it loaded. */
    private static List<GemmImpl> f32Impls() {
        List<GemmImpl> impls = new ArrayList<>(List.of(GemmImpl.VECTOR, GemmImpl.AUTO));
        if (Gemm.openBlasAvailable()) impls.addAll(List.of(GemmImpl.OPENBLAS, GemmImpl.OPENBLAS_THREADED));
        return impls;
    }

    @Test
    void everyTransposeAndOddShapeMatchesFloat64Reference() {
        int ran = 0;
        Random rnd = new Random(1);
        for (GemmImpl impl : f32Impls()) {
            for (boolean[] t : TRANSPOSES) {
                for (int m : ODD) for (int n : ODD) for (int k : ODD) {
                    check(impl, DType.F32, t[0], t[1], m, n, k, 1f, 0f, 0, rnd);
                    ran++;
                }
            }
        }
        assertTrue(ran > 0, "no implementation ran");
    }

    @Test
    void largerShapesCrossBlockEdgesInEveryDimension() {
        // 17 x 1000 x 33 (N not a multiple of 48, more than one NC block), K over two KC slices, M over blocks.
        int[][] shapes = {{17, 1000, 33}, {64, 100, 700}, {300, 50, 260}, {9, 97, 513}};
        Random rnd = new Random(2);
        int ran = 0;
        for (GemmImpl impl : f32Impls()) {
            for (boolean[] t : TRANSPOSES) {
                for (int[] s : shapes) {
                    check(impl, DType.F32, t[0], t[1], s[0], s[1], s[2], 1f, 0f, 0, rnd);
                    ran++;
                }
            }
        }
        assertTrue(ran > 0, "no implementation ran");
    }

    @Test
    void betaZeroIgnoresNanInOutputAndBetaOneAccumulates() {
        Random rnd = new Random(3);
        int ran = 0;
        float[][] alphaBeta = {{1f, 0f}, {1f, 1f}, {0.5f, -2f}, {-1.5f, 0.25f}, {0f, 0.5f}, {0f, 0f}};
        for (GemmImpl impl : f32Impls()) {
            for (boolean[] t : TRANSPOSES) {
                for (float[] ab : alphaBeta) {
                    check(impl, DType.F32, t[0], t[1], 33, 50, 7, ab[0], ab[1], 0, rnd);
                    check(impl, DType.F32, t[0], t[1], 3, 129, 300, ab[0], ab[1], 0, rnd);
                    ran++;
                }
            }
        }
        assertTrue(ran > 0, "no implementation ran");
    }

    @Test
    void paddedLeadingDimensionsAndColumnSlicesWork() {
        Random rnd = new Random(4);
        int ran = 0;
        for (GemmImpl impl : f32Impls()) {
            for (boolean[] t : TRANSPOSES) {
                check(impl, DType.F32, t[0], t[1], 33, 61, 45, 1f, 1f, 5, rnd);
                check(impl, DType.F32, t[0], t[1], 7, 129, 3, 2f, 0f, 19, rnd);
                ran++;
            }
        }
        assertTrue(ran > 0, "no implementation ran");
    }

    @Test
    void float64TensorsRunTheReference() {
        Random rnd = new Random(5);
        for (boolean[] t : TRANSPOSES) {
            check(GemmImpl.AUTO, DType.F64, t[0], t[1], 7, 33, 3, 1f, 0f, 0, rnd);
            check(GemmImpl.VECTOR, DType.F64, t[0], t[1], 3, 7, 129, 0.5f, 1f, 3, rnd);
        }
    }

    @Test
    void referenceMatchesClosedFormProduct() {
        // A [2, 3] · B [3, 2] with small integers: exact in float64.
        try (Tensor a = tensor(DType.F64, 2, 3).copyFrom(new double[]{1, 2, 3, 4, 5, 6});
             Tensor b = tensor(DType.F64, 3, 2).copyFrom(new double[]{7, 8, 9, 10, 11, 12});
             Tensor c = tensor(DType.F64, 2, 2).copyFrom(new double[]{1, 1, 1, 1})) {
            Gemm.matmul(c, a, b, false, false, 2f, 3f);
            assertArrayEquals(new double[]{2 * 58 + 3, 2 * 64 + 3, 2 * 139 + 3, 2 * 154 + 3}, c.toDoubleArray());
        }
    }

    @Test
    void batchedMatchesPerEntryReferenceWithStridedBatches() {
        Random rnd = new Random(6);
        int ran = 0;
        for (GemmImpl impl : f32Impls()) {
            for (boolean[] t : TRANSPOSES) {
                for (int batch : new int[]{1, 3, 5}) {
                    checkBatched(impl, DType.F32, t[0], t[1], batch, 17, 33, 9, 1f, 0f, rnd);
                    checkBatched(impl, DType.F32, t[0], t[1], batch, 7, 3, 65, 0.5f, 1f, rnd);
                    ran++;
                }
            }
        }
        checkBatched(GemmImpl.AUTO, DType.F64, false, true, 3, 5, 7, 9, 1f, 1f, rnd);
        assertTrue(ran > 0, "no implementation ran");
    }

    @Test
    void sameInputsGiveBitIdenticalOutput() {
        int ran = 0;
        for (GemmImpl impl : f32Impls()) {
            for (boolean[] t : TRANSPOSES) {
                int m = 70, n = 200, k = 300;
                Random rnd = new Random(7);
                try (Tensor a = random(rnd, DType.F32, t[0] ? k : m, t[0] ? m : k);
                     Tensor b = random(rnd, DType.F32, t[1] ? n : k, t[1] ? k : n);
                     Tensor c1 = tensor(DType.F32, m, n);
                     Tensor c2 = tensor(DType.F32, m, n)) {
                    Gemm.matmul(c1, a, b, t[0], t[1], 1f, 0f, impl);
                    Gemm.matmul(c2, a, b, t[0], t[1], 1f, 0f, impl);
                    assertArrayEquals(c1.toFloatArray(), c2.toFloatArray(), impl + " " + Arrays.toString(t) + ": two runs differ");
                }
                ran++;
            }
        }
        assertTrue(ran > 0, "no implementation ran");
    }

    @Test
    void vectorKernelGivesTheSameBitsForOneAndTwoThreads() {
        Random rnd = new Random(8);
        try (Tensor a = random(rnd, DType.F32, 100, 300);
             Tensor b = random(rnd, DType.F32, 500, 300);
             Tensor c1 = tensor(DType.F32, 100, 500);
             Tensor c2 = tensor(DType.F32, 100, 500);
             ComputePool one = new ComputePool("one", 1);
             ComputePool two = new ComputePool("two", 2)) {
            ComputePool.runWith(one, () -> Gemm.matmul(c1, a, b, false, true, 1f, 0f, GemmImpl.VECTOR));
            ComputePool.runWith(two, () -> Gemm.matmul(c2, a, b, false, true, 1f, 0f, GemmImpl.VECTOR));
            assertArrayEquals(c1.toFloatArray(), c2.toFloatArray(), "1 vs 2 threads differ");
        }
    }

    @Test
    void openBlasPathsMatchReferenceWhenOpenBlasLoads() {
        Assumptions.assumeTrue(Gemm.openBlasAvailable(),
                () -> "OpenBLAS paths skipped: " + Gemm.openBlasDescription());
        assertTrue(Gemm.openBlasDescription().contains("OpenBLAS"), Gemm.openBlasDescription());
        assertEquals(GemmImpl.OPENBLAS, Gemm.route(1024, 768, 768, false, true), "AUTO should route to OpenBLAS here");
        Random rnd = new Random(9);
        for (GemmImpl impl : List.of(GemmImpl.OPENBLAS, GemmImpl.OPENBLAS_THREADED)) {
            for (boolean[] t : TRANSPOSES) {
                check(impl, DType.F32, t[0], t[1], 129, 33, 7, 1f, 0f, 3, rnd);
                check(impl, DType.F32, t[0], t[1], 7, 129, 33, -0.5f, 1f, 0, rnd);
            }
        }
    }

    @Test
    void mismatchedShapesAreRejectedWithBothShapes() {
        try (Tensor a = tensor(DType.F32, 3, 4); Tensor b = tensor(DType.F32, 5, 6); Tensor c = tensor(DType.F32, 3, 6)) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> Gemm.matmul(c, a, b, false, false, 1f, 0f));
            assertTrue(e.getMessage().contains("f32[3, 4]") && e.getMessage().contains("f32[5, 6]"), e.getMessage());
            Tensor at = a.transpose(0, 1);
            try (Tensor c2 = tensor(DType.F32, 4, 6); Tensor b2 = tensor(DType.F32, 3, 6)) {
                e = assertThrows(IllegalArgumentException.class, () -> Gemm.matmul(c2, at, b2, false, false, 1f, 0f));
                assertTrue(e.getMessage().contains("transA"), e.getMessage());
            }
        }
    }

    // ---- helpers ----

    private Tensor tensor(DType dtype, int... shape) {
        return Tensor.allocate(memory, MemoryCategory.ACTIVATIONS, dtype, shape);
    }

    private Tensor random(Random rnd, DType dtype, int... shape) {
        Tensor t = tensor(dtype, shape);
        double[] v = new double[Math.toIntExact(t.numel())];
        for (int i = 0; i < v.length; i++) v[i] = (float) (rnd.nextDouble() * 2 - 1);
        return t.copyFrom(v);
    }

    /**
     * One product with padded storage: each operand lives in a tensor {@code pad} columns wider (and shifted by
     * one column), and the test passes the column slice.
     */
    private void check(GemmImpl impl, DType dtype, boolean transA, boolean transB, int m, int n, int k,
                       float alpha, float beta, int pad, Random rnd) {
        int ar = transA ? k : m, ac = transA ? m : k, br = transB ? n : k, bc = transB ? k : n;
        int off = pad > 0 ? 1 : 0;
        try (Tensor aStore = random(rnd, dtype, ar, ac + pad);
             Tensor bStore = random(rnd, dtype, br, bc + pad);
             Tensor cStore = random(rnd, dtype, m, n + pad)) {
            Tensor a = aStore.slice(1, off, ac), b = bStore.slice(1, off, bc), c = cStore.slice(1, off, n);
            if (beta == 0f) c.fill(Double.NaN);
            double[][] expected = reference(a.toDoubleArray(), b.toDoubleArray(), c.toDoubleArray(),
                    transA, transB, m, n, k, alpha, beta);
            double[] storeBefore = cStore.toDoubleArray();
            Gemm.matmul(c, a, b, transA, transB, alpha, beta, impl);
            String name = impl + " " + dtype.label() + " trans=" + (transA ? "T" : "N") + (transB ? "T" : "N")
                    + " M=" + m + " N=" + n + " K=" + k + " alpha=" + alpha + " beta=" + beta + " pad=" + pad;
            compare(name, expected, c.toDoubleArray(), dtype, k, alpha, beta);
            // Padding columns of C are untouched.
            double[] storeAfter = cStore.toDoubleArray();
            for (int i = 0; i < m; i++) {
                for (int j = 0; j < n + pad; j++) {
                    if (j >= off && j < off + n) continue;
                    int at = i * (n + pad) + j;
                    assertEquals(storeBefore[at], storeAfter[at], name + ": wrote outside C at [" + i + ", " + j + "]");
                }
            }
        }
    }

    private void checkBatched(GemmImpl impl, DType dtype, boolean transA, boolean transB, int batch, int m, int n,
                              int k, float alpha, float beta, Random rnd) {
        int ar = transA ? k : m, ac = transA ? m : k, br = transB ? n : k, bc = transB ? k : n;
        // Batch entries taken every other slot of a wider batch: arbitrary batch strides.
        try (Tensor aStore = random(rnd, dtype, 2 * batch, ar, ac);
             Tensor bStore = random(rnd, dtype, batch + 1, br, bc);
             Tensor cStore = random(rnd, dtype, 2 * batch, m, n)) {
            Tensor a = everyOther(aStore, batch), b = bStore.slice(0, 1, batch), c = everyOther(cStore, batch);
            double[][][] expected = new double[batch][][];
            for (int i = 0; i < batch; i++) {
                expected[i] = reference(a.select(0, i).toDoubleArray(), b.select(0, i).toDoubleArray(),
                        c.select(0, i).toDoubleArray(), transA, transB, m, n, k, alpha, beta);
            }
            Gemm.batchedMatmul(c, a, b, transA, transB, alpha, beta, impl);
            for (int i = 0; i < batch; i++) {
                compare(impl + " batched " + dtype.label() + " entry " + i + "/" + batch + " trans="
                                + (transA ? "T" : "N") + (transB ? "T" : "N") + " M=" + m + " N=" + n + " K=" + k,
                        expected[i], c.select(0, i).toDoubleArray(), dtype, k, alpha, beta);
            }
        }
    }

    /** Entries 0, 2, 4, ... of the first dimension, as a view with doubled batch stride. */
    private static Tensor everyOther(Tensor t, int count) {
        // [2·count, r, c] -> [count, 2, r, c] -> select slot 0: [count, r, c] with batch stride 2·r·c.
        int[] s = t.shape();
        return t.view(count, 2, s[1], s[2]).select(1, 0);
    }

    /** {expected values, per-element tolerance before the unit roundoff factor}: {@code [2][m·n]}. */
    private static double[][] reference(double[] a, double[] b, double[] c, boolean transA, boolean transB,
                                        int m, int n, int k, double alpha, double beta) {
        int ac = transA ? m : k, bc = transB ? k : n;
        double[] out = new double[m * n];
        double[] bound = new double[m * n];
        for (int i = 0; i < m; i++) {
            for (int j = 0; j < n; j++) {
                double s = 0, abs = 0;
                for (int p = 0; p < k; p++) {
                    double x = transA ? a[p * ac + i] : a[i * ac + p];
                    double y = transB ? b[j * bc + p] : b[p * bc + j];
                    s += x * y;
                    abs += Math.abs(x * y);
                }
                double old = beta == 0 ? 0 : beta * c[i * n + j];
                out[i * n + j] = alpha * s + old;
                bound[i * n + j] = (k + 2) * Math.abs(alpha) * abs + 2 * Math.abs(old) + Math.abs(out[i * n + j]);
            }
        }
        return new double[][]{out, bound};
    }

    private static void compare(String name, double[][] expected, double[] actual, DType dtype, int k,
                                double alpha, double beta) {
        double u = dtype == DType.F64 ? 0x1p-53 : 0x1p-24;
        double maxDiff = 0, tolAtWorst = 0, worstRatio = 0;
        int worst = -1;
        for (int i = 0; i < actual.length; i++) {
            double d = Math.abs(expected[0][i] - actual[i]);
            double tol = 2 * u * expected[1][i] + Double.MIN_NORMAL;
            double ratio = d / tol;
            if (!(ratio <= worstRatio)) {
                worstRatio = ratio;
                maxDiff = d;
                tolAtWorst = tol;
                worst = i;
            }
        }
        if (!(worstRatio <= 1)) {
            fail(name + ": abs diff " + maxDiff + " > tolerance " + tolAtWorst + " at element " + worst
                    + " (expected " + expected[0][worst] + ", got " + actual[worst] + ")");
        }
    }
}
