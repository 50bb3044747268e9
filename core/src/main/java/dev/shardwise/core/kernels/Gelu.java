package dev.shardwise.core.kernels;

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
 * GELU activation (Hendrycks and Gimpel 2016) in the tanh approximation GPT-2 uses:
 * {@code gelu(x) = 0.5 · x · (1 + tanh(sqrt(2/π) · (x + 0.044715 · x³)))}.
 *
 * <p>Shapes: any tensor {@code x} with unit inner stride (rows may be padded); {@code out}, {@code dx},
 * {@code dout} have x's shape. F32 uses the Vector API with the identity {@code 0.5·(1 + tanh(u)) = sigmoid(2u)}
 * and an inlined exponential (relative error below 1e-7); F64 a float64 reference of the tanh form.
 * Elementwise, so bit-identical for any thread count.
 */
public final class Gelu {
    private Gelu() { }

    /** sqrt(2 / π). */
    static final double K = Math.sqrt(2.0 / Math.PI);
    /** The cubic coefficient of the tanh approximation. */
    static final double C3 = 0.044715;

    /**
     * {@code out = gelu(x)} elementwise; {@code out} may be {@code x}.
     *
     * @throws IllegalArgumentException if shapes or dtypes disagree
     */
    public static void forward(Tensor out, Tensor x) {
        String op = "Gelu.forward";
        DType dt = Kernels.floatType(op, new String[]{"out", "x"}, out, x);
        Kernels.sameShape(op, "out", out, "x", x);
        Rows o = Rows.of(op, "out", out), r = Rows.of(op, "x", x);
        MemorySegment os = o.segment(), xs = r.segment();
        if (dt == DType.F32) {
            Kernels.forStrips((oo, xo, u2, u3, u4, len) -> forwardF32(os, oo, xs, xo, len), o, r);
        } else {
            Kernels.forStrips((oo, xo, u2, u3, u4, len) -> {
                for (int i = 0; i < len; i++) {
                    double v = xs.get(ValueLayout.JAVA_DOUBLE_UNALIGNED, xo + 8L * i);
                    os.set(ValueLayout.JAVA_DOUBLE_UNALIGNED, oo + 8L * i, 0.5 * v * (1 + Math.tanh(K * (v + C3 * v * v * v))));
                }
            }, o, r);
        }
    }

    /**
     * Accumulates {@code dx += dout · gelu'(x)}, where
     * {@code gelu'(x) = 0.5 · (1 + t) + 0.5 · x · (1 - t²) · sqrt(2/π) · (1 + 3 · 0.044715 · x²)} and
     * {@code t = tanh(sqrt(2/π) · (x + 0.044715 · x³))}.
     *
     * @throws IllegalArgumentException if shapes or dtypes disagree
     */
    public static void backward(Tensor dx, Tensor dout, Tensor x) {
        backward("Gelu.backward", dx, dout, x, true);
    }

    /**
     * {@code dx = dout · gelu'(x)}, overwriting dx without reading it (for a gradient buffer nothing else writes,
     * which then needs no zeroing); the same values as {@link #backward} into a zeroed dx. {@code dx} may be
     * {@code dout} (elementwise: each element is read before it is written).
     *
     * @throws IllegalArgumentException if shapes or dtypes disagree
     */
    public static void backwardInto(Tensor dx, Tensor dout, Tensor x) {
        backward("Gelu.backwardInto", dx, dout, x, false);
    }

    private static void backward(String op, Tensor dx, Tensor dout, Tensor x, boolean accumulate) {
        DType dt = Kernels.floatType(op, new String[]{"dx", "dout", "x"}, dx, dout, x);
        Kernels.sameShape(op, "dx", dx, "x", x);
        Kernels.sameShape(op, "dout", dout, "x", x);
        Rows a = Rows.of(op, "dx", dx), g = Rows.of(op, "dout", dout), r = Rows.of(op, "x", x);
        MemorySegment as = a.segment(), gs = g.segment(), xs = r.segment();
        if (dt == DType.F32) {
            if (accumulate) {
                Kernels.forStrips((ao, go, xo, u3, u4, len) -> backwardF32(as, ao, gs, go, xs, xo, len), a, g, r);
            } else {
                Kernels.forStrips((ao, go, xo, u3, u4, len) -> backwardIntoF32(as, ao, gs, go, xs, xo, len), a, g, r);
            }
        } else {
            Kernels.forStrips((ao, go, xo, u3, u4, len) -> {
                for (int i = 0; i < len; i++) {
                    double v = xs.get(ValueLayout.JAVA_DOUBLE_UNALIGNED, xo + 8L * i);
                    double t = Math.tanh(K * (v + C3 * v * v * v));
                    double grad = 0.5 * (1 + t) + 0.5 * v * (1 - t * t) * K * (1 + 3 * C3 * v * v);
                    double d = gs.get(ValueLayout.JAVA_DOUBLE_UNALIGNED, go + 8L * i);
                    long at = ao + 8L * i;
                    double base = accumulate ? as.get(ValueLayout.JAVA_DOUBLE_UNALIGNED, at) : 0;
                    as.set(ValueLayout.JAVA_DOUBLE_UNALIGNED, at, base + d * grad);
                }
            }, a, g, r);
        }
    }

    private static final float C3F = (float) C3, C3X3F = (float) (3 * C3);

    // 0.5·(1 + tanh(u)) = sigmoid(2u), so gelu(x) = x · s with s = 1 / (1 + e^(-2u)), and
    // gelu'(x) = s + 2x · s·(1 - s) · k·(1 + 3c·x²), since 1 - tanh²(u) = 4s(1 - s). One inlined exponential and
    // one division per element (the out-of-line SVML tanh measured about twice as slow in these loops).
    private static final float K2 = (float) (2 * K);

    private static void forwardF32(MemorySegment os, long oo, MemorySegment xs, long xo, int len) {
        FloatVector one = FloatVector.broadcast(F, 1f);
        int i = 0;
        for (; i <= len - L; i += L) {
            FloatVector v = load(xs, xo + 4L * i);
            FloatVector minus2u = v.mul(v).fma(C3F, 1f).mul(v).mul(-K2);        // -2k · (x + c·x³)
            FloatVector s = one.div(VecOps.exp(minus2u).add(one));
            v.mul(s).intoMemorySegment(os, oo + 4L * i, LE);
        }
        for (; i < len; i++) {
            float v = get(xs, xo + 4L * i);
            float s = (float) (1 / (1 + Math.exp(-K2 * (v + C3F * v * v * v))));
            put(os, oo + 4L * i, v * s);
        }
    }

    private static void backwardF32(MemorySegment as, long ao, MemorySegment gs, long go, MemorySegment xs, long xo, int len) {
        int i = 0;
        for (; i <= len - L; i += L) {
            gradF32(load(xs, xo + 4L * i)).fma(load(gs, go + 4L * i), load(as, ao + 4L * i)).intoMemorySegment(as, ao + 4L * i, LE);
        }
        for (; i < len; i++) put(as, ao + 4L * i, Math.fma(gradF32(get(xs, xo + 4L * i)), get(gs, go + 4L * i), get(as, ao + 4L * i)));
    }

    private static void backwardIntoF32(MemorySegment as, long ao, MemorySegment gs, long go, MemorySegment xs, long xo, int len) {
        int i = 0;
        for (; i <= len - L; i += L) {
            gradF32(load(xs, xo + 4L * i)).mul(load(gs, go + 4L * i)).intoMemorySegment(as, ao + 4L * i, LE);
        }
        // fma(g, d, 0) rounds as g·d does, so these are the bits backward gives into zeros
        for (; i < len; i++) put(as, ao + 4L * i, gradF32(get(xs, xo + 4L * i)) * get(gs, go + 4L * i));
    }

    /** gelu'(x) lane-wise: s + 2x·s(1-s)·k(1+3cx²) with s = sigmoid(2u); constants built here (see VecOps.exp). */
    private static FloatVector gradF32(FloatVector v) {
        FloatVector one = FloatVector.broadcast(F, 1f);
        FloatVector x2 = v.mul(v);
        FloatVector minus2u = x2.fma(C3F, 1f).mul(v).mul(-K2);
        FloatVector s = one.div(VecOps.exp(minus2u).add(one));
        FloatVector dinner = x2.fma(C3X3F, 1f).mul(K2);                       // 2k · (1 + 3c·x²)
        return s.mul(one.sub(s)).mul(v).fma(dinner, s);                       // s + 2x·s(1-s)·k(1+3cx²)
    }

    private static float gradF32(float v) {
        float s = (float) (1 / (1 + Math.exp(-K2 * (v + C3F * v * v * v))));
        return s + v * s * (1 - s) * K2 * (1 + C3X3F * v * v);
    }
}
