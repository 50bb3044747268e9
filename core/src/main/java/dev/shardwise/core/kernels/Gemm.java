package dev.shardwise.core.kernels;

import dev.shardwise.core.exec.ComputePool;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

/**
 * General matrix multiply, the BLAS {@code gemm}: {@code C = alpha·op(A)·op(B) + beta·C} with
 * {@code op(X) = X} or {@code Xᵀ}, on fp32 tensors (OpenBLAS or our packed Vector API kernel, GotoBLAS-style)
 * or float64 tensors (a plain reference).
 *
 * <p>Shapes: {@code op(A) [M, K]}, {@code op(B) [K, N]}, {@code c [M, N]}. A is stored {@code [M, K]}, or
 * {@code [K, M]} when {@code transA}; B is stored {@code [K, N]}, or {@code [N, K]} when {@code transB}. The
 * three products of training a linear layer {@code out = x·Wᵀ} are:
 * <pre>
 *   forward          out [N, OC] = x [N, C] · W [OC, C]ᵀ        matmul(out, x, w, false, true, 1, 0)
 *   backward, data   dx  [N, C]  = dout [N, OC] · W [OC, C]     matmul(dx, dout, w, false, false, 1, 1)
 *   backward, weight dW  [OC, C] = dout [N, OC]ᵀ · x [N, C]     matmul(dw, dout, x, true, false, 1, 1)
 * </pre>
 * Tensors are 2-D with a unit inner stride; rows may be padded (the row stride is the leading dimension), so
 * column slices of wider tensors are accepted. All three are F32, or all three F64. {@code beta == 0} ignores
 * C's old contents (NaN and infinities in C do not leak into the result). C must not overlap A or B.
 *
 * <p>{@link GemmImpl#AUTO} sends each fp32 product to OpenBLAS or to the Vector kernel by a rule measured on
 * this project's reference machine (see {@link #route}); if OpenBLAS cannot be loaded, AUTO uses the Vector
 * kernel and says so once on stderr. Work runs on the threads of {@link ComputePool#current()} (OpenBLAS
 * single-threaded on each; only {@link GemmImpl#OPENBLAS_THREADED} uses OpenBLAS's own threads). Calls block
 * until C is written. Results are bit-identical from run to run for the same thread count (the Vector kernel
 * and the reference: for any thread count).
 */
public final class Gemm {
    private Gemm() { }

    /**
     * {@code c = alpha·op(a)·op(b) + beta·c} with {@link GemmImpl#AUTO}.
     *
     * @throws IllegalArgumentException if ranks, shapes, dtypes or strides do not fit (the message names the
     *                                  argument, its shape and what was expected)
     */
    public static void matmul(Tensor c, Tensor a, Tensor b, boolean transA, boolean transB, float alpha, float beta) {
        matmul(c, a, b, transA, transB, alpha, beta, GemmImpl.AUTO);
    }

    /**
     * {@code c = alpha·op(a)·op(b) + beta·c} with the given implementation (F64 tensors always use the
     * reference).
     *
     * @throws IllegalArgumentException      if ranks, shapes, dtypes or strides do not fit
     * @throws UnsupportedOperationException if {@code impl} is an OpenBLAS one and OpenBLAS could not be loaded
     */
    public static void matmul(Tensor c, Tensor a, Tensor b, boolean transA, boolean transB, float alpha, float beta,
                              GemmImpl impl) {
        check(c, a, b, transA, transB, 2, "matmul");
        run(c, a, b, transA, transB, alpha, beta, impl, ComputePool.current());
    }

    /**
     * Batched {@code c[i] = alpha·op(a[i])·op(b[i]) + beta·c[i]} with {@link GemmImpl#AUTO}: tensors are
     * {@code [batch, rows, cols]} (any batch strides), each batch entry as in {@link #matmul}.
     *
     * @throws IllegalArgumentException if ranks, shapes, dtypes or strides do not fit
     */
    public static void batchedMatmul(Tensor c, Tensor a, Tensor b, boolean transA, boolean transB,
                                     float alpha, float beta) {
        batchedMatmul(c, a, b, transA, transB, alpha, beta, GemmImpl.AUTO);
    }

    /**
     * Batched matmul with the given implementation; see {@link #batchedMatmul(Tensor, Tensor, Tensor, boolean,
     * boolean, float, float)}. Batch entries run in parallel, one per pool thread, when there are at least as
     * many as threads (except OPENBLAS_THREADED: one after another, each with all threads).
     *
     * @throws IllegalArgumentException      if ranks, shapes, dtypes or strides do not fit
     * @throws UnsupportedOperationException if {@code impl} is an OpenBLAS one and OpenBLAS could not be loaded
     */
    public static void batchedMatmul(Tensor c, Tensor a, Tensor b, boolean transA, boolean transB,
                                     float alpha, float beta, GemmImpl impl) {
        check(c, a, b, transA, transB, 3, "batchedMatmul");
        int batch = c.dim(0);
        if (a.dim(0) != batch || b.dim(0) != batch) {
            throw new IllegalArgumentException("batchedMatmul: batch sizes differ: c " + c.describe() + ", a "
                    + a.describe() + ", b " + b.describe() + "; all three need the same first dimension");
        }
        ComputePool pool = ComputePool.current();
        GemmImpl chosen = c.dtype() == DType.F64 ? GemmImpl.VECTOR : resolve(impl, c.dim(1), c.dim(2),
                transA ? a.dim(1) : a.dim(2), transA, transB, c, a, b);
        if (chosen != GemmImpl.OPENBLAS_THREADED && batch >= pool.threads()) {
            // Batch entries in parallel; the nested parallelFor of each entry runs inline on its thread.
            pool.parallelFor(batch, i -> run(c.select(0, i), a.select(0, i), b.select(0, i),
                    transA, transB, alpha, beta, chosen, pool));
        } else {
            for (int i = 0; i < batch; i++) {
                run(c.select(0, i), a.select(0, i), b.select(0, i), transA, transB, alpha, beta, chosen, pool);
            }
        }
    }

    /** Whether OpenBLAS loaded in this JVM. */
    public static boolean openBlasAvailable() {
        return OpenBlas.instance() != null;
    }

    /** One line about the OpenBLAS in use (version, build, CPU kernels), or why it could not be loaded. */
    public static String openBlasDescription() {
        OpenBlas blas = OpenBlas.instance();
        return blas != null ? blas.config() : "OpenBLAS unavailable: " + OpenBlas.loadFailure();
    }

    /**
     * The implementation AUTO picks for an fp32 product of these sizes and transposes: {@link GemmImpl#OPENBLAS}
     * when OpenBLAS loaded, else {@link GemmImpl#VECTOR}.
     *
     * @implNote The rule is "whichever is faster", measured on the 2-core Zen 4 reference VM. One thread, timed
     * by thread CPU time (so other load on the shared VM does not skew it): on the GPT-2-small training shapes
     * (M = 1024 tokens; qkv, attn-proj, fc, fc-proj, lm-head; NT, NN, TN) the Vector kernel ran at 0.9–1.0×
     * OpenBLAS, and on small or ragged shapes (64³, 33×100×17) at 0.1–0.6×. Two threads, wall clock, in
     * {@code shardwise bench gemm}'s quiet rounds: Vector kernel 0.82–1.01× OpenBLAS, OpenBLAS-on-the-pool
     * 0.96–1.0× OpenBLAS with its own threads. The Vector kernel never won beyond noise, so AUTO takes
     * OpenBLAS; the Vector kernel is the fallback, tested on every shape class. Re-measure with
     * {@code shardwise bench gemm} on a new CPU (its "vector" rows show the kernel's own ratio).
     */
    public static GemmImpl route(int m, int n, int k, boolean transA, boolean transB) {
        return openBlasAvailable() ? GemmImpl.OPENBLAS : GemmImpl.VECTOR;
    }

    // ---- dispatch ----

    private static void run(Tensor c, Tensor a, Tensor b, boolean transA, boolean transB, float alpha, float beta,
                            GemmImpl impl, ComputePool pool) {
        int m = c.dim(0), n = c.dim(1), k = transA ? a.dim(0) : a.dim(1);
        if (m == 0 || n == 0) return;
        long lda = ld(a), ldb = ld(b), ldc = ld(c);
        if (c.dtype() == DType.F64) {
            GemmReference.dgemm(transA, transB, m, n, k, alpha, a.segment(), a.offset(), lda,
                    b.segment(), b.offset(), ldb, beta, c.segment(), c.offset(), ldc);
            return;
        }
        if (k == 0 || alpha == 0f) {
            scaleOutput(c, beta);
            return;
        }
        GemmImpl chosen = resolve(impl, m, n, k, transA, transB, c, a, b);
        if (chosen == GemmImpl.OPENBLAS) {
            OpenBlas.instance().sgemmOnPool(pool, transA, transB, m, n, k, alpha, address(a), (int) lda,
                    address(b), (int) ldb, beta, address(c), (int) ldc);
        } else if (chosen == GemmImpl.OPENBLAS_THREADED) {
            OpenBlas blas = OpenBlas.instance();
            blas.setThreads(pool.threads());
            blas.sgemm(transA, transB, m, n, k, alpha, address(a), (int) lda, address(b), (int) ldb,
                    beta, address(c), (int) ldc);
        } else {
            VectorGemm.sgemm(pool, transA, transB, m, n, k, alpha, a.segment(), a.offset(), lda,
                    b.segment(), b.offset(), ldb, beta, c.segment(), c.offset(), ldc);
        }
    }

    /** AUTO -> a concrete implementation; checks that OPENBLAS can run on these tensors. */
    private static GemmImpl resolve(GemmImpl impl, int m, int n, int k, boolean transA, boolean transB,
                                    Tensor c, Tensor a, Tensor b) {
        boolean nativeMemory = c.segment().isNative() && a.segment().isNative() && b.segment().isNative();
        switch (impl) {
            case VECTOR -> {
                return GemmImpl.VECTOR;
            }
            case OPENBLAS, OPENBLAS_THREADED -> {
                if (!openBlasAvailable()) {
                    throw new UnsupportedOperationException("Gemm: OpenBLAS was requested but could not be loaded ("
                            + OpenBlas.loadFailure() + "); use GemmImpl.AUTO or VECTOR");
                }
                if (!nativeMemory) {
                    throw new IllegalArgumentException("Gemm: OpenBLAS needs off-heap tensors, but c, a or b wraps a "
                            + "heap segment; allocate them with Tensor.allocate or use GemmImpl.VECTOR");
                }
                return impl;
            }
            default -> {
                // route() says VECTOR when OpenBLAS is absent (OpenBlas logs that once, when it fails to load).
                return nativeMemory ? route(m, n, k, transA, transB) : GemmImpl.VECTOR;
            }
        }
    }

    private static long address(Tensor t) {
        return t.segment().address() + t.byteOffset();
    }

    /** Row stride, or the row length when there is one row (its stride is then arbitrary). */
    private static long ld(Tensor t) {
        int r = t.rank();
        return t.dim(r - 2) <= 1 ? Math.max(1, t.dim(r - 1)) : t.stride(r - 2);
    }

    /**
     * c [M, N] = beta·c, with beta == 0 writing zeros (NaNs in c included): what every product kernel does when K = 0
     * or alpha = 0, so they all agree there. c may have padded rows.
     */
    public static void scaleOutput(Tensor c, float beta) {
        if (beta == 1f) return;
        int m = c.dim(0), n = c.dim(1);
        long ldc = ld(c);
        MemorySegment s = c.segment();
        for (int i = 0; i < m; i++) {
            long row = c.offset() + i * ldc;
            for (int j = 0; j < n; j++) {
                float v = beta == 0f ? 0f : beta * s.getAtIndex(ValueLayout.JAVA_FLOAT_UNALIGNED, row + j);
                s.setAtIndex(ValueLayout.JAVA_FLOAT_UNALIGNED, row + j, v);
            }
        }
    }

    // ---- validation ----

    private static void check(Tensor c, Tensor a, Tensor b, boolean transA, boolean transB, int rank, String op) {
        requireRank(c, "c", rank, op);
        requireRank(a, "a", rank, op);
        requireRank(b, "b", rank, op);
        DType dt = c.dtype();
        if ((dt != DType.F32 && dt != DType.F64) || a.dtype() != dt || b.dtype() != dt) {
            throw new IllegalArgumentException(op + ": c " + c.describe() + ", a " + a.describe() + ", b " + b.describe()
                    + " must be all f32 or all f64");
        }
        requireProductShapes(op, c, a, b, transA, transB);
        requireRows(c, "c", op);
        requireRows(a, "a", op);
        requireRows(b, "b", op);
    }

    /**
     * Checks that c [.., M, N] = op(a)·op(b) agrees in shape, on the last two dimensions: op(a) [M, K], op(b) [K, N];
     * shared by every matrix-product kernel (fp32 here, bf16 on oneDNN) so they refuse a mismatch alike.
     *
     * @param op names the operation in the message, e.g. {@code matmul}
     * @throws IllegalArgumentException naming the tensors, the dimension that disagrees and the layout expected
     */
    public static void requireProductShapes(String op, Tensor c, Tensor a, Tensor b, boolean transA, boolean transB) {
        int m = c.dim(-2), n = c.dim(-1);
        int am = transA ? a.dim(-1) : a.dim(-2), k = transA ? a.dim(-2) : a.dim(-1);
        int bk = transB ? b.dim(-1) : b.dim(-2), bn = transB ? b.dim(-2) : b.dim(-1);
        String layout = " (transA=" + transA + ", transB=" + transB + ")";
        if (am != m) {
            throw new IllegalArgumentException(op + ": a " + a.describe() + " gives op(a) " + am + " rows but c "
                    + c.describe() + " has " + m + layout + "; a must be [M, K], or [K, M] when transA");
        }
        if (bn != n) {
            throw new IllegalArgumentException(op + ": b " + b.describe() + " gives op(b) " + bn + " columns but c "
                    + c.describe() + " has " + n + layout + "; b must be [K, N], or [N, K] when transB");
        }
        if (bk != k) {
            throw new IllegalArgumentException(op + ": inner dimensions differ: op(a) from " + a.describe() + " has K = "
                    + k + " but op(b) from " + b.describe() + " has K = " + bk + layout);
        }
    }

    private static void requireRank(Tensor t, String name, int rank, String op) {
        if (t.rank() != rank) {
            throw new IllegalArgumentException(op + ": " + name + " " + t.describe() + " must have " + rank
                    + " dimensions" + (rank == 3 ? " [batch, rows, cols]" : " [rows, cols]"));
        }
    }

    private static void requireRows(Tensor t, String name, String op) {
        int r = t.rank();
        if (!t.hasUnitInnerStride()) {
            throw new IllegalArgumentException(op + ": " + name + " " + t.describe() + " has inner stride "
                    + t.stride(r - 1) + "; GEMM needs unit-stride rows ("
                    + (name.equals("c") ? "copy the result afterwards" : "pass the stored tensor and set trans"
                    + name.toUpperCase(java.util.Locale.ROOT) + " instead of a transposed view") + ")");
        }
        if (t.dim(r - 2) > 1 && t.stride(r - 2) < t.dim(r - 1)) {
            throw new IllegalArgumentException(op + ": " + name + " " + t.describe() + " has row stride "
                    + t.stride(r - 2) + " < row length " + t.dim(r - 1) + "; rows must not overlap");
        }
        if (ld(t) > Integer.MAX_VALUE) {
            throw new IllegalArgumentException(op + ": " + name + " " + t.describe() + " has a row stride over 2^31-1");
        }
    }
}
