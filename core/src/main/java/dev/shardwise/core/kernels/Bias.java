package dev.shardwise.core.kernels;

import dev.shardwise.core.exec.ComputePool;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;
import jdk.incubator.vector.FloatVector;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

import static dev.shardwise.core.kernels.Kernels.F;
import static dev.shardwise.core.kernels.Kernels.L;
import static dev.shardwise.core.kernels.Kernels.LE;
import static dev.shardwise.core.kernels.VecOps.get;
import static dev.shardwise.core.kernels.VecOps.load;
import static dev.shardwise.core.kernels.VecOps.put;

/**
 * Bias of a linear layer: added to every row forward ({@code out[n, :] += b}, or written as the starting value
 * of a GEMM that then accumulates onto it: {@code out[n, :] = b}); backward accumulates the column sums of
 * dout ({@code db += Σ_n dout[n, :]}). F32 uses the Vector API, F64 plain loops.
 */
public final class Bias {
    private Bias() { }

    /**
     * out[n, :] += bias[:]. Shapes: out [N, C] contiguous, bias [C].
     *
     * @throws IllegalArgumentException if shapes or dtypes disagree
     */
    public static void forward(Tensor out, Tensor bias) {
        rows("Bias.forward", out, bias, true);
    }

    /**
     * out[n, :] = bias[:] for every row: the starting value of {@code out = bias + x·Wᵀ} computed as a GEMM with
     * beta 1, which adds onto it in the same pass that writes the product (one pass over out instead of a GEMM's
     * zeroing, the product, and a bias pass). Shapes: out [N, C] contiguous, bias [C].
     *
     * @throws IllegalArgumentException if shapes or dtypes disagree
     */
    public static void broadcast(Tensor out, Tensor bias) {
        rows("Bias.broadcast", out, bias, false);
    }

    private static void rows(String op, Tensor out, Tensor bias, boolean add) {
        int n = out.dim(0), c = out.dim(1);
        check(op, out, bias, c);
        MemorySegment o = out.segment(), b = bias.segment();
        long oBase = out.byteOffset(), bBase = bias.byteOffset();
        boolean f32 = out.dtype() == DType.F32;
        int rowsPerTask = Math.max(1, (1 << 15) / Math.max(c, 1));
        ComputePool.current().parallelFor((n + rowsPerTask - 1) / rowsPerTask, task -> {
            for (int row = task * rowsPerTask, end = Math.min(n, row + rowsPerTask); row < end; row++) {
                if (f32) {
                    long r = oBase + (long) row * c * 4;
                    if (add) addRowF32(o, r, b, bBase, c);
                    else MemorySegment.copy(b, bBase, o, r, 4L * c);
                } else {
                    long r = oBase + (long) row * c * 8;
                    for (int j = 0; j < c; j++) {
                        long at = r + j * 8L;
                        double base = add ? o.get(ValueLayout.JAVA_DOUBLE_UNALIGNED, at) : 0;
                        o.set(ValueLayout.JAVA_DOUBLE_UNALIGNED, at, base + b.get(ValueLayout.JAVA_DOUBLE_UNALIGNED, bBase + j * 8L));
                    }
                }
            }
        });
    }

    private static void addRowF32(MemorySegment o, long r, MemorySegment b, long bBase, int c) {
        int j = 0;
        for (; j <= c - L; j += L) load(o, r + 4L * j).add(load(b, bBase + 4L * j)).intoMemorySegment(o, r + 4L * j, LE);
        for (; j < c; j++) put(o, r + 4L * j, get(o, r + 4L * j) + get(b, bBase + 4L * j));
    }

    /**
     * dbias[:] += Σ over rows n of dout[n, :]. F32: rows are summed in chunks whose size depends on N only
     * ({@link Kernels#gradChunkRows}), each in increasing row order, and the chunk sums added in chunk order, so
     * the result is bit-reproducible for any thread count; F64 adds all rows in increasing order. Shapes:
     * dbias [C], dout [N, C] contiguous.
     *
     * @throws IllegalArgumentException if shapes or dtypes disagree
     */
    public static void backward(Tensor dbias, Tensor dout) {
        int n = dout.dim(0), c = dout.dim(1);
        check("Bias.backward", dout, dbias, c);
        MemorySegment d = dout.segment(), g = dbias.segment();
        long dBase = dout.byteOffset(), gBase = dbias.byteOffset();
        if (dout.dtype() == DType.F32) {
            // row chunks in parallel (each reads whole rows, streaming), rather than column strips: a [N, 256]
            // gradient has only one strip of 256 columns, which left the other threads idle
            int chunkRows = Kernels.gradChunkRows(n);
            int chunks = (n + chunkRows - 1) / chunkRows;
            float[][] partials = new float[chunks][c];
            Kernels.forChunks(chunks, (long) n * c, k -> {
                for (int row = k * chunkRows, end = Math.min(n, row + chunkRows); row < end; row++) {
                    accumulateRow(partials[k], d, dBase + (long) row * c * 4, c);
                }
            });
            Kernels.addPartials(g, gBase, partials, c);
            return;
        }
        for (int j = 0; j < c; j++) {
            double sum = 0;
            for (int row = 0; row < n; row++) sum += d.get(ValueLayout.JAVA_DOUBLE_UNALIGNED, dBase + ((long) row * c + j) * 8);
            long at = gBase + j * 8L;
            g.set(ValueLayout.JAVA_DOUBLE_UNALIGNED, at, g.get(ValueLayout.JAVA_DOUBLE_UNALIGNED, at) + sum);
        }
    }

    /** partial[:] += one f32 row of c elements at byte offset {@code off}. */
    private static void accumulateRow(float[] partial, MemorySegment d, long off, int c) {
        int j = 0;
        for (; j <= c - L; j += L) {
            FloatVector.fromArray(F, partial, j).add(load(d, off + 4L * j)).intoArray(partial, j);
        }
        for (; j < c; j++) partial[j] += get(d, off + 4L * j);
    }

    private static void check(String op, Tensor rows, Tensor bias, int c) {
        if (rows.dtype() != bias.dtype() || (rows.dtype() != DType.F32 && rows.dtype() != DType.F64)) {
            throw new IllegalArgumentException(op + ": " + rows.describe() + " and bias " + bias.describe() + " must both be f32 or both f64");
        }
        if (rows.rank() != 2 || bias.rank() != 1 || bias.dim(0) != c || !rows.isContiguous() || !bias.isContiguous()) {
            throw new IllegalArgumentException(op + ": expected contiguous rows [N, C] and bias [C], got "
                    + rows.describe() + " and " + bias.describe());
        }
    }
}
