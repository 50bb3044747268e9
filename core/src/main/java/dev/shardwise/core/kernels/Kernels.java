package dev.shardwise.core.kernels;

import dev.shardwise.core.exec.ComputePool;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorSpecies;

import java.nio.ByteOrder;
import java.util.Arrays;

/** Argument checks and work splitting shared by the kernels of this package. */
final class Kernels {
    private Kernels() { }

    static final VectorSpecies<Float> F = FloatVector.SPECIES_PREFERRED;
    static final int L = F.length();
    static final ByteOrder LE = ByteOrder.LITTLE_ENDIAN;

    /** Below this many elements of work a kernel runs on the calling thread alone. */
    static final long PARALLEL_MIN_ELEMENTS = 1 << 15;
    /** Elements of work per task when a loop is split over threads (1 MiB of f32). */
    static final long TASK_ELEMENTS = 1 << 18;

    /** Body of a loop over a range of rows {@code [from, to)}. */
    interface RowRange {
        void run(int from, int to);
    }

    /** Body of a loop over a range of elements {@code [from, to)} of flat tensors. */
    interface Span {
        void run(long from, long to);
    }

    /**
     * The common float dtype of {@code tensors}: all F32 or all F64.
     *
     * @throws IllegalArgumentException naming the first tensor that differs
     */
    static DType floatType(String op, String[] names, Tensor... tensors) {
        DType first = tensors[0].dtype();
        if (first != DType.F32 && first != DType.F64) {
            throw new IllegalArgumentException(op + ": " + names[0] + " is " + tensors[0].describe()
                    + "; this kernel takes f32 (fast path) or f64 (reference) tensors");
        }
        for (int i = 1; i < tensors.length; i++) {
            if (tensors[i].dtype() != first) {
                throw new IllegalArgumentException(op + ": " + names[i] + " is " + tensors[i].describe() + " but "
                        + names[0] + " is " + tensors[0].describe() + "; pass all float arguments as " + first.label()
                        + " (f32 and f64 cannot be mixed)");
            }
        }
        return first;
    }

    static void sameShape(String op, String arg, Tensor t, String refArg, Tensor ref) {
        if (!Arrays.equals(t.shape(), ref.shape())) {
            throw new IllegalArgumentException(op + ": " + arg + " has shape " + t.describe() + " but " + refArg
                    + " has " + ref.describe() + "; they must have the same shape");
        }
    }

    /** Checks that {@code t} has exactly {@code shape}. */
    static void shape(String op, String arg, Tensor t, String expectedText, int... shape) {
        if (!Arrays.equals(t.shape(), shape)) {
            throw new IllegalArgumentException(op + ": " + arg + " has shape " + t.describe() + " but must be "
                    + Arrays.toString(shape) + " (" + expectedText + ")");
        }
    }

    static void contiguous(String op, String arg, Tensor t) {
        if (!t.isContiguous()) {
            throw new IllegalArgumentException(op + ": " + arg + " " + t.describe()
                    + " is not contiguous; this kernel works on flat contiguous tensors (copy it first)");
        }
    }

    /**
     * Runs {@code body} over rows {@code [0, rows)}: inline when the work is small, else in contiguous
     * row ranges spread over {@link ComputePool#current()}. Each row is handled by exactly one call, so
     * per-row results do not depend on the split.
     */
    static void forRows(int rows, long elementsPerRow, RowRange body) {
        ComputePool pool = ComputePool.current();
        long perRow = Math.max(1, elementsPerRow);
        long work = rows * perRow;
        if (pool.threads() == 1 || rows <= 1 || work < PARALLEL_MIN_ELEMENTS) {
            body.run(0, rows);
            return;
        }
        // tasks of about TASK_ELEMENTS each: small enough that a thread the OS deschedules (shared machines)
        // leaves little work behind for the others to wait on, large enough that claiming one costs nothing
        long rowsPerTask = Math.max(1, TASK_ELEMENTS / perRow);
        int tasks = (int) Math.max(Math.min(rows, pool.threads()), Math.min(rows, (rows + rowsPerTask - 1) / rowsPerTask));
        int nt = tasks;
        pool.parallelFor(nt, t -> body.run((int) ((long) rows * t / nt), (int) ((long) rows * (t + 1) / nt)));
    }

    /** Runs {@code body} over elements {@code [0, n)} in chunks of about {@link #TASK_ELEMENTS}, spread over the current pool. */
    static void forSpans(long n, Span body) {
        ComputePool pool = ComputePool.current();
        if (pool.threads() == 1 || n < PARALLEL_MIN_ELEMENTS) {
            body.run(0, n);
            return;
        }
        long chunk = Math.max(L, Math.min(TASK_ELEMENTS, (n / pool.threads() + L - 1) / L * L));
        int tasks = (int) ((n + chunk - 1) / chunk);
        pool.parallelFor(tasks, t -> body.run(t * chunk, Math.min(n, (t + 1) * chunk)));
    }

    /** Number of fixed-size chunks {@link #forFixedChunks} uses for {@code n} elements. */
    static int fixedChunks(long n, long chunk) {
        return (int) Math.max(1, (n + chunk - 1) / chunk);
    }

    /**
     * Runs {@code body(chunkIndex)} for chunks of {@code chunk} elements whose boundaries depend only on
     * {@code n}, so partial results combined in chunk order are the same for any thread count.
     */
    static void forFixedChunks(long n, long chunk, java.util.function.IntConsumer body) {
        int tasks = fixedChunks(n, chunk);
        ComputePool pool = ComputePool.current();
        if (pool.threads() == 1 || n < PARALLEL_MIN_ELEMENTS) {
            for (int t = 0; t < tasks; t++) body.accept(t);
        } else {
            pool.parallelFor(tasks, body);
        }
    }

    /**
     * Rows per chunk when a backward kernel sums parameter gradients over rows: depends on {@code rows}
     * only (at least 32 rows, at most 64 chunks), so per-chunk partials added in chunk order give the same
     * bits for any thread count.
     */
    static int gradChunkRows(int rows) {
        return Math.max(32, (rows + 63) / 64);
    }

    /** Runs {@code body(chunk)} for chunks {@code [0, chunks)}, in parallel when {@code work} elements justify it. */
    static void forChunks(int chunks, long work, java.util.function.IntConsumer body) {
        ComputePool pool = ComputePool.current();
        if (pool.threads() == 1 || chunks <= 1 || work < PARALLEL_MIN_ELEMENTS) {
            for (int t = 0; t < chunks; t++) body.accept(t);
        } else {
            pool.parallelFor(chunks, body);
        }
    }

    /** {@code dst[c] += sum over k of partials[k][c]}, k in order; dst is {@code len} f32 at byte offset {@code off}. */
    static void addPartials(java.lang.foreign.MemorySegment dst, long off, float[][] partials, int len) {
        int i = 0;
        for (; i <= len - L; i += L) {
            FloatVector acc = FloatVector.zero(F);
            for (float[] p : partials) acc = acc.add(FloatVector.fromArray(F, p, i));
            VecOps.load(dst, off + 4L * i).add(acc).intoMemorySegment(dst, off + 4L * i, LE);
        }
        for (; i < len; i++) {
            float acc = 0;
            for (float[] p : partials) acc += p[i];
            VecOps.put(dst, off + 4L * i, VecOps.get(dst, off + 4L * i) + acc);
        }
    }

    /** A flat contiguous vector of {@code len} elements, checked. */
    static Rows vector(String op, String arg, Tensor t, int len, String what) {
        if (t.numel() != len || !t.isContiguous()) {
            throw new IllegalArgumentException(op + ": " + arg + " is " + t.describe() + (t.isContiguous() ? "" : " (not contiguous)")
                    + " but must be a contiguous tensor of " + len + " elements (" + what + ")");
        }
        return Rows.of(op, arg, t.view(-1));
    }

    /**
     * Body of an elementwise kernel over one contiguous strip of {@code len} elements: {@code o0..o4} are the
     * byte offsets of the strip in each operand's segment (0 for operands that do not exist).
     */
    interface Strip {
        void run(long o0, long o1, long o2, long o3, long o4, int len);
    }

    /**
     * Runs an elementwise {@code body} over operands of one shape: as one flat span split in chunks when
     * every operand is dense, else row by row (padded rows), spread over the current pool.
     */
    static void forStrips(Strip body, Rows... ops) {
        int rows = ops[0].rows(), cols = ops[0].cols();
        boolean dense = true;
        for (Rows r : ops) dense &= r.dense();
        long[] base = new long[5];
        int[] es = new int[5];
        for (int k = 0; k < ops.length; k++) {
            base[k] = ops[k].base();
            es[k] = ops[k].elemSize();
        }
        if (dense) {
            long n = (long) rows * cols;
            forSpans(n, (from, to) -> {
                for (long s = from; s < to; s += Integer.MAX_VALUE / 16) {
                    int len = (int) Math.min(to - s, Integer.MAX_VALUE / 16);
                    body.run(base[0] + s * es[0], base[1] + s * es[1], base[2] + s * es[2], base[3] + s * es[3],
                            base[4] + s * es[4], len);
                }
            });
        } else {
            long[] stride = new long[5];
            for (int k = 0; k < ops.length; k++) stride[k] = ops[k].rowStride();
            forRows(rows, cols, (from, to) -> {
                for (int r = from; r < to; r++) {
                    body.run(base[0] + r * stride[0], base[1] + r * stride[1], base[2] + r * stride[2],
                            base[3] + r * stride[3], base[4] + r * stride[4], cols);
                }
            });
        }
    }
}
