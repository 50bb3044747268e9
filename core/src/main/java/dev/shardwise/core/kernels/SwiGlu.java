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
 * SwiGLU gating (Shazeer 2020, "GLU Variants Improve Transformer"), the LLaMA feed-forward nonlinearity:
 * {@code out = silu(gate) · up} with {@code silu(g) = g · sigmoid(g)}.
 *
 * <p>Shapes: {@code out, gate, up [N, H]} (any shape with unit inner stride; rows may be padded, so gate
 * and up may be the two halves of one fused [N, 2H] projection taken with {@code slice}). F32 uses the
 * Vector API, F64 a float64 reference. Elementwise, so bit-identical for any thread count.
 */
public final class SwiGlu {
    private SwiGlu() { }

    /**
     * {@code out = silu(gate) · up}; {@code out} may be {@code gate} or {@code up}.
     *
     * @throws IllegalArgumentException if shapes or dtypes disagree
     */
    public static void forward(Tensor out, Tensor gate, Tensor up) {
        String op = "SwiGlu.forward";
        DType dt = Kernels.floatType(op, new String[]{"out", "gate", "up"}, out, gate, up);
        Kernels.sameShape(op, "out", out, "gate", gate);
        Kernels.sameShape(op, "up", up, "gate", gate);
        Rows o = Rows.of(op, "out", out), g = Rows.of(op, "gate", gate), u = Rows.of(op, "up", up);
        MemorySegment os = o.segment(), gs = g.segment(), us = u.segment();
        if (dt == DType.F32) {
            Kernels.forStrips((oo, go, uo, z3, z4, len) -> {
                int i = 0;
                FloatVector one = FloatVector.broadcast(F, 1f);
                for (; i <= len - L; i += L) {
                    FloatVector gv = load(gs, go + 4L * i);
                    FloatVector sig = one.div(VecOps.exp(gv.neg()).add(one));
                    gv.mul(sig).mul(load(us, uo + 4L * i)).intoMemorySegment(os, oo + 4L * i, LE);
                }
                for (; i < len; i++) {
                    float gv = get(gs, go + 4L * i);
                    float sig = (float) (1 / (1 + Math.exp(-gv)));
                    put(os, oo + 4L * i, gv * sig * get(us, uo + 4L * i));
                }
            }, o, g, u);
        } else {
            Kernels.forStrips((oo, go, uo, z3, z4, len) -> {
                for (int i = 0; i < len; i++) {
                    double gv = gs.get(ValueLayout.JAVA_DOUBLE_UNALIGNED, go + 8L * i);
                    double uv = us.get(ValueLayout.JAVA_DOUBLE_UNALIGNED, uo + 8L * i);
                    os.set(ValueLayout.JAVA_DOUBLE_UNALIGNED, oo + 8L * i, gv / (1 + Math.exp(-gv)) * uv);
                }
            }, o, g, u);
        }
    }

    /**
     * Accumulates {@code dgate += dout · up · sigmoid(gate) · (1 + gate · (1 - sigmoid(gate)))} and
     * {@code dup += dout · silu(gate)}.
     *
     * @throws IllegalArgumentException if shapes or dtypes disagree
     */
    public static void backward(Tensor dgate, Tensor dup, Tensor dout, Tensor gate, Tensor up) {
        backward("SwiGlu.backward", dgate, dup, dout, gate, up, true);
    }

    /**
     * As {@link #backward}, overwriting dgate and dup without reading them (gradient buffers nothing else writes, which
     * then need no zeroing): the bits {@link #backward} gives into zeros. {@code dgate} may be {@code dout}
     * (elementwise: each element of dout is read before dgate's is written), so a backward needs no third buffer.
     *
     * @throws IllegalArgumentException if shapes or dtypes disagree
     */
    public static void backwardInto(Tensor dgate, Tensor dup, Tensor dout, Tensor gate, Tensor up) {
        backward("SwiGlu.backwardInto", dgate, dup, dout, gate, up, false);
    }

    private static void backward(String op, Tensor dgate, Tensor dup, Tensor dout, Tensor gate, Tensor up, boolean accumulate) {
        DType dt = Kernels.floatType(op, new String[]{"dgate", "dup", "dout", "gate", "up"}, dgate, dup, dout, gate, up);
        for (Object[] p : new Object[][]{{"dgate", dgate}, {"dup", dup}, {"dout", dout}, {"up", up}}) {
            Kernels.sameShape(op, (String) p[0], (Tensor) p[1], "gate", gate);
        }
        Rows dg = Rows.of(op, "dgate", dgate), du = Rows.of(op, "dup", dup), d = Rows.of(op, "dout", dout);
        Rows g = Rows.of(op, "gate", gate), u = Rows.of(op, "up", up);
        MemorySegment dgs = dg.segment(), dus = du.segment(), ds = d.segment(), gs = g.segment(), us = u.segment();
        if (dt == DType.F32) {
            Kernels.forStrips((dgo, duo, dOff, go, uo, len) -> {
                int i = 0;
                FloatVector one = FloatVector.broadcast(F, 1f), zero = FloatVector.zero(F);
                for (; i <= len - L; i += L) {
                    FloatVector gv = load(gs, go + 4L * i), dv = load(ds, dOff + 4L * i);
                    FloatVector sig = one.div(VecOps.exp(gv.neg()).add(one));
                    FloatVector silu = gv.mul(sig);
                    // d silu / dg = sig + g·sig·(1 - sig) = sig + silu·(1 - sig)
                    FloatVector dsilu = silu.fma(one.sub(sig), sig);
                    FloatVector baseGate = accumulate ? load(dgs, dgo + 4L * i) : zero, baseUp = accumulate ? load(dus, duo + 4L * i) : zero;
                    dv.mul(load(us, uo + 4L * i)).fma(dsilu, baseGate).intoMemorySegment(dgs, dgo + 4L * i, LE);
                    dv.fma(silu, baseUp).intoMemorySegment(dus, duo + 4L * i, LE);
                }
                for (; i < len; i++) {
                    float gv = get(gs, go + 4L * i), dv = get(ds, dOff + 4L * i);
                    float sig = (float) (1 / (1 + Math.exp(-gv)));
                    float silu = gv * sig;
                    float dsilu = Math.fma(silu, 1 - sig, sig);
                    float baseGate = accumulate ? get(dgs, dgo + 4L * i) : 0f, baseUp = accumulate ? get(dus, duo + 4L * i) : 0f;
                    put(dgs, dgo + 4L * i, Math.fma(dv * get(us, uo + 4L * i), dsilu, baseGate));
                    put(dus, duo + 4L * i, Math.fma(dv, silu, baseUp));
                }
            }, dg, du, d, g, u);
        } else {
            ValueLayout.OfDouble D = ValueLayout.JAVA_DOUBLE_UNALIGNED;
            Kernels.forStrips((dgo, duo, dOff, go, uo, len) -> {
                for (int i = 0; i < len; i++) {
                    double gv = gs.get(D, go + 8L * i), uv = us.get(D, uo + 8L * i), dv = ds.get(D, dOff + 8L * i);
                    double sig = 1 / (1 + Math.exp(-gv));
                    double baseGate = accumulate ? dgs.get(D, dgo + 8L * i) : 0, baseUp = accumulate ? dus.get(D, duo + 8L * i) : 0;
                    dgs.set(D, dgo + 8L * i, baseGate + dv * uv * sig * (1 + gv * (1 - sig)));
                    dus.set(D, duo + 8L * i, baseUp + dv * gv * sig);
                }
            }, dg, du, d, g, u);
        }
    }
}
