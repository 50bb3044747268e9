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
 * Causal attention of new query rows over a key/value cache (autoregressive decoding): the T new rows of one
 * sequence sit at positions {@code offset .. offset+T-1}, and row t attends the cached positions
 * {@code [0, offset + t]}, so its output equals row {@code offset + t} of {@link Attention#forward} over the whole
 * sequence: {@code out[t] = Σ_{s ≤ offset+t} softmax_s(scale · q[t]·k[s]) · v[s]}. Grouped-query heads as
 * {@link Attention}: query head h reads kv head {@code h / (NH / NKV)}.
 *
 * <p>Shapes: q and out {@code [T, NH, HS]}, k and v {@code [S, NKV, HS]} with {@code S >= offset + T} (rows past
 * {@code offset + T - 1} are not read); strided views allowed when the last dimension is unit-stride. F32 uses the
 * Vector API with the scores of one (row, head) materialised (at most S floats), F64 a float64 reference. Each
 * (row, head) is computed by one task in a fixed order: bit-identical for any thread count.
 */
public final class CachedAttention {
    private CachedAttention() { }

    /**
     * Writes out [T, NH, HS] from q [T, NH, HS] and the cache k, v [S, NKV, HS] (see the class comment).
     *
     * @throws IllegalArgumentException if dtypes are mixed or not F32/F64, shapes disagree, NKV does not divide NH,
     *                                  offset is negative, the cache holds fewer than offset + T rows, or a last
     *                                  dimension is strided
     */
    public static void forward(Tensor out, Tensor q, Tensor k, Tensor v, int offset, double scale) {
        String op = "CachedAttention.forward";
        DType dt = Kernels.floatType(op, new String[]{"out", "q", "k", "v"}, out, q, k, v);
        for (Tensor z : new Tensor[]{out, q, k, v}) {
            if (z.rank() != 3) throw new IllegalArgumentException(op + ": " + z.describe() + " must be rank 3 ([T, NH, HS] or [S, NKV, HS])");
            if (!z.hasUnitInnerStride()) throw new IllegalArgumentException(op + ": " + z.describe() + " needs a unit-stride head dimension");
        }
        int t = q.dim(0), nh = q.dim(1), hs = q.dim(2), s = k.dim(0), nkv = k.dim(1);
        Kernels.sameShape(op, "out", out, "q", q);
        Kernels.sameShape(op, "v", v, "k", k);
        if (k.dim(2) != hs) throw new IllegalArgumentException(op + ": k " + k.describe() + " has head size " + k.dim(2) + ", q " + hs);
        if (nkv <= 0 || nh % nkv != 0) {
            throw new IllegalArgumentException(op + ": NKV = " + nkv + " kv heads must divide NH = " + nh + " query heads");
        }
        if (offset < 0) throw new IllegalArgumentException(op + ": offset = " + offset + " must be >= 0");
        if (offset + t > s) {
            throw new IllegalArgumentException(op + ": rows at positions " + offset + ".." + (offset + t - 1) + " need a cache of at least "
                    + (offset + t) + " positions, k has " + s);
        }
        int group = nh / nkv;
        Kernels.forRows(t * nh, (long) (offset + t) * hs * 2, (from, to) -> {
            float[] scores32 = dt == DType.F32 ? new float[offset + t] : null;
            double[] scores64 = dt == DType.F64 ? new double[offset + t] : null;
            for (int row = from; row < to; row++) {
                int i = row / nh, h = row % nh;
                if (dt == DType.F32) rowF32(out, q, k, v, i, h, h / group, offset + i + 1, (float) scale, scores32);
                else rowF64(out, q, k, v, i, h, h / group, offset + i + 1, scale, scores64);
            }
        });
    }

    private static long at(Tensor x, int a, int b) {
        return x.offset() + a * x.stride(0) + b * x.stride(1);
    }

    /** out[i, h] over keys [0, keys) of kv head g, in f32. */
    private static void rowF32(Tensor out, Tensor q, Tensor k, Tensor v, int i, int h, int g, int keys, float scale, float[] scores) {
        int hs = q.dim(2);
        MemorySegment qs = q.segment(), ks = k.segment(), vs = v.segment(), os = out.segment();
        long qo = 4L * at(q, i, h), oo = 4L * at(out, i, h);
        float max = Float.NEGATIVE_INFINITY;
        for (int j = 0; j < keys; j++) {
            scores[j] = scale * VecOps.dot(qs, qo, ks, 4L * at(k, j, g), hs);
            max = Math.max(max, scores[j]);
        }
        double sum = 0;
        for (int j = 0; j < keys; j++) {
            scores[j] = (float) Math.exp(scores[j] - max);
            sum += scores[j];
        }
        float inv = (float) (1 / sum);
        int e = 0;
        for (; e <= hs - L; e += L) {
            FloatVector acc = FloatVector.zero(F);
            for (int j = 0; j < keys; j++) acc = load(vs, 4L * (at(v, j, g) + e)).fma(FloatVector.broadcast(F, scores[j]), acc);
            acc.mul(inv).intoMemorySegment(os, oo + 4L * e, LE);
        }
        for (; e < hs; e++) {
            float acc = 0;
            for (int j = 0; j < keys; j++) acc += scores[j] * get(vs, 4L * (at(v, j, g) + e));
            put(os, oo + 4L * e, acc * inv);
        }
    }

    /** The float64 reference of {@link #rowF32}. */
    private static void rowF64(Tensor out, Tensor q, Tensor k, Tensor v, int i, int h, int g, int keys, double scale, double[] scores) {
        int hs = q.dim(2);
        ValueLayout.OfDouble d = ValueLayout.JAVA_DOUBLE_UNALIGNED;
        MemorySegment qs = q.segment(), ks = k.segment(), vs = v.segment(), os = out.segment();
        long qo = 8L * at(q, i, h), oo = 8L * at(out, i, h);
        double max = Double.NEGATIVE_INFINITY;
        for (int j = 0; j < keys; j++) {
            long ko = 8L * at(k, j, g);
            double dot = 0;
            for (int e = 0; e < hs; e++) dot += qs.get(d, qo + 8L * e) * ks.get(d, ko + 8L * e);
            scores[j] = scale * dot;
            max = Math.max(max, scores[j]);
        }
        double sum = 0;
        for (int j = 0; j < keys; j++) {
            scores[j] = Math.exp(scores[j] - max);
            sum += scores[j];
        }
        for (int e = 0; e < hs; e++) {
            double acc = 0;
            for (int j = 0; j < keys; j++) acc += scores[j] * vs.get(d, 8L * (at(v, j, g) + e));
            os.set(d, oo + 8L * e, acc / sum);
        }
    }
}
