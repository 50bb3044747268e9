package dev.shardwise.core.kernels;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

/**
 * Plain float64 GEMM, {@code C = alpha·op(A)·op(B) + beta·C}: the reference the fast kernels are checked
 * against and the path F64 tensors take (finite-difference gradient checks). Each element's sum runs over K in
 * increasing order, one thread, so results are bit-reproducible. beta == 0 ignores C's old contents.
 */
final class GemmReference {
    private GemmReference() { }

    private static final ValueLayout.OfDouble F64 = ValueLayout.JAVA_DOUBLE_UNALIGNED;

    /** Offsets and leading dimensions in elements; storage as in {@link VectorGemm#sgemm}. */
    static void dgemm(boolean transA, boolean transB, int m, int n, int k, double alpha,
                      MemorySegment a, long aOff, long lda, MemorySegment b, long bOff, long ldb,
                      double beta, MemorySegment c, long cOff, long ldc) {
        double[] acc = new double[n];
        for (int i = 0; i < m; i++) {
            java.util.Arrays.fill(acc, 0.0);
            for (int p = 0; p < k; p++) {
                double aip = a.getAtIndex(F64, transA ? aOff + (long) p * lda + i : aOff + (long) i * lda + p);
                if (transB) {
                    for (int j = 0; j < n; j++) acc[j] += aip * b.getAtIndex(F64, bOff + (long) j * ldb + p);
                } else {
                    long row = bOff + (long) p * ldb;
                    for (int j = 0; j < n; j++) acc[j] += aip * b.getAtIndex(F64, row + j);
                }
            }
            long cRow = cOff + (long) i * ldc;
            for (int j = 0; j < n; j++) {
                double v = alpha * acc[j];
                if (beta != 0.0) v += beta * c.getAtIndex(F64, cRow + j);
                c.setAtIndex(F64, cRow + j, v);
            }
        }
    }
}
