package dev.shardwise.core.kernels;

import dev.shardwise.core.exec.ComputePool;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

/** Bias of a linear layer: added to every row forward, its gradient is the column sum of dout backward. */
public final class Bias {
    private static final int COLUMNS_PER_TASK = 256;

    private Bias() { }

    /** out[n, :] += bias[:]. Shapes: out [N, C] contiguous, bias [C]; f32 or f64 alike. */
    public static void forward(Tensor out, Tensor bias) {
        int n = out.dim(0), c = out.dim(1);
        check("Bias.forward", out, bias, n, c);
        MemorySegment o = out.segment(), b = bias.segment();
        long oBase = out.byteOffset(), bBase = bias.byteOffset();
        boolean f32 = out.dtype() == DType.F32;
        ComputePool.current().parallelFor((n + 63) / 64, task -> {
            for (int row = task * 64, end = Math.min(n, row + 64); row < end; row++) {
                long r = oBase + (long) row * c * out.dtype().byteSize();
                for (int j = 0; j < c; j++) {
                    if (f32) {
                        long at = r + j * 4L;
                        o.set(ValueLayout.JAVA_FLOAT, at, o.get(ValueLayout.JAVA_FLOAT, at) + b.get(ValueLayout.JAVA_FLOAT, bBase + j * 4L));
                    } else {
                        long at = r + j * 8L;
                        o.set(ValueLayout.JAVA_DOUBLE, at, o.get(ValueLayout.JAVA_DOUBLE, at) + b.get(ValueLayout.JAVA_DOUBLE, bBase + j * 8L));
                    }
                }
            }
        });
    }

    /**
     * dbias[:] += sum over rows n of dout[n, :], rows summed in increasing order into a double per column
     * (bit-reproducible for any thread count). Shapes: dbias [C], dout [N, C] contiguous.
     */
    public static void backward(Tensor dbias, Tensor dout) {
        int n = dout.dim(0), c = dout.dim(1);
        check("Bias.backward", dout, dbias, n, c);
        MemorySegment d = dout.segment(), g = dbias.segment();
        long dBase = dout.byteOffset(), gBase = dbias.byteOffset();
        boolean f32 = dout.dtype() == DType.F32;
        ComputePool.current().parallelFor((c + COLUMNS_PER_TASK - 1) / COLUMNS_PER_TASK, task -> {
            int j0 = task * COLUMNS_PER_TASK, j1 = Math.min(c, j0 + COLUMNS_PER_TASK);
            double[] sums = new double[j1 - j0];
            for (int row = 0; row < n; row++) {
                for (int j = j0; j < j1; j++) {
                    sums[j - j0] += f32 ? d.get(ValueLayout.JAVA_FLOAT, dBase + ((long) row * c + j) * 4)
                            : d.get(ValueLayout.JAVA_DOUBLE, dBase + ((long) row * c + j) * 8);
                }
            }
            for (int j = j0; j < j1; j++) {
                if (f32) {
                    long at = gBase + j * 4L;
                    g.set(ValueLayout.JAVA_FLOAT, at, (float) (g.get(ValueLayout.JAVA_FLOAT, at) + sums[j - j0]));
                } else {
                    long at = gBase + j * 8L;
                    g.set(ValueLayout.JAVA_DOUBLE, at, g.get(ValueLayout.JAVA_DOUBLE, at) + sums[j - j0]);
                }
            }
        });
    }

    private static void check(String op, Tensor rows, Tensor bias, int n, int c) {
        if (rows.dtype() != bias.dtype() || (rows.dtype() != DType.F32 && rows.dtype() != DType.F64)) {
            throw new IllegalArgumentException(op + ": " + rows.describe() + " and bias " + bias.describe() + " must both be f32 or both f64");
        }
        if (rows.rank() != 2 || bias.rank() != 1 || bias.dim(0) != c || !rows.isContiguous() || !bias.isContiguous()) {
            throw new IllegalArgumentException(op + ": expected contiguous rows [N, C] and bias [C], got "
                    + rows.describe() + " and " + bias.describe());
        }
    }
}
