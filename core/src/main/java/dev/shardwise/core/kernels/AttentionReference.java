package dev.shardwise.core.kernels;

import dev.shardwise.core.exec.ComputePool;
import dev.shardwise.core.tensor.Tensor;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

/**
 * The float64 reference of {@link Attention}: the textbook formulas with the causal T×T score and probability
 * matrices materialised per (batch, head), a two-pass softmax (max, then sum of exponentials), and sums in
 * plain index order. Backward ignores the saved out and lse and recomputes them, so it depends only on q, k, v
 * and dout. Parallel over (batch, key/value head) groups; bit-identical for any thread count.
 */
final class AttentionReference {
    private static final ValueLayout.OfDouble F64 = ValueLayout.JAVA_DOUBLE;

    private AttentionReference() { }

    /** q [B, T, NH, HS], k, v [B, T, NKV, HS] -> out [B, T, NH, HS], lse [B, NH, T]. */
    static void forward(Tensor out, Tensor lse, Tensor q, Tensor k, Tensor v, double scale) {
        int nb = q.dim(0), nt = q.dim(1), nh = q.dim(2), hs = q.dim(3), nkv = k.dim(2);
        Strided sq = Strided.of(q), sk = Strided.of(k), sv = Strided.of(v), so = Strided.of(out), sl = Strided.of(lse);
        ComputePool.current().parallelFor(nb * nh, task -> {
            int b = task / nh, h = task % nh, kvh = h / (nh / nkv);
            double[][] p = new double[nt][];
            double[] lseRow = new double[nt];
            probabilities(p, lseRow, sq, sk, b, h, kvh, nt, hs, scale);
            MemorySegment vs = sv.segment(), os = so.segment();
            for (int t = 0; t < nt; t++) {
                for (int d = 0; d < hs; d++) {
                    double acc = 0;
                    for (int s = 0; s <= t; s++) acc += p[t][s] * vs.get(F64, sv.at(b, s, kvh) + 8L * d);
                    os.set(F64, so.at(b, t, h) + 8L * d, acc);
                }
                sl.segment().set(F64, sl.at(b, h, t), lseRow[t]);
            }
        });
    }

    /** Accumulates dq [B, T, NH, HS], dk, dv [B, T, NKV, HS] from dout [B, T, NH, HS], q, k, v. */
    static void backward(Tensor dq, Tensor dk, Tensor dv, Tensor dout, Tensor q, Tensor k, Tensor v, double scale) {
        int nb = q.dim(0), nt = q.dim(1), nh = q.dim(2), hs = q.dim(3), nkv = k.dim(2), group = nh / nkv;
        Strided sq = Strided.of(q), sk = Strided.of(k), sv = Strided.of(v), sdo = Strided.of(dout);
        Strided sdq = Strided.of(dq), sdk = Strided.of(dk), sdv = Strided.of(dv);
        // One task per (batch, kv head): it owns dk and dv of that head and dq of the query heads reading it.
        ComputePool.current().parallelFor(nb * nkv, task -> {
            int b = task / nkv, kvh = task % nkv;
            double[][] p = new double[nt][];
            double[] lseRow = new double[nt];
            double[][] dkAcc = new double[nt][hs], dvAcc = new double[nt][hs];
            for (int h = kvh * group; h < (kvh + 1) * group; h++) {
                probabilities(p, lseRow, sq, sk, b, h, kvh, nt, hs, scale);
                double[][] o = new double[nt][hs], go = new double[nt][hs], vv = new double[nt][hs];
                double[][] qq = new double[nt][hs], kk = new double[nt][hs];
                for (int t = 0; t < nt; t++) {
                    for (int d = 0; d < hs; d++) {
                        go[t][d] = sdo.segment().get(F64, sdo.at(b, t, h) + 8L * d);
                        vv[t][d] = sv.segment().get(F64, sv.at(b, t, kvh) + 8L * d);
                        qq[t][d] = sq.segment().get(F64, sq.at(b, t, h) + 8L * d);
                        kk[t][d] = sk.segment().get(F64, sk.at(b, t, kvh) + 8L * d);
                    }
                }
                for (int t = 0; t < nt; t++) {
                    for (int d = 0; d < hs; d++) {
                        double acc = 0;
                        for (int s = 0; s <= t; s++) acc += p[t][s] * vv[s][d];
                        o[t][d] = acc;
                    }
                }
                for (int t = 0; t < nt; t++) {
                    double dRow = 0;                                  // D[t] = dout[t] · out[t]
                    for (int d = 0; d < hs; d++) dRow += go[t][d] * o[t][d];
                    double[] ds = new double[t + 1];
                    for (int s = 0; s <= t; s++) {
                        double dp = 0;                                // dP[t][s] = dout[t] · v[s]
                        for (int d = 0; d < hs; d++) dp += go[t][d] * vv[s][d];
                        ds[s] = p[t][s] * (dp - dRow);                // softmax backward
                        for (int d = 0; d < hs; d++) dvAcc[s][d] += p[t][s] * go[t][d];
                    }
                    for (int d = 0; d < hs; d++) {
                        double acc = 0;
                        for (int s = 0; s <= t; s++) acc += ds[s] * kk[s][d];
                        long at = sdq.at(b, t, h) + 8L * d;
                        sdq.segment().set(F64, at, sdq.segment().get(F64, at) + scale * acc);
                    }
                    for (int s = 0; s <= t; s++) {
                        for (int d = 0; d < hs; d++) dkAcc[s][d] += scale * ds[s] * qq[t][d];
                    }
                }
            }
            for (int s = 0; s < nt; s++) {
                for (int d = 0; d < hs; d++) {
                    long atk = sdk.at(b, s, kvh) + 8L * d, atv = sdv.at(b, s, kvh) + 8L * d;
                    sdk.segment().set(F64, atk, sdk.segment().get(F64, atk) + dkAcc[s][d]);
                    sdv.segment().set(F64, atv, sdv.segment().get(F64, atv) + dvAcc[s][d]);
                }
            }
        });
    }

    /** p[t][0..t] = softmax over s <= t of scale · q[b, t, h]·k[b, s, kvh]; lse[t] = log of its normaliser. */
    private static void probabilities(double[][] p, double[] lse, Strided sq, Strided sk, int b, int h, int kvh,
                                      int nt, int hs, double scale) {
        MemorySegment qs = sq.segment(), ks = sk.segment();
        for (int t = 0; t < nt; t++) {
            double[] row = new double[t + 1];
            double max = Double.NEGATIVE_INFINITY;
            for (int s = 0; s <= t; s++) {
                double dot = 0;
                for (int d = 0; d < hs; d++) dot += qs.get(F64, sq.at(b, t, h) + 8L * d) * ks.get(F64, sk.at(b, s, kvh) + 8L * d);
                row[s] = scale * dot;
                max = Math.max(max, row[s]);
            }
            double sum = 0;
            for (int s = 0; s <= t; s++) {
                row[s] = Math.exp(row[s] - max);
                sum += row[s];
            }
            for (int s = 0; s <= t; s++) row[s] /= sum;
            p[t] = row;
            lse[t] = max + Math.log(sum);
        }
    }
}
