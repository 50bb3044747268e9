package dev.shardwise.core.kernels;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

/** Float64 reference cross-entropy (see {@link CrossEntropy}): plain loops, two-pass max then sum. */
final class CrossEntropyReference {
    private CrossEntropyReference() { }

    static void run(Rows losses, Rows d, Rows x, Rows targets, double scale, boolean backward) {
        int v = x.cols();
        MemorySegment xs = x.segment();
        for (int n = 0; n < x.rows(); n++) {
            int target = targets.segment().get(ValueLayout.JAVA_INT_UNALIGNED, targets.base() + 4L * n);
            long lOff = losses.base() + 8L * n;
            long xo = x.row(n);
            if (target == CrossEntropy.IGNORE_INDEX) {
                losses.segment().set(ValueLayout.JAVA_DOUBLE_UNALIGNED, lOff, 0.0);
                if (backward) for (int i = 0; i < v; i++) d.segment().set(ValueLayout.JAVA_DOUBLE_UNALIGNED, d.row(n) + 8L * i, 0.0);
                continue;
            }
            double m = Double.NEGATIVE_INFINITY;
            for (int i = 0; i < v; i++) m = Math.max(m, xs.get(ValueLayout.JAVA_DOUBLE_UNALIGNED, xo + 8L * i));
            double s = 0;
            for (int i = 0; i < v; i++) s += Math.exp(xs.get(ValueLayout.JAVA_DOUBLE_UNALIGNED, xo + 8L * i) - m);
            double logZ = m + Math.log(s);
            double xt = xs.get(ValueLayout.JAVA_DOUBLE_UNALIGNED, xo + 8L * target);
            losses.segment().set(ValueLayout.JAVA_DOUBLE_UNALIGNED, lOff, logZ - xt);
            if (backward) {
                long dOff = d.row(n);
                for (int i = 0; i < v; i++) {
                    double p = Math.exp(xs.get(ValueLayout.JAVA_DOUBLE_UNALIGNED, xo + 8L * i) - logZ);
                    d.segment().set(ValueLayout.JAVA_DOUBLE_UNALIGNED, dOff + 8L * i, (p - (i == target ? 1 : 0)) * scale);
                }
            }
        }
    }
}
