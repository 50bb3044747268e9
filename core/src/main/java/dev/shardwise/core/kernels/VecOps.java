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
        // the steps written out with constant offsets: the loop form (slice by a variable) was not intrinsified
        // and boxed a vector per step, about 100 ns per call
        int n = v.length();
        for (int half = n / 2; half > 8; half /= 2) v = v.add(v.slice(half));   // vectors above 512 bits
        if (n >= 16) v = v.add(v.slice(8));
        if (n >= 8) v = v.add(v.slice(4));
        if (n >= 4) v = v.add(v.slice(2));
        if (n >= 2) v = v.add(v.slice(1));
        return v.lane(0);
    }

    /** Σ of the lanes in the fixed pairwise order of {@link #sumLanes(FloatVector)}. */
    static double sumLanes(jdk.incubator.vector.DoubleVector v) {
        int n = v.length();
        for (int half = n / 2; half > 4; half /= 2) v = v.add(v.slice(half));    // vectors above 512 bits
        if (n >= 8) v = v.add(v.slice(4));
        if (n >= 4) v = v.add(v.slice(2));
        if (n >= 2) v = v.add(v.slice(1));
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

    /*
     * e^x = 2^y with y = x·log2(e) = k + f, k = round(y), f in [-1/2, 1/2]: 2^f is a degree-6 polynomial (our own
     * fit for least maximum relative error on [-1/2, 1/2]: 2e-9 in exact arithmetic, 8e-8 evaluated in f32) and 2^k
     * is built in the exponent bits. Adding BIAS = 1.5·2^23 + 127 to y rounds it to an integer (ulp 1 there) and
     * leaves k + 127 in the low mantissa bits of t, so shifting t's bits left by 23 gives the float 2^k directly.
     * Clamping t's bits (as ints, one instruction each) to k + 127 in [0, 254] makes 2^k = +0 below (flush to
     * zero) and 2^127 above. 13 vector operations per call; the previous Cody-Waite form with float clamps took
     * 21 and measured 1.5x slower in the cross-entropy loop.
     *
     * The constants are broadcast from scalars inside the method, not kept in static final FloatVector fields: a
     * vector field's lanes are read from its heap array, and after a store to a MemorySegment (which may alias
     * any heap array) C2 reloads them on every iteration instead of keeping them in registers. Measured: the
     * cross-entropy row loop, 0.46 -> 0.33 ns per logit.
     */
    private static final float LOG2E = 1.44269504f;
    private static final float BIAS = 12583039f;                                   // 1.5 · 2^23 + 127
    private static final int K_LO = Float.floatToRawIntBits(12582912f);            // t's bits for k = -127
    private static final int K_HI = Float.floatToRawIntBits(12583166f);            // t's bits for k = 127
    private static final float C6 = 1.5353361959569156e-4f, C5 = 1.3398875016719103e-3f, C4 = 9.61843691766262e-3f,
            C3 = 5.5503323674201965e-2f, C2 = 0.24022647738456726f, C1 = 0.6931471824645996f;
    /** Bounds of {@link #exp}'s clamp: e^-104 is below the smallest subnormal; 88.3 keeps k at most 127. */
    private static final float EXP_LO = -104f, EXP_HI = 88.3f;

    /**
     * e^x lane-wise, inlined (unlike {@code lanewise(EXP)}, whose out-of-line SVML call spills the loop's
     * registers and measured twice as slow in the cross-entropy loop). Relative error below
     * 1.2e-7 + |x|·1.4e-8 (the second term from log2(e) rounded to f32) for x in [-87.6, 88.3]; e^x below
     * -87.6 is 0 (flushed: it would be subnormal); x is clamped to at most 88.3 (so +inf gives about 2.2e38);
     * NaN propagates.
     */
    static FloatVector exp(FloatVector x) {
        // clamp with compare + blend: Java's max/min semantics (NaN, -0.0) cost several instructions each on x86
        FloatVector lo = FloatVector.broadcast(F, EXP_LO), hi = FloatVector.broadcast(F, EXP_HI);
        x = x.blend(lo, x.compare(VectorOperators.LT, lo)).blend(hi, x.compare(VectorOperators.GT, hi));
        return expUnchecked(x);
    }

    /**
     * {@link #exp} without its clamp, for loops that check their results anyway (four operations fewer):
     * the same bits as {@code exp} for x in [-104, 88.3]; above that a value of at least 2e37, +inf or NaN;
     * below -104 either 0 or NaN (NaN for -inf and for x below about -7e12); NaN for NaN.
     */
    static FloatVector expUnchecked(FloatVector x) {
        FloatVector log2e = FloatVector.broadcast(F, LOG2E), bias = FloatVector.broadcast(F, BIAS);
        FloatVector t = x.fma(log2e, bias);                    // low mantissa bits: k + 127
        FloatVector f = x.fma(log2e, bias.sub(t));             // y - k, exact product then one rounding
        IntVector biased = t.reinterpretAsInts().lanewise(VectorOperators.MAX, K_LO).lanewise(VectorOperators.MIN, K_HI);
        FloatVector twoK = biased.lanewise(VectorOperators.LSHL, 23).reinterpretAsFloats();
        FloatVector p = FloatVector.broadcast(F, C6).fma(f, FloatVector.broadcast(F, C5)).fma(f, FloatVector.broadcast(F, C4))
                .fma(f, FloatVector.broadcast(F, C3)).fma(f, FloatVector.broadcast(F, C2)).fma(f, FloatVector.broadcast(F, C1))
                .fma(f, FloatVector.broadcast(F, 1f));
        return p.mul(twoK);
    }
}
