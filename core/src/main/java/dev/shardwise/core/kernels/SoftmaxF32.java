package dev.shardwise.core.kernels;

import jdk.incubator.vector.FloatVector;

import java.lang.foreign.MemorySegment;

import static dev.shardwise.core.kernels.Kernels.F;
import static dev.shardwise.core.kernels.Kernels.L;
import static dev.shardwise.core.kernels.Kernels.LE;
import static dev.shardwise.core.kernels.VecOps.get;
import static dev.shardwise.core.kernels.VecOps.load;
import static dev.shardwise.core.kernels.VecOps.put;

/** Vector API softmax (see {@link Softmax}). */
final class SoftmaxF32 {
    private SoftmaxF32() { }

    static void forward(Rows out, Rows x) {
        int c = x.cols();
        MemorySegment xs = x.segment(), os = out.segment();
        Kernels.forRows(x.rows(), c, (from, to) -> {
            for (int n = from; n < to; n++) {
                long xo = x.row(n), oo = out.row(n);
                float m = VecOps.max(xs, xo, c);
                FloatVector vm = FloatVector.broadcast(F, m);
                FloatVector acc = FloatVector.zero(F);
                int i = 0;
                for (; i <= c - L; i += L) {
                    FloatVector e = VecOps.exp(load(xs, xo + 4L * i).sub(vm));
                    acc = acc.add(e);
                    e.intoMemorySegment(os, oo + 4L * i, LE);
                }
                float s = VecOps.sumLanes(acc);
                for (; i < c; i++) {
                    float e = (float) Math.exp(get(xs, xo + 4L * i) - m);
                    s += e;
                    put(os, oo + 4L * i, e);
                }
                float inv = 1f / s;
                FloatVector vi = FloatVector.broadcast(F, inv);
                for (i = 0; i <= c - L; i += L) load(os, oo + 4L * i).mul(vi).intoMemorySegment(os, oo + 4L * i, LE);
                for (; i < c; i++) put(os, oo + 4L * i, get(os, oo + 4L * i) * inv);
            }
        });
    }

    static void backward(Rows dx, Rows dy, Rows y) {
        int c = y.cols();
        MemorySegment as = dx.segment(), bs = dy.segment(), ys = y.segment();
        Kernels.forRows(y.rows(), c, (from, to) -> {
            for (int n = from; n < to; n++) {
                long ao = dx.row(n), bo = dy.row(n), yo = y.row(n);
                float dot = VecOps.dot(bs, bo, ys, yo, c);
                FloatVector vd = FloatVector.broadcast(F, dot);
                int i = 0;
                for (; i <= c - L; i += L) {
                    FloatVector g = load(bs, bo + 4L * i).sub(vd);
                    load(ys, yo + 4L * i).fma(g, load(as, ao + 4L * i)).intoMemorySegment(as, ao + 4L * i, LE);
                }
                for (; i < c; i++) {
                    put(as, ao + 4L * i, Math.fma(get(ys, yo + 4L * i), get(bs, bo + 4L * i) - dot, get(as, ao + 4L * i)));
                }
            }
        });
    }
}
