package dev.shardwise.core.kernels;

import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.IntVector;
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

    /**
     * Σ of the lanes in a fixed pairwise order (halves, then quarters, ...). {@code reduceLanes(ADD)} may add in
     * one order when interpreted and another once compiled, so a kernel using it changes its last bits when the
     * JIT kicks in; this stays the same, keeping runs (and resumed runs in a new JVM) bit-identical.
     */
    static float sumLanes(FloatVector v) {
        for (int half = v.length() / 2; half >= 1; half /= 2) v = v.add(v.slice(half));
        return v.lane(0);
    }

    /** Σ of the lanes in the fixed pairwise order of {@link #sumLanes(FloatVector)}. */
    static double sumLanes(jdk.incubator.vector.DoubleVector v) {
        for (int half = v.length() / 2; half >= 1; half /= 2) v = v.add(v.slice(half));
        return v.lane(0);
    }

    static float get(MemorySegment s, long off) {
        return s.get(FLOAT, off);
    }

    static void put(MemorySegment s, long off, float v) {
        s.set(FLOAT, off, v);
    }

    /**
     * Floats to skip (0..15) from byte offset {@code off} of {@code s} until a 64-byte boundary, so that the
     * vectors after them do not straddle cache lines (a split 64-byte store costs about twice as much);
     * 0 when the address is not even float-aligned. At most {@code len}.
     */
    static int headToAlign(MemorySegment s, long off, int len) {
        long address = s.address() + off;
        if ((address & 3) != 0) return 0;
        return (int) Math.min(len, ((64 - (address & 63)) & 63) >> 2);
    }

    /**
     * Maximum of the span. Lanes are combined with compare + blend rather than {@code max}, whose Java
     * semantics (NaN, -0.0) cost several instructions per vector on x86; a NaN in the vector part is
     * therefore skipped (callers that see NaN inputs get NaN from their exponentials anyway).
     */
    static float max(MemorySegment s, long off, int len) {
        int i = 0;
        float r = Float.NEGATIVE_INFINITY;
        if (len >= 2 * L) {
            FloatVector a = load(s, off), b = load(s, off + 4L * L);
            for (i = 2 * L; i <= len - 2 * L; i += 2 * L) {
                FloatVector x = load(s, off + 4L * i), y = load(s, off + 4L * (i + L));
                a = a.blend(x, x.compare(VectorOperators.GT, a));
                b = b.blend(y, y.compare(VectorOperators.GT, b));
            }
            r = a.blend(b, b.compare(VectorOperators.GT, a)).reduceLanes(VectorOperators.MAX);
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
        float r = sumLanes(a.add(b));
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
        float r = sumLanes(a.add(b));
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
        float r = sumLanes(a.add(b));
        for (; i < len; i++) r = Math.fma(get(s1, o1 + 4L * i), get(s2, o2 + 4L * i), r);
        return r;
    }

    static void zero(MemorySegment s, long off, long len) {
        FloatVector z = FloatVector.zero(F);
        long i = 0;
        for (; i <= len - L; i += L) z.intoMemorySegment(s, off + 4L * i, LE);
        for (; i < len; i++) put(s, off + 4L * i, 0f);
    }

    // exp(x) = 2^k · exp(r), k = round(x / ln 2), r = x - k·ln 2 in [-ln2/2, ln2/2] (Cody-Waite split of ln 2),
    // exp(r) by a degree-6 polynomial (Taylor-like coefficients tuned for float, as in the Cephes expf).
    private static final FloatVector EXP_HI = FloatVector.broadcast(F, 88.7f);
    private static final FloatVector EXP_LO = FloatVector.broadcast(F, -87.3f);
    private static final FloatVector LOG2E = FloatVector.broadcast(F, 1.44269504f);
    private static final FloatVector ROUND = FloatVector.broadcast(F, 12582912f);   // 1.5 · 2^23
    private static final FloatVector LN2_HI = FloatVector.broadcast(F, -0.693145751953125f);
    private static final FloatVector LN2_LO = FloatVector.broadcast(F, -1.428606765330187e-6f);
    private static final FloatVector P6 = FloatVector.broadcast(F, 1.9875691500e-4f);
    private static final FloatVector P5 = FloatVector.broadcast(F, 1.3981999507e-3f);
    private static final FloatVector P4 = FloatVector.broadcast(F, 8.3334519073e-3f);
    private static final FloatVector P3 = FloatVector.broadcast(F, 4.1665795894e-2f);
    private static final FloatVector P2 = FloatVector.broadcast(F, 1.6666665459e-1f);
    private static final FloatVector P1 = FloatVector.broadcast(F, 5.0000001201e-1f);
    private static final FloatVector ONE = FloatVector.broadcast(F, 1f);

    /**
     * e^x lane-wise, inlined (unlike {@code lanewise(EXP)}, whose out-of-line SVML call spills the loop's
     * registers and measured twice as slow in the cross-entropy loop). Relative error below 1e-7 (measured
     * 6.6e-8) for x in [-87.3, 88.7]; x is clamped to that range, so e^x stays finite and normal (x = -inf or
     * very negative x gives about 1e-38 instead of 0, x = +inf about 3e38); NaN propagates.
     */
    static FloatVector exp(FloatVector x) {
        // clamp with compare + blend: Java's max/min semantics (NaN, -0.0) cost several instructions each on x86
        x = x.blend(EXP_LO, x.compare(VectorOperators.LT, EXP_LO)).blend(EXP_HI, x.compare(VectorOperators.GT, EXP_HI));
        FloatVector t = x.fma(LOG2E, ROUND);                 // k sits in the low mantissa bits of t
        FloatVector k = t.sub(ROUND);
        FloatVector r = k.fma(LN2_HI, x);
        r = k.fma(LN2_LO, r);
        FloatVector p = P6.fma(r, P5).fma(r, P4).fma(r, P3).fma(r, P2).fma(r, P1);
        p = p.fma(r.mul(r), r).add(ONE);
        // 2^k: shifting t's bits left by 23 drops the bits of ROUND (its low 9 bits are zero) and leaves k << 23
        IntVector scale = t.reinterpretAsInts().lanewise(VectorOperators.LSHL, 23).add(127 << 23);
        return p.mul(scale.reinterpretAsFloats());
    }
}
