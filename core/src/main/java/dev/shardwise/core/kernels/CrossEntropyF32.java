package dev.shardwise.core.kernels;

import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorOperators;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

import static dev.shardwise.core.kernels.Kernels.F;
import static dev.shardwise.core.kernels.Kernels.L;
import static dev.shardwise.core.kernels.Kernels.LE;
import static dev.shardwise.core.kernels.VecOps.get;
import static dev.shardwise.core.kernels.VecOps.load;
import static dev.shardwise.core.kernels.VecOps.put;

/**
 * Vector API cross-entropy (see {@link CrossEntropy}).
 *
 * <p>Per row, in blocks of {@link #BLOCK} logits (L1-resident): {@code e = exp(x - m)} is computed against a
 * reference m, summed, and, when a gradient is wanted, stored in dlogits; the same loop tracks the block's
 * maximum. m starts as the maximum of the first 16 logits and is raised (and the block recomputed) only when
 * a block's maximum exceeds it by more than {@link #HEADROOM}, so e stays below e^HEADROOM and never
 * overflows, and the running sum is rescaled by {@code exp(m_old - m)} when m moves. A second pass over
 * the row, still in L2, multiplies each block by {@code exp(m_block - m) · scale / sum}. One exponential per
 * logit in all, and the logits are read from memory once.
 */
final class CrossEntropyF32 {
    private CrossEntropyF32() { }

    /** Floats per block: 8 KiB, so a block that must be recomputed is still in L1. */
    static final int BLOCK = 2048;
    /** How far a logit may exceed the reference maximum before the block is recomputed (e^20 ≈ 4.9e8). */
    static final float HEADROOM = 20f;

    static void run(Rows losses, Rows d, Rows x, Rows targets, float scale, boolean backward) {
        int v = x.cols();
        int blocks = (v + BLOCK - 1) / BLOCK;
        Kernels.forRows(x.rows(), v, (from, to) -> {
            float[] blockMax = new float[blocks];
            float[] blockMaxOut = new float[1];
            MemorySegment xs = x.segment();
            for (int n = from; n < to; n++) {
                int target = targets.segment().get(ValueLayout.JAVA_INT_UNALIGNED, targets.base() + 4L * n);
                long lOff = losses.base() + 4L * n;
                if (target == CrossEntropy.IGNORE_INDEX) {
                    put(losses.segment(), lOff, 0f);
                    if (backward) VecOps.zero(d.segment(), d.row(n), v);
                    continue;
                }
                long xo = x.row(n);
                float xt = get(xs, xo + 4L * target);   // read before an in-place gradient overwrites it
                float m = VecOps.max(xs, xo, Math.min(v, L));
                double s = 0;
                MemorySegment ds = backward ? d.segment() : null;
                long dOff = backward ? d.row(n) : 0;
                for (int k = 0; k < blocks; k++) {
                    int b = k * BLOCK, len = Math.min(BLOCK, v - b);
                    double bs = exps(ds, dOff + 4L * b, xs, xo + 4L * b, len, m, blockMaxOut);
                    if (blockMaxOut[0] > m + HEADROOM) {        // rare: a much larger logit; move the reference up
                        float bm = blockMaxOut[0];
                        s *= Math.exp((double) m - bm);
                        m = bm;
                        bs = exps(ds, dOff + 4L * b, xs, xo + 4L * b, len, m, blockMaxOut);
                    }
                    blockMax[k] = m;
                    s += bs;
                }
                put(losses.segment(), lOff, (float) (m + Math.log(s) - xt));
                if (backward) {
                    double f = scale / s;
                    for (int k = 0; k < blocks; k++) {
                        int b = k * BLOCK, len = Math.min(BLOCK, v - b);
                        float factor = (float) (f * Math.exp((double) blockMax[k] - m));
                        scaleInPlace(ds, dOff + 4L * b, len, factor);
                    }
                    long at = dOff + 4L * target;
                    put(ds, at, get(ds, at) - scale);
                }
            }
        });
    }

    /**
     * Returns the sum of e = exp(x - m) over a span and stores the span's maximum in {@code maxOut[0]}; stores e
     * into {@code ds} (which may be x) unless {@code ds} is null.
     */
    private static double exps(MemorySegment ds, long dOff, MemorySegment xs, long xOff, int len, float m, float[] maxOut) {
        FloatVector vm = FloatVector.broadcast(F, m);
        FloatVector a = FloatVector.zero(F), b = FloatVector.zero(F);
        FloatVector mx = FloatVector.broadcast(F, Float.NEGATIVE_INFINITY), my = mx;
        int i = 0;
        for (; i <= len - 2 * L; i += 2 * L) {
            FloatVector x0 = load(xs, xOff + 4L * i), x1 = load(xs, xOff + 4L * (i + L));
            mx = mx.max(x0);
            my = my.max(x1);
            FloatVector e0 = x0.sub(vm).lanewise(VectorOperators.EXP);
            FloatVector e1 = x1.sub(vm).lanewise(VectorOperators.EXP);
            if (ds != null) {
                e0.intoMemorySegment(ds, dOff + 4L * i, LE);
                e1.intoMemorySegment(ds, dOff + 4L * (i + L), LE);
            }
            a = a.add(e0);
            b = b.add(e1);
        }
        double r = a.add(b).reduceLanes(VectorOperators.ADD);
        float max = mx.max(my).reduceLanes(VectorOperators.MAX);
        for (; i < len; i++) {
            float x = get(xs, xOff + 4L * i);
            max = Math.max(max, x);
            float e = (float) Math.exp(x - m);
            if (ds != null) put(ds, dOff + 4L * i, e);
            r += e;
        }
        maxOut[0] = max;
        return r;
    }

    private static void scaleInPlace(MemorySegment s, long off, int len, float factor) {
        FloatVector vf = FloatVector.broadcast(F, factor);
        int i = 0;
        for (; i <= len - L; i += L) load(s, off + 4L * i).mul(vf).intoMemorySegment(s, off + 4L * i, LE);
        for (; i < len; i++) put(s, off + 4L * i, get(s, off + 4L * i) * factor);
    }
}
