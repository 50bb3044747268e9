package dev.shardwise.comm;

import dev.shardwise.core.exec.ComputePool;
import dev.shardwise.core.tensor.DType;
import jdk.incubator.vector.DoubleVector;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.IntVector;
import jdk.incubator.vector.VectorSpecies;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;

/**
 * The element loop of every reduction: {@code dst[k][i] = op(src[0][i], src[1][i], ..., src[n-1][i])} for each
 * destination k, over one span of {@code count} elements (Vector API, then a scalar tail).
 *
 * <p>Sources are combined in index order 0, 1, ..., n-1 and each element's result does not depend on where the
 * span starts or how it is split, so every rank and every run get the same bits. AVG divides the sum by n
 * (integer division, truncating, for I32). A destination may be one of the sources: each element is read from
 * every source before it is written. Public so that every backend (the {@code mpi} backend reduces what MPI
 * moved) computes the same bits as {@code local}.
 */
public final class ReduceKernels {
    private ReduceKernels() { }

    /** Elements below which {@link #reduceOnPool} reduces on the calling thread alone. */
    private static final long PARALLEL_MIN_ELEMENTS = 1 << 16;

    private static final VectorSpecies<Float> F = FloatVector.SPECIES_PREFERRED;
    private static final VectorSpecies<Double> D = DoubleVector.SPECIES_PREFERRED;
    private static final VectorSpecies<Integer> I = IntVector.SPECIES_PREFERRED;
    private static final ByteOrder LE = ByteOrder.LITTLE_ENDIAN;
    private static final ValueLayout.OfFloat FLOAT = ValueLayout.JAVA_FLOAT_UNALIGNED;
    private static final ValueLayout.OfDouble DOUBLE = ValueLayout.JAVA_DOUBLE_UNALIGNED;
    private static final ValueLayout.OfInt INT = ValueLayout.JAVA_INT_UNALIGNED;

    /**
     * Reduces elements [0, count) of the spans starting at byte {@code srcOff} of every source into the spans
     * starting at byte {@code dstOff} of every destination.
     *
     * @throws UnsupportedOperationException for BF16 (reduce in F32 and convert)
     */
    public static void reduce(DType dtype, ReduceOp op, MemorySegment[] src, long srcOff, MemorySegment[] dst, long dstOff, long count) {
        switch (dtype) {
            case F32 -> reduceF32(op, src, srcOff, dst, dstOff, count);
            case F64 -> reduceF64(op, src, srcOff, dst, dstOff, count);
            case I32 -> reduceI32(op, src, srcOff, dst, dstOff, count);
            case BF16 -> throw new UnsupportedOperationException(
                    "reductions over bf16 are not supported: reduce an f32 copy and convert back to bf16");
        }
    }

    /**
     * {@link #reduce}, split over the calling thread's {@link ComputePool#current()} when the span is large (at
     * multiples of 64 elements; the bits do not depend on the split).
     */
    public static void reduceOnPool(DType dtype, ReduceOp op, MemorySegment[] src, long srcOff, MemorySegment[] dst, long dstOff, long count) {
        ComputePool pool = ComputePool.current();
        int tasks = (int) Math.min(pool.threads() * 4L, count / PARALLEL_MIN_ELEMENTS);
        if (tasks <= 1) {
            reduce(dtype, op, src, srcOff, dst, dstOff, count);
            return;
        }
        int es = dtype.byteSize();
        pool.parallelFor(tasks, t -> {
            long lo = count * t / tasks & ~63L, hi = t == tasks - 1 ? count : count * (t + 1) / tasks & ~63L;
            reduce(dtype, op, src, srcOff + lo * es, dst, dstOff + lo * es, hi - lo);
        });
    }

    private static void reduceF32(ReduceOp op, MemorySegment[] src, long srcOff, MemorySegment[] dst, long dstOff, long count) {
        int n = src.length;
        boolean max = op == ReduceOp.MAX, avg = op == ReduceOp.AVG;
        float div = n;
        long L = F.length();
        long i = 0;
        if (n == 2 && !max && dst.length <= 2) {
            // The common case, two ranks summing, without the loops over sources and destinations.
            MemorySegment a = src[0], b = src[1], d0 = dst[0], d1 = dst.length == 2 ? dst[1] : null;
            for (; i <= count - L; i += L) {
                FloatVector v = FloatVector.fromMemorySegment(F, a, srcOff + 4 * i, LE)
                        .add(FloatVector.fromMemorySegment(F, b, srcOff + 4 * i, LE));
                if (avg) v = v.div(div);
                v.intoMemorySegment(d0, dstOff + 4 * i, LE);
                if (d1 != null) v.intoMemorySegment(d1, dstOff + 4 * i, LE);
            }
        }
        for (; i <= count - L; i += L) {
            long so = srcOff + 4 * i;
            FloatVector v = FloatVector.fromMemorySegment(F, src[0], so, LE);
            for (int p = 1; p < n; p++) {
                FloatVector w = FloatVector.fromMemorySegment(F, src[p], so, LE);
                v = max ? v.max(w) : v.add(w);
            }
            if (avg) v = v.div(div);
            for (MemorySegment d : dst) v.intoMemorySegment(d, dstOff + 4 * i, LE);
        }
        for (; i < count; i++) {
            long so = srcOff + 4 * i;
            float v = src[0].get(FLOAT, so);
            for (int p = 1; p < n; p++) {
                float w = src[p].get(FLOAT, so);
                v = max ? Math.max(v, w) : v + w;
            }
            if (avg) v = v / div;
            for (MemorySegment d : dst) d.set(FLOAT, dstOff + 4 * i, v);
        }
    }

    private static void reduceF64(ReduceOp op, MemorySegment[] src, long srcOff, MemorySegment[] dst, long dstOff, long count) {
        int n = src.length;
        boolean max = op == ReduceOp.MAX, avg = op == ReduceOp.AVG;
        double div = n;
        long L = D.length();
        long i = 0;
        for (; i <= count - L; i += L) {
            long so = srcOff + 8 * i;
            DoubleVector v = DoubleVector.fromMemorySegment(D, src[0], so, LE);
            for (int p = 1; p < n; p++) {
                DoubleVector w = DoubleVector.fromMemorySegment(D, src[p], so, LE);
                v = max ? v.max(w) : v.add(w);
            }
            if (avg) v = v.div(div);
            for (MemorySegment d : dst) v.intoMemorySegment(d, dstOff + 8 * i, LE);
        }
        for (; i < count; i++) {
            long so = srcOff + 8 * i;
            double v = src[0].get(DOUBLE, so);
            for (int p = 1; p < n; p++) {
                double w = src[p].get(DOUBLE, so);
                v = max ? Math.max(v, w) : v + w;
            }
            if (avg) v = v / div;
            for (MemorySegment d : dst) d.set(DOUBLE, dstOff + 8 * i, v);
        }
    }

    private static void reduceI32(ReduceOp op, MemorySegment[] src, long srcOff, MemorySegment[] dst, long dstOff, long count) {
        int n = src.length;
        boolean max = op == ReduceOp.MAX, avg = op == ReduceOp.AVG;
        long L = I.length();
        long i = 0;
        for (; i <= count - L; i += L) {
            long so = srcOff + 4 * i;
            IntVector v = IntVector.fromMemorySegment(I, src[0], so, LE);
            for (int p = 1; p < n; p++) {
                IntVector w = IntVector.fromMemorySegment(I, src[p], so, LE);
                v = max ? v.max(w) : v.add(w);
            }
            if (avg) v = v.div(n);
            for (MemorySegment d : dst) v.intoMemorySegment(d, dstOff + 4 * i, LE);
        }
        for (; i < count; i++) {
            long so = srcOff + 4 * i;
            int v = src[0].get(INT, so);
            for (int p = 1; p < n; p++) {
                int w = src[p].get(INT, so);
                v = max ? Math.max(v, w) : v + w;
            }
            if (avg) v = v / n;
            for (MemorySegment d : dst) d.set(INT, dstOff + 4 * i, v);
        }
    }
}
