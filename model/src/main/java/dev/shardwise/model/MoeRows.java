package dev.shardwise.model;

import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

/**
 * Row moves of a mixture of experts over contiguous [rows, C] tensors of F32 or F64: gather the routed tokens into
 * expert order (dispatch), add weighted expert outputs back onto the tokens (combine), and the row dot products the
 * gate gradients need. Sums run in float64, left to right, so results do not depend on threads.
 */
final class MoeRows {
    private MoeRows() { }

    /** dst[i, :] = src[rows[i], :] for i in [0, dst rows); src [N, C], dst [M, C]. */
    static void gather(Tensor dst, Tensor src, int[] rows) {
        int c = width(dst, src);
        long rowBytes = (long) c * dst.dtype().byteSize();
        for (int i = 0; i < dst.dim(0); i++) {
            MemorySegment.copy(src.segment(), src.byteOffset() + rows[i] * rowBytes, dst.segment(), dst.byteOffset() + i * rowBytes, rowBytes);
        }
    }

    /** dst[d, :] += alpha · src[s, :]. */
    static void addRow(Tensor dst, int d, Tensor src, int s, double alpha) {
        int c = width(dst, src);
        long dOff = dst.byteOffset() + (long) d * c * dst.dtype().byteSize(), sOff = src.byteOffset() + (long) s * c * src.dtype().byteSize();
        MemorySegment ds = dst.segment(), ss = src.segment();
        if (dst.dtype() == DType.F32) {
            float a = (float) alpha;
            for (int j = 0; j < c; j++) {
                long o = 4L * j;
                ds.set(ValueLayout.JAVA_FLOAT, dOff + o, ds.get(ValueLayout.JAVA_FLOAT, dOff + o) + a * ss.get(ValueLayout.JAVA_FLOAT, sOff + o));
            }
        } else {
            for (int j = 0; j < c; j++) {
                long o = 8L * j;
                ds.set(ValueLayout.JAVA_DOUBLE, dOff + o, ds.get(ValueLayout.JAVA_DOUBLE, dOff + o) + alpha * ss.get(ValueLayout.JAVA_DOUBLE, sOff + o));
            }
        }
    }

    /** dst[d, :] = alpha · src[s, :]. */
    static void setRow(Tensor dst, int d, Tensor src, int s, double alpha) {
        int c = width(dst, src);
        long dOff = dst.byteOffset() + (long) d * c * dst.dtype().byteSize(), sOff = src.byteOffset() + (long) s * c * src.dtype().byteSize();
        MemorySegment ds = dst.segment(), ss = src.segment();
        if (dst.dtype() == DType.F32) {
            float a = (float) alpha;
            for (int j = 0; j < c; j++) ds.set(ValueLayout.JAVA_FLOAT, dOff + 4L * j, a * ss.get(ValueLayout.JAVA_FLOAT, sOff + 4L * j));
        } else {
            for (int j = 0; j < c; j++) ds.set(ValueLayout.JAVA_DOUBLE, dOff + 8L * j, alpha * ss.get(ValueLayout.JAVA_DOUBLE, sOff + 8L * j));
        }
    }

    /** Σ_j a[ra, j]·b[rb, j], in float64. */
    static double dot(Tensor a, int ra, Tensor b, int rb) {
        int c = width(a, b);
        long aOff = a.byteOffset() + (long) ra * c * a.dtype().byteSize(), bOff = b.byteOffset() + (long) rb * c * b.dtype().byteSize();
        MemorySegment as = a.segment(), bs = b.segment();
        double s = 0;
        if (a.dtype() == DType.F32) {
            for (int j = 0; j < c; j++) s += (double) as.get(ValueLayout.JAVA_FLOAT, aOff + 4L * j) * bs.get(ValueLayout.JAVA_FLOAT, bOff + 4L * j);
        } else {
            for (int j = 0; j < c; j++) s += as.get(ValueLayout.JAVA_DOUBLE, aOff + 8L * j) * bs.get(ValueLayout.JAVA_DOUBLE, bOff + 8L * j);
        }
        return s;
    }

    private static int width(Tensor a, Tensor b) {
        if (a.rank() != 2 || b.rank() != 2 || a.dim(1) != b.dim(1) || a.dtype() != b.dtype() || !a.isContiguous() || !b.isContiguous()) {
            throw new IllegalArgumentException("MoE row moves need contiguous [rows, C] tensors of one dtype and width, got "
                    + a.describe() + " and " + b.describe());
        }
        return a.dim(1);
    }
}
