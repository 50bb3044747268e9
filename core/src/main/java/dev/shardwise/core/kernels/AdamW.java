package dev.shardwise.core.kernels;

import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;
import jdk.incubator.vector.FloatVector;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

import static dev.shardwise.core.kernels.Kernels.L;
import static dev.shardwise.core.kernels.Kernels.LE;
import static dev.shardwise.core.kernels.VecOps.get;
import static dev.shardwise.core.kernels.VecOps.load;
import static dev.shardwise.core.kernels.VecOps.put;

/**
 * One AdamW step (Loshchilov and Hutter 2019: Adam with decoupled weight decay), in place on flat tensors:
 * <pre>
 *   m = β1·m + (1-β1)·g          v = β2·v + (1-β2)·g²
 *   m̂ = m / (1-β1^t)              v̂ = v / (1-β2^t)
 *   p = p - lr · (m̂ / (sqrt(v̂) + eps) + weightDecay · p)
 * </pre>
 * as in PyTorch's {@code AdamW} and llm.c. Shapes: {@code param, grad, m, v} any one shape, contiguous.
 * F32 uses the Vector API (bias corrections computed once in float64), F64 a float64 reference.
 * Elementwise, so bit-identical for any thread count.
 */
public final class AdamW {
    private AdamW() { }

    /**
     * Updates {@code param}, {@code m} and {@code v} in place from {@code grad}.
     *
     * @param step 1-based number of this step (t in the bias corrections)
     * @throws IllegalArgumentException if shapes or dtypes disagree, a tensor is not contiguous, or {@code step < 1}
     */
    public static void step(Tensor param, Tensor grad, Tensor m, Tensor v, double lr, double beta1, double beta2,
                            double eps, double weightDecay, long step) {
        step(param, grad, m, v, lr, beta1, beta2, eps, weightDecay, step, 1.0);
    }

    /**
     * As {@link #step(Tensor, Tensor, Tensor, Tensor, double, double, double, double, double, long)} with the
     * gradient {@code g = gradScale · grad} (grad itself is not changed): gradient clipping folded into the
     * update instead of a pass that scales the gradients first. F32 rounds {@code gradScale} to float and each
     * product to float, so the update has the bits of scaling grad in place by that float and then stepping.
     *
     * @param step 1-based number of this step (t in the bias corrections)
     * @throws IllegalArgumentException if shapes or dtypes disagree, a tensor is not contiguous, or {@code step < 1}
     */
    public static void step(Tensor param, Tensor grad, Tensor m, Tensor v, double lr, double beta1, double beta2,
                            double eps, double weightDecay, long step, double gradScale) {
        String op = "AdamW.step";
        if (step < 1) throw new IllegalArgumentException(op + ": step is " + step + " but is 1-based (the first step is 1)");
        DType dt = Kernels.floatType(op, new String[]{"param", "grad", "m", "v"}, param, grad, m, v);
        String[] names = {"param", "grad", "m", "v"};
        Tensor[] ts = {param, grad, m, v};
        Rows[] rs = new Rows[4];
        for (int k = 0; k < 4; k++) {
            Kernels.sameShape(op, names[k], ts[k], "param", param);
            Kernels.contiguous(op, names[k], ts[k]);
            rs[k] = Rows.of(op, names[k], ts[k].view(-1));
        }
        double c1 = 1 - Math.pow(beta1, step), c2 = 1 - Math.pow(beta2, step);
        MemorySegment ps = rs[0].segment(), gs = rs[1].segment(), ms = rs[2].segment(), vs = rs[3].segment();
        if (dt == DType.F32) {
            float b1 = (float) beta1, b2 = (float) beta2, ob1 = (float) (1 - beta1), ob2 = (float) (1 - beta2);
            float ic1 = (float) (1 / c1), ic2 = (float) (1 / c2), fe = (float) eps;
            float flr = (float) lr, decay = (float) (1 - lr * weightDecay), gs32 = (float) gradScale;
            Kernels.forStrips((po, go, mo, vo, z4, len) -> {
                int i = 0;
                for (; i <= len - L; i += L) {
                    FloatVector g = load(gs, go + 4L * i).mul(gs32);   // exact when gradScale is 1
                    FloatVector mv = load(ms, mo + 4L * i).mul(b1).add(g.mul(ob1));
                    FloatVector vv = load(vs, vo + 4L * i).mul(b2).add(g.mul(g).mul(ob2));
                    mv.intoMemorySegment(ms, mo + 4L * i, LE);
                    vv.intoMemorySegment(vs, vo + 4L * i, LE);
                    FloatVector upd = mv.mul(ic1).div(vv.mul(ic2).sqrt().add(fe));
                    FloatVector p = load(ps, po + 4L * i);
                    // p - lr·(upd + wd·p) = p·(1 - lr·wd) - lr·upd
                    upd.mul(-flr).add(p.mul(decay)).intoMemorySegment(ps, po + 4L * i, LE);
                }
                for (; i < len; i++) {
                    float g = get(gs, go + 4L * i) * gs32;
                    float mv = get(ms, mo + 4L * i) * b1 + g * ob1;
                    float vv = get(vs, vo + 4L * i) * b2 + g * g * ob2;
                    put(ms, mo + 4L * i, mv);
                    put(vs, vo + 4L * i, vv);
                    float upd = mv * ic1 / ((float) Math.sqrt(vv * ic2) + fe);
                    put(ps, po + 4L * i, upd * -flr + get(ps, po + 4L * i) * decay);
                }
            }, rs);
        } else {
            ValueLayout.OfDouble D = ValueLayout.JAVA_DOUBLE_UNALIGNED;
            Kernels.forStrips((po, go, mo, vo, z4, len) -> {
                for (int i = 0; i < len; i++) {
                    double g = gs.get(D, go + 8L * i) * gradScale;
                    double mv = beta1 * ms.get(D, mo + 8L * i) + (1 - beta1) * g;
                    double vv = beta2 * vs.get(D, vo + 8L * i) + (1 - beta2) * g * g;
                    ms.set(D, mo + 8L * i, mv);
                    vs.set(D, vo + 8L * i, vv);
                    double p = ps.get(D, po + 8L * i);
                    ps.set(D, po + 8L * i, p - lr * ((mv / c1) / (Math.sqrt(vv / c2) + eps) + weightDecay * p));
                }
            }, rs);
        }
    }
}
