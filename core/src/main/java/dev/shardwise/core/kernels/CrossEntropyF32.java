package dev.shardwise.core.kernels;

import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorOperators;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

import static dev.shardwise.core.kernels.Kernels.F;
import static dev.shardwise.core.kernels.Kernels.L;
import static dev.shardwise.core.kernels.Kernels.LE;

/** Vector API cross-entropy (see {@link CrossEntropy}): online max/sum-exp pass, then a gradient pass. */
final class CrossEntropyF32 {
    private CrossEntropyF32() { }

    /** Floats per block of the online pass: 8 KiB, read twice from L1 (max, then sum of exponentials). */
    private static final int BLOCK = 2048;

    static void run(Rows losses, Rows d, Rows x, Rows targets, float scale, boolean backward) {
        int v = x.cols();
        Kernels.forRows(x.rows(), v, (from, to) -> {
            for (int n = from; n < to; n++) {
                int target = targets.segment().get(ValueLayout.JAVA_INT_UNALIGNED, targets.base() + 4L * n);
                long lOff = losses.base() + 4L * n;
                if (target == CrossEntropy.IGNORE_INDEX) {
                    losses.segment().set(ValueLayout.JAVA_FLOAT_UNALIGNED, lOff, 0f);
                    if (backward) VecOps.zero(d.segment(), d.row(n), v);
                    continue;
                }
                MemorySegment xs = x.segment();
                long xo = x.row(n);
                // pass 1: running max m and sum s of exp(x - m), rescaled when m grows
                float m = Float.NEGATIVE_INFINITY;
                double s = 0;
                for (int b = 0; b < v; b += BLOCK) {
                    int len = Math.min(BLOCK, v - b);
                    long bo = xo + 4L * b;
                    float bm = VecOps.max(xs, bo, len);
                    if (bm > m) {
                        s *= Math.exp((double) m - bm);
                        m = bm;
                    }
                    s += sumExp(xs, bo, len, m);
                }
                double logZ = m + Math.log(s);
                float xt = xs.get(ValueLayout.JAVA_FLOAT_UNALIGNED, xo + 4L * target);
                losses.segment().set(ValueLayout.JAVA_FLOAT_UNALIGNED, lOff, (float) (logZ - xt));
                if (backward) {
                    // pass 2: dlogits = exp(x - m) * (scale / s), minus scale at the target
                    float f = (float) (scale / s);
                    long dOff = d.row(n);
                    writeGrad(d.segment(), dOff, xs, xo, v, m, f);
                    long at = dOff + 4L * target;
                    MemorySegment ds = d.segment();
                    ds.set(ValueLayout.JAVA_FLOAT_UNALIGNED, at, ds.get(ValueLayout.JAVA_FLOAT_UNALIGNED, at) - scale);
                }
            }
        });
    }

    private static double sumExp(MemorySegment s, long off, int len, float m) {
        FloatVector vm = FloatVector.broadcast(F, m);
        FloatVector a = FloatVector.zero(F), b = FloatVector.zero(F);
        int i = 0;
        for (; i <= len - 2 * L; i += 2 * L) {
            a = a.add(FloatVector.fromMemorySegment(F, s, off + 4L * i, LE).sub(vm).lanewise(VectorOperators.EXP));
            b = b.add(FloatVector.fromMemorySegment(F, s, off + 4L * (i + L), LE).sub(vm).lanewise(VectorOperators.EXP));
        }
        double r = a.add(b).reduceLanes(VectorOperators.ADD);
        for (; i < len; i++) r += (float) Math.exp(s.get(ValueLayout.JAVA_FLOAT_UNALIGNED, off + 4L * i) - m);
        return r;
    }

    private static void writeGrad(MemorySegment ds, long dOff, MemorySegment xs, long xo, int v, float m, float f) {
        FloatVector vm = FloatVector.broadcast(F, m);
        FloatVector vf = FloatVector.broadcast(F, f);
        int i = 0;
        for (; i <= v - L; i += L) {
            FloatVector e = FloatVector.fromMemorySegment(F, xs, xo + 4L * i, LE).sub(vm).lanewise(VectorOperators.EXP);
            e.mul(vf).intoMemorySegment(ds, dOff + 4L * i, LE);
        }
        for (; i < v; i++) {
            float e = (float) Math.exp(xs.get(ValueLayout.JAVA_FLOAT_UNALIGNED, xo + 4L * i) - m);
            ds.set(ValueLayout.JAVA_FLOAT_UNALIGNED, dOff + 4L * i, e * f);
        }
    }
}
