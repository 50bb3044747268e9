package dev.shardwise.core.kernels;

import dev.shardwise.core.exec.ComputePool;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;
import jdk.incubator.vector.FloatVector;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

import static dev.shardwise.core.kernels.Kernels.L;
import static dev.shardwise.core.kernels.Kernels.LE;
import static dev.shardwise.core.kernels.VecOps.get;
import static dev.shardwise.core.kernels.VecOps.load;
import static dev.shardwise.core.kernels.VecOps.put;

/**
 * Bias of a linear layer: added to every row forward ({@code out[n, :] += b}); backward accumulates the column
 * sums of dout ({@code db += Σ_n dout[n, :]}). F32 uses the Vector API, F64 plain loops.
 */
public final class Bias {
    /** Columns per backward task: tasks own disjoint columns and sum rows in order, so results do not depend on threads. */
    private static final int COLUMNS_PER_TASK = 256;

    private Bias() { }

    /**
     * out[n, :] += bias[:]. Shapes: out [N, C] contiguous, bias [C].
     *
     * @throws IllegalArgumentException if shapes or dtypes disagree
     */
    public static void forward(Tensor out, Tensor bias) {
        int n = out.dim(0), c = out.dim(1);
        check("Bias.forward", out, bias, c);
        MemorySegment o = out.segment(), b = bias.segment();
        long oBase = out.byteOffset(), bBase = bias.byteOffset();
        boolean f32 = out.dtype() == DType.F32;
        int rowsPerTask = Math.max(1, (1 << 15) / Math.max(c, 1));
        ComputePool.current().parallelFor((n + rowsPerTask - 1) / rowsPerTask, task -> {
            for (int row = task * rowsPerTask, end = Math.min(n, row + rowsPerTask); row < end; row++) {
                if (f32) {
                    long r = oBase + (long) row * c * 4;
                    int j = 0;
                    for (; j <= c - L; j += L) load(o, r + 4L * j).add(load(b, bBase + 4L * j)).intoMemorySegment(o, r + 4L * j, LE);
                    for (; j < c; j++) put(o, r + 4L * j, get(o, r + 4L * j) + get(b, bBase + 4L * j));
                } else {
                    long r = oBase + (long) row * c * 8;
                    for (int j = 0; j < c; j++) {
                        long at = r + j * 8L;
                        o.set(ValueLayout.JAVA_DOUBLE_UNALIGNED, at, o.get(ValueLayout.JAVA_DOUBLE_UNALIGNED, at)
                                + b.get(ValueLayout.JAVA_DOUBLE_UNALIGNED, bBase + j * 8L));
                    }
                }
            }
        });
    }

    /**
     * dbias[:] += Σ over rows n of dout[n, :], rows added in increasing order (in float for F32, double for
     * F64), bit-reproducible for any thread count. Shapes: dbias [C], dout [N, C] contiguous.
     *
     * @throws IllegalArgumentException if shapes or dtypes disagree
     */
    public static void backward(Tensor dbias, Tensor dout) {
        int n = dout.dim(0), c = dout.dim(1);
        check("Bias.backward", dout, dbias, c);
        MemorySegment d = dout.segment(), g = dbias.segment();
        long dBase = dout.byteOffset(), gBase = dbias.byteOffset();
        boolean f32 = dout.dtype() == DType.F32;
        ComputePool.current().parallelFor((c + COLUMNS_PER_TASK - 1) / COLUMNS_PER_TASK, task -> {
            int j0 = task * COLUMNS_PER_TASK, j1 = Math.min(c, j0 + COLUMNS_PER_TASK);
            if (f32) {
                int j = j0;
                for (; j <= j1 - L; j += L) {
                    FloatVector sum = FloatVector.zero(Kernels.F);
                    for (int row = 0; row < n; row++) sum = sum.add(load(d, dBase + ((long) row * c + j) * 4));
                    load(g, gBase + 4L * j).add(sum).intoMemorySegment(g, gBase + 4L * j, LE);
                }
                for (; j < j1; j++) {
                    float sum = 0;
                    for (int row = 0; row < n; row++) sum += get(d, dBase + ((long) row * c + j) * 4);
                    put(g, gBase + 4L * j, get(g, gBase + 4L * j) + sum);
                }
            } else {
                for (int j = j0; j < j1; j++) {
                    double sum = 0;
                    for (int row = 0; row < n; row++) sum += d.get(ValueLayout.JAVA_DOUBLE_UNALIGNED, dBase + ((long) row * c + j) * 8);
                    long at = gBase + j * 8L;
                    g.set(ValueLayout.JAVA_DOUBLE_UNALIGNED, at, g.get(ValueLayout.JAVA_DOUBLE_UNALIGNED, at) + sum);
                }
            }
        });
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
