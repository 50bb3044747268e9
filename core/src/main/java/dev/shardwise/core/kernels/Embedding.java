package dev.shardwise.core.kernels;

import dev.shardwise.core.exec.ComputePool;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Arrays;

import static dev.shardwise.core.kernels.Kernels.L;
import static dev.shardwise.core.kernels.Kernels.LE;
import static dev.shardwise.core.kernels.VecOps.get;
import static dev.shardwise.core.kernels.VecOps.load;
import static dev.shardwise.core.kernels.VecOps.put;

/**
 * Embedding lookup (rows of a table gathered by token id) and the scatter-add of their gradients.
 * Works on F32 and F64 alike: a gather is exact and the scatter-add runs in a fixed order.
 */
public final class Embedding {
    private static final int ROWS_PER_TASK = 64;

    private Embedding() { }

    /**
     * out[n, :] = table[ids[n], :], or out[n, :] += table[ids[n], :] when {@code accumulate}.
     * Shapes: out [N, C], ids i32 [N], table [V, C]; out and table contiguous.
     *
     * @throws IllegalArgumentException on mismatched shapes or dtypes, or an id outside [0, V) (naming the row)
     */
    public static void forward(Tensor out, Tensor ids, Tensor table, boolean accumulate) {
        int n = out.dim(0), c = out.dim(1), v = table.dim(0);
        check("Embedding.forward", out, ids, table, n, c);
        int[] idValues = readIds(ids, v, "Embedding.forward");
        long size = out.dtype().byteSize();
        MemorySegment o = out.segment(), t = table.segment();
        long oBase = out.byteOffset(), tBase = table.byteOffset();
        int tasks = (n + ROWS_PER_TASK - 1) / ROWS_PER_TASK;
        ComputePool.current().parallelFor(tasks, task -> {
            for (int row = task * ROWS_PER_TASK, end = Math.min(n, row + ROWS_PER_TASK); row < end; row++) {
                long src = tBase + (long) idValues[row] * c * size, dst = oBase + (long) row * c * size;
                if (!accumulate) {
                    MemorySegment.copy(t, src, o, dst, c * size);
                } else if (out.dtype() == DType.F32) {
                    addF32(o, dst, t, src, c);
                } else {
                    for (int j = 0; j < c; j++) {
                        long at = j * 8L;
                        o.set(ValueLayout.JAVA_DOUBLE, dst + at, o.get(ValueLayout.JAVA_DOUBLE, dst + at) + t.get(ValueLayout.JAVA_DOUBLE, src + at));
                    }
                }
            }
        });
    }

    /**
     * dtable[ids[n], :] += dout[n, :] for every n, in increasing n (a fixed order, so results are
     * bit-reproducible for any thread count). Shapes: dtable [V, C], dout [N, C], ids i32 [N]; contiguous.
     */
    public static void backward(Tensor dtable, Tensor dout, Tensor ids) {
        int n = dout.dim(0), c = dout.dim(1), v = dtable.dim(0);
        check("Embedding.backward", dout, ids, dtable, n, c);
        int[] idValues = readIds(ids, v, "Embedding.backward");
        boolean f32 = dout.dtype() == DType.F32;
        long size = dout.dtype().byteSize();
        MemorySegment d = dout.segment(), g = dtable.segment();
        long dBase = dout.byteOffset(), gBase = dtable.byteOffset();
        // Tasks own disjoint column ranges of the table; rows are added in increasing order within each.
        int columnsPerTask = 128;
        int tasks = (c + columnsPerTask - 1) / columnsPerTask;
        ComputePool.current().parallelFor(tasks, task -> {
            int j0 = task * columnsPerTask, j1 = Math.min(c, j0 + columnsPerTask);
            for (int row = 0; row < n; row++) {
                long src = dBase + (long) row * c * size, dst = gBase + (long) idValues[row] * c * size;
                if (f32) {
                    addF32(g, dst + 4L * j0, d, src + 4L * j0, j1 - j0);
                } else {
                    for (int j = j0; j < j1; j++) {
                        long at = j * size;
                        g.set(ValueLayout.JAVA_DOUBLE, dst + at, g.get(ValueLayout.JAVA_DOUBLE, dst + at) + d.get(ValueLayout.JAVA_DOUBLE, src + at));
                    }
                }
            }
        });
    }

    /** {@code len} floats at {@code dst} += those at {@code src}, lane by lane (the same sums as a scalar loop). */
    private static void addF32(MemorySegment to, long dst, MemorySegment from, long src, int len) {
        int j = 0;
        for (; j <= len - L; j += L) {
            load(to, dst + 4L * j).add(load(from, src + 4L * j)).intoMemorySegment(to, dst + 4L * j, LE);
        }
        for (; j < len; j++) put(to, dst + 4L * j, get(to, dst + 4L * j) + get(from, src + 4L * j));
    }

    private static void check(String op, Tensor rows, Tensor ids, Tensor table, int n, int c) {
        if (rows.dtype() != table.dtype() || (rows.dtype() != DType.F32 && rows.dtype() != DType.F64)) {
            throw new IllegalArgumentException(op + ": rows " + rows.describe() + " and table " + table.describe()
                    + " must both be f32 or both f64");
        }
        if (ids.dtype() != DType.I32 || ids.rank() != 1 || ids.dim(0) != n) {
            throw new IllegalArgumentException(op + ": ids " + ids.describe() + " must be i32[" + n + "]");
        }
        if (table.rank() != 2 || table.dim(1) != c || rows.rank() != 2) {
            throw new IllegalArgumentException(op + ": table " + table.describe() + " must be [V, " + c + "] for rows " + rows.describe());
        }
        if (!rows.isContiguous() || !table.isContiguous() || !ids.isContiguous()) {
            throw new IllegalArgumentException(op + ": tensors must be contiguous: " + Arrays.asList(rows, ids, table));
        }
    }

    private static int[] readIds(Tensor ids, int vocab, String op) {
        int n = ids.dim(0);
        int[] out = new int[n];
        MemorySegment.copy(ids.segment(), ValueLayout.JAVA_INT, ids.byteOffset(), out, 0, n);
        for (int i = 0; i < n; i++) {
            if (out[i] < 0 || out[i] >= vocab) {
                throw new IllegalArgumentException(op + ": token id " + out[i] + " at row " + i + " is outside the vocabulary [0, "
                        + vocab + "); was the data prepared with another tokenizer?");
            }
        }
        return out;
    }
}
