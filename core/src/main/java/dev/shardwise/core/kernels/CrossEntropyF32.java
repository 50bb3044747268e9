package dev.shardwise.core.kernels;

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
 * Vector API cross-entropy (see {@link CrossEntropy}).
 *
 * <p>Per row, in blocks of about {@link #BLOCK} logits (L1-resident) that start at 64-byte boundaries (the first
 * block also takes the unaligned head of the row): {@code e = exp(x - m)} is computed against a reference m,
 * summed, and, when a gradient is wanted, stored in dlogits. m starts as the maximum of the first 16 logits.
 * The exponential is {@link VecOps#expUnchecked}; a block whose sum exceeds {@code e^HEADROOM} (so some logit
 * is more than {@link #HEADROOM} above m, or the block is simply large) or is NaN (a logit far below m, such as
 * -inf, or NaN) moves m up to the block's maximum if that is higher and is recomputed with the clamped
 * {@link VecOps#exp}, rescaling the running sum by {@code exp(m_old - m)}; so stored values stay below about
 * {@code 2048 · e^20} and never overflow, and no per-element maximum is needed. A second pass over the row,
 * still in L2, multiplies each block by {@code exp(m_block - m) · scale / sum}. One exponential per logit in
 * all, and the logits are read from memory once.
 */
final class CrossEntropyF32 {
    private CrossEntropyF32() { }

    /** Floats per block: 8 KiB, so a block that must be recomputed is still in L1. */
    static final int BLOCK = 2048;
    /** How far a logit may exceed the reference maximum before its block is recomputed. */
    static final float HEADROOM = 20f;
    /** A block sum above this (e^HEADROOM ≈ 4.9e8) triggers the recomputation. */
    private static final double SUM_LIMIT = Math.exp(HEADROOM);

    static void run(Rows losses, Rows d, Rows x, Rows targets, float scale, boolean backward) {
        int v = x.cols();
        Kernels.forRows(x.rows(), v, (from, to) -> {
            float[] blockMax = new float[v / BLOCK + 1];
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
                // blocks start at 64-byte boundaries (the first one takes the unaligned head too), so only the
                // first and last block of a row have scalar heads and tails (about 8 ns per element)
                int head = VecOps.headToAlign(xs, xo, v);
                int blocks = Math.max(1, (v - head + BLOCK - 1) / BLOCK);
                float xt = get(xs, xo + 4L * target);   // read before an in-place gradient overwrites it
                float m = VecOps.max(xs, xo, Math.min(v, L));
                double s = 0;
                MemorySegment ds = backward ? d.segment() : null;
                long dOff = backward ? d.row(n) : 0;
                for (int k = 0; k < blocks; k++) {
                    int b = k == 0 ? 0 : head + k * BLOCK, len = Math.min(head + (k + 1) * BLOCK, v) - b;
                    double bs = expSpan(ds, dOff + 4L * b, xs, xo + 4L * b, len, m, false);
                    if (!(bs <= SUM_LIMIT)) {
                        // rare: a much larger logit, a logit far below m (-inf) or NaN: move m up to the block max
                        // if that is higher, and redo the block with the clamped exponential
                        float bm = VecOps.max(xs, xo + 4L * b, len);
                        if (bm > m) {
                            s *= Math.exp((double) m - bm);
                            m = bm;
                        }
                        bs = expSpan(ds, dOff + 4L * b, xs, xo + 4L * b, len, m, true);
                    }
                    blockMax[k] = m;
                    s += bs;
                }
                put(losses.segment(), lOff, (float) (m + Math.log(s) - xt));
                if (backward) {
                    double f = scale / s;
                    for (int k = 0; k < blocks; k++) {
                        int b = k == 0 ? 0 : head + k * BLOCK, len = Math.min(head + (k + 1) * BLOCK, v) - b;
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
     * Returns the sum of e = exp(x - m) over a span and, unless {@code ds} is null, stores e into {@code ds}
     * (which may be x). The vector loop starts where x is 64-byte aligned, so in place the stores are aligned
     * too: odd V puts most rows off alignment, and split 64-byte stores cost about twice as much (measured:
     * 0.51 -> 0.40 ns per logit for the whole kernel). Head and tail are scalar (masked vector accesses
     * measured several times slower). {@code clamp} picks {@link VecOps#exp} over {@link VecOps#expUnchecked}.
     */
    private static double expSpan(MemorySegment ds, long dOff, MemorySegment xs, long xOff, int len, float m, boolean clamp) {
        double r = 0;
        int head = VecOps.headToAlign(xs, xOff, len);
        for (int i = 0; i < head; i++) {
            float e = (float) Math.exp(get(xs, xOff + 4L * i) - m);
            if (ds != null) put(ds, dOff + 4L * i, e);
            r += e;
        }
        int end = head + (len - head) / (2 * L) * (2 * L);
        // two loops rather than one choosing the exponential per call, so that no vector merges the results of
        // two branches (C2 boxes vectors at some merges)
        r += clamp ? expLanesClamped(ds, dOff, xs, xOff, head, end, m) : expLanes(ds, dOff, xs, xOff, head, end, m);
        for (int i = end; i < len; i++) {
            float e = (float) Math.exp(get(xs, xOff + 4L * i) - m);
            if (ds != null) put(ds, dOff + 4L * i, e);
            r += e;
        }
        return r;
    }

    /** The vector part of {@link #expSpan}, {@code [from, to)} with {@code to - from} a multiple of 2 vectors. */
    private static float expLanes(MemorySegment ds, long dOff, MemorySegment xs, long xOff, int from, int to, float m) {
        FloatVector vm = FloatVector.broadcast(F, m);
        FloatVector a = FloatVector.zero(F), b = FloatVector.zero(F);
        for (int i = from; i < to; i += 2 * L) {
            FloatVector e0 = VecOps.expUnchecked(load(xs, xOff + 4L * i).sub(vm));
            FloatVector e1 = VecOps.expUnchecked(load(xs, xOff + 4L * (i + L)).sub(vm));
            if (ds != null) {
                e0.intoMemorySegment(ds, dOff + 4L * i, LE);
                e1.intoMemorySegment(ds, dOff + 4L * (i + L), LE);
            }
            a = a.add(e0);
            b = b.add(e1);
        }
        return VecOps.sumLanes(a.add(b));
    }

    /** {@link #expLanes} with the clamped {@link VecOps#exp}: the same bits where both are in range. */
    private static float expLanesClamped(MemorySegment ds, long dOff, MemorySegment xs, long xOff, int from, int to, float m) {
        FloatVector vm = FloatVector.broadcast(F, m);
        FloatVector a = FloatVector.zero(F), b = FloatVector.zero(F);
        for (int i = from; i < to; i += 2 * L) {
            FloatVector e0 = VecOps.exp(load(xs, xOff + 4L * i).sub(vm));
            FloatVector e1 = VecOps.exp(load(xs, xOff + 4L * (i + L)).sub(vm));
            if (ds != null) {
                e0.intoMemorySegment(ds, dOff + 4L * i, LE);
                e1.intoMemorySegment(ds, dOff + 4L * (i + L), LE);
            }
            a = a.add(e0);
            b = b.add(e1);
        }
        return VecOps.sumLanes(a.add(b));
    }

    private static void scaleInPlace(MemorySegment s, long off, int len, float factor) {
        int i = 0;
        for (int head = VecOps.headToAlign(s, off, len); i < head; i++) put(s, off + 4L * i, get(s, off + 4L * i) * factor);
        FloatVector vf = FloatVector.broadcast(F, factor);
        for (; i <= len - L; i += L) load(s, off + 4L * i).mul(vf).intoMemorySegment(s, off + 4L * i, LE);
        for (; i < len; i++) put(s, off + 4L * i, get(s, off + 4L * i) * factor);
    }
}
