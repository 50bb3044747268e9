package dev.shardwise.core.kernels;

import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorOperators;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

import static dev.shardwise.core.kernels.Kernels.F;
import static dev.shardwise.core.kernels.Kernels.L;
import static dev.shardwise.core.kernels.Kernels.LE;

/**
 * Vector API reductions and maps over one contiguous f32 span ({@code len} floats at byte offset {@code off}).
 * Each reduction has a fixed order (two lane-wise accumulators, then the lanes, then a scalar tail), so a
 * span gives the same bits wherever it is computed.
 */
final class VecOps {
    private VecOps() { }

    static final ValueLayout.OfFloat FLOAT = ValueLayout.JAVA_FLOAT_UNALIGNED;

    static FloatVector load(MemorySegment s, long off) {
        return FloatVector.fromMemorySegment(F, s, off, LE);
    }

    static float get(MemorySegment s, long off) {
        return s.get(FLOAT, off);
    }

    static void put(MemorySegment s, long off, float v) {
        s.set(FLOAT, off, v);
    }

    static float max(MemorySegment s, long off, int len) {
        int i = 0;
        float r = Float.NEGATIVE_INFINITY;
        if (len >= 2 * L) {
            FloatVector a = load(s, off), b = load(s, off + 4L * L);
            for (i = 2 * L; i <= len - 2 * L; i += 2 * L) {
                a = a.max(load(s, off + 4L * i));
                b = b.max(load(s, off + 4L * (i + L)));
            }
            r = a.max(b).reduceLanes(VectorOperators.MAX);
        }
        for (; i < len; i++) r = Math.max(r, get(s, off + 4L * i));
        return r;
    }

    /** Sum of the span, accumulated in f32 lanes. */
    static float sum(MemorySegment s, long off, int len) {
        FloatVector a = FloatVector.zero(F), b = FloatVector.zero(F);
        int i = 0;
        for (; i <= len - 2 * L; i += 2 * L) {
            a = a.add(load(s, off + 4L * i));
            b = b.add(load(s, off + 4L * (i + L)));
        }
        float r = a.add(b).reduceLanes(VectorOperators.ADD);
        for (; i < len; i++) r += get(s, off + 4L * i);
        return r;
    }

    /** Sum of (x - c)^2 over the span. */
    static float sumSqDiff(MemorySegment s, long off, int len, float c) {
        FloatVector vc = FloatVector.broadcast(F, c);
        FloatVector a = FloatVector.zero(F), b = FloatVector.zero(F);
        int i = 0;
        for (; i <= len - 2 * L; i += 2 * L) {
            FloatVector u = load(s, off + 4L * i).sub(vc), w = load(s, off + 4L * (i + L)).sub(vc);
            a = u.fma(u, a);
            b = w.fma(w, b);
        }
        float r = a.add(b).reduceLanes(VectorOperators.ADD);
        for (; i < len; i++) {
            float u = get(s, off + 4L * i) - c;
            r = Math.fma(u, u, r);
        }
        return r;
    }

    /** Dot product of two spans. */
    static float dot(MemorySegment s1, long o1, MemorySegment s2, long o2, int len) {
        FloatVector a = FloatVector.zero(F), b = FloatVector.zero(F);
        int i = 0;
        for (; i <= len - 2 * L; i += 2 * L) {
            a = load(s1, o1 + 4L * i).fma(load(s2, o2 + 4L * i), a);
            b = load(s1, o1 + 4L * (i + L)).fma(load(s2, o2 + 4L * (i + L)), b);
        }
        float r = a.add(b).reduceLanes(VectorOperators.ADD);
        for (; i < len; i++) r = Math.fma(get(s1, o1 + 4L * i), get(s2, o2 + 4L * i), r);
        return r;
    }

    static void zero(MemorySegment s, long off, long len) {
        FloatVector z = FloatVector.zero(F);
        long i = 0;
        for (; i <= len - L; i += L) z.intoMemorySegment(s, off + 4L * i, LE);
        for (; i < len; i++) put(s, off + 4L * i, 0f);
    }
}
