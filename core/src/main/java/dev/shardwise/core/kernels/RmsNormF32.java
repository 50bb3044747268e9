package dev.shardwise.core.kernels;

import jdk.incubator.vector.FloatVector;

import java.lang.foreign.MemorySegment;

import static dev.shardwise.core.kernels.Kernels.F;
import static dev.shardwise.core.kernels.Kernels.L;
import static dev.shardwise.core.kernels.Kernels.LE;
import static dev.shardwise.core.kernels.VecOps.get;
import static dev.shardwise.core.kernels.VecOps.load;
import static dev.shardwise.core.kernels.VecOps.put;

/** Vector API RMS norm (see {@link RmsNorm}). */
final class RmsNormF32 {
    private RmsNormF32() { }

    static void forward(Rows out, Rows rstd, Rows x, Rows w, float eps) {
        int c = x.cols();
        MemorySegment xs = x.segment(), os = out.segment(), ws = w.segment();
        long wo = w.base();
        Kernels.forRows(x.rows(), c, (from, to) -> {
            for (int n = from; n < to; n++) {
                long xo = x.row(n), oo = out.row(n);
                float ms = VecOps.sumSqDiff(xs, xo, c, 0f) / c;
                float rs = (float) (1.0 / Math.sqrt((double) ms + eps));
                put(rstd.segment(), rstd.base() + 4L * n, rs);
                FloatVector vr = FloatVector.broadcast(F, rs);
                int i = 0;
                for (; i <= c - L; i += L) {
                    load(xs, xo + 4L * i).mul(vr).mul(load(ws, wo + 4L * i)).intoMemorySegment(os, oo + 4L * i, LE);
                }
                for (; i < c; i++) put(os, oo + 4L * i, get(xs, xo + 4L * i) * rs * get(ws, wo + 4L * i));
            }
        });
    }

    static void backward(Rows dx, Rows dw, Rows dout, Rows x, Rows rstd, Rows w) {
        int rows = x.rows(), c = x.cols();
        int chunkRows = Kernels.gradChunkRows(rows);
        int chunks = (rows + chunkRows - 1) / chunkRows;
        float[][] dwPart = new float[chunks][c + L];
        MemorySegment xs = x.segment(), gs = dout.segment(), ws = w.segment(), as = dx.segment();
        long wo = w.base();
        Kernels.forChunks(chunks, (long) rows * c, k -> {
            float[] pw = dwPart[k];
            for (int n = k * chunkRows, end = Math.min(rows, n + chunkRows); n < end; n++) {
                long xo = x.row(n), go = dout.row(n), ao = dx.row(n);
                float rs = get(rstd.segment(), rstd.base() + 4L * n);
                FloatVector vr = FloatVector.broadcast(F, rs);
                // sum(g * x) with g = dout * weight, without materializing g
                FloatVector acc = FloatVector.zero(F);
                int i = 0;
                for (; i <= c - L; i += L) {
                    acc = load(gs, go + 4L * i).mul(load(ws, wo + 4L * i)).fma(load(xs, xo + 4L * i), acc);
                }
                float sumGX = VecOps.sumLanes(acc);
                for (; i < c; i++) sumGX = Math.fma(get(gs, go + 4L * i) * get(ws, wo + 4L * i), get(xs, xo + 4L * i), sumGX);
                float gnMean = sumGX * rs / c;   // mean(g * norm)
                FloatVector vgn = FloatVector.broadcast(F, gnMean);
                for (i = 0; i <= c - L; i += L) {
                    FloatVector d = load(gs, go + 4L * i);
                    FloatVector norm = load(xs, xo + 4L * i).mul(vr);
                    FloatVector t = d.mul(load(ws, wo + 4L * i)).sub(norm.mul(vgn));
                    t.fma(vr, load(as, ao + 4L * i)).intoMemorySegment(as, ao + 4L * i, LE);
                    norm.fma(d, FloatVector.fromArray(F, pw, i)).intoArray(pw, i);
                }
                for (; i < c; i++) {
                    float d = get(gs, go + 4L * i);
                    float norm = get(xs, xo + 4L * i) * rs;
                    float t = d * get(ws, wo + 4L * i) - norm * gnMean;
                    put(as, ao + 4L * i, Math.fma(t, rs, get(as, ao + 4L * i)));
                    pw[i] = Math.fma(norm, d, pw[i]);
                }
            }
        });
        Kernels.addPartials(dw.segment(), dw.base(), dwPart, c);
    }
}
