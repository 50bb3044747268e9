package dev.shardwise.core.kernels;

import dev.shardwise.core.exec.ComputePool;
import dev.shardwise.core.tensor.Tensor;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.IntVector;
import jdk.incubator.vector.VectorMask;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorSpecies;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;
import java.util.Arrays;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * The fp32 FlashAttention-2 kernel behind {@link Attention}: queries and keys in tiles of {@value #BQ} rows,
 * online softmax, register-tiled Vector API micro-kernels for the tile products, fp32 accumulation.
 *
 * <p>One micro-kernel ({@link #mm}) does every tile product: a broadcast scalar from a strided operand times
 * contiguous vector rows of the other. Score tiles are row-major, {@code S[query][key]}, so only k and v need a
 * transposed copy ({@code scale·kᵀ} and {@code vᵀ}, [HS][key]), once per key block; q, dout, out and the gradients
 * are used as rows. On a diagonal tile (key block == query block) the products skip the masked upper triangle in
 * steps of one micro-kernel row block: S and dP stop at the last vector a row block needs, P·v and dS·k stop at the
 * row block's last key, and Pᵀ·dout and dSᵀ·q start at its first query.
 * <ul>
 * <li>Forward: a task takes up to {@value #FORWARD_CHUNK} consecutive query blocks of one (batch, head) and runs key
 * blocks outer, so each k and v tile is read and transposed once per task; per query block it keeps the q rows, the
 * unnormalised out rows, and the running max m and lanewise running sums l of the online softmax.
 * <li>Backward: a task owns one (batch, key/value head): dk and dv of that kv head and dq of the query heads that
 * read it, so no two tasks write the same element. It takes up to {@value #BACKWARD_CHUNK} key blocks at a time
 * (k rows, both transposes, dk and dv accumulators), then streams every later query block of every query head of
 * the group past them: q and dout rows, lse and D = rowsum(dout ∘ out) are read once per (key chunk, query block),
 * and dq gets one addition per (key chunk, query block).
 * </ul>
 * Each element's sums run in a fixed order inside one task, so results are bit-identical for any thread count.
 * Exponentials use {@link #exp}, which is bit-reproducible whether compiled or not. Every pool thread allocates its
 * scratch once per call and reuses it for the tasks it claims (a call-local counter hands out the tasks).
 */
final class AttentionF32 {
    static final VectorSpecies<Float> SPECIES = FloatVector.SPECIES_PREFERRED;
    private static final int L = SPECIES.length();
    /** Query and key tile size in rows: 64×64 score tiles (16 KiB) stay in L1 beside the operand tiles. */
    static final int BQ = 64;
    /** Most query blocks per forward task: its state is two tiles per block (q rows, out rows), 32 KiB for HS = 64. */
    static final int FORWARD_CHUNK = 8;
    /** Most key blocks a backward task holds at a time: five tiles per block (k, scale·kᵀ, vᵀ, dk, dv), 80 KiB. */
    static final int BACKWARD_CHUNK = 4;
    private static final ValueLayout.OfFloat F32 = ValueLayout.JAVA_FLOAT;
    private static final ByteOrder NATIVE = ByteOrder.nativeOrder();

    private AttentionF32() { }

    /** Head size rounded up to whole vectors: row length of the padded row tiles. */
    static int paddedHeadSize(int hs) {
        return (hs + L - 1) / L * L;
    }

    /** Heap scratch of one pool thread in forward, in bytes (independent of T). */
    static long forwardScratchBytes(int hs) {
        int hsp = paddedHeadSize(hs);
        return 4L * (FORWARD_CHUNK * (2 * BQ * hsp + BQ + BQ * L) + 2 * BQ * hsp + hs * BQ + BQ * BQ + 2 * BQ);
    }

    /** Heap scratch of one pool thread in backward, in bytes (independent of T). */
    static long backwardScratchBytes(int hs) {
        int hsp = paddedHeadSize(hs);
        return 4L * (BACKWARD_CHUNK * (3 * BQ * hsp + 2 * hs * BQ) + 4 * BQ * hsp + 2 * BQ * BQ + 2 * BQ + hsp);
    }

    /**
     * Runs {@code units} tasks on the current pool, each pool thread claiming tasks from a call-local counter and
     * reusing one scratch object (made by {@code scratch}) for all of them.
     */
    private static <W> void runUnits(int units, java.util.function.Supplier<W> scratch, UnitBody<W> body) {
        ComputePool pool = ComputePool.current();
        AtomicInteger next = new AtomicInteger();
        pool.parallelFor(Math.min(pool.threads(), units), slot -> {
            W w = scratch.get();
            for (int u; (u = next.getAndIncrement()) < units; ) body.run(w, u);
        });
    }

    @FunctionalInterface
    private interface UnitBody<W> {
        void run(W scratch, int unit);
    }

    // ---------------------------------------------------------------- forward

    static void forward(Tensor out, Tensor lse, Tensor q, Tensor k, Tensor v, float scale) {
        int nb = q.dim(0), nt = q.dim(1), nh = q.dim(2), hs = q.dim(3), nkv = k.dim(2);
        if (nb == 0 || nt == 0 || nh == 0) return;
        Strided sq = Strided.of(q), sk = Strided.of(k), sv = Strided.of(v), so = Strided.of(out), sl = Strided.of(lse);
        int nqb = (nt + BQ - 1) / BQ, heads = nb * nh;
        // Query blocks per task: as many as fit (fewer k/v reads), but enough tasks for about 4 per thread.
        int threads = ComputePool.current().threads();
        int chunk = Math.max(1, Math.min(Math.min(nqb, FORWARD_CHUNK), (nqb * heads + 4 * threads - 1) / (4 * threads)));
        int chunksPerHead = (nqb + chunk - 1) / chunk;
        runUnits(heads * chunksPerHead, () -> new ForwardScratch(hs, chunk), (w, u) -> {
            // The chunks with the most key blocks first, so the last tasks to run are short ones.
            int c = chunksPerHead - 1 - u / heads, bh = u % heads;
            int b = bh / nh, h = bh % nh;
            forwardChunk(w, so, sl, sq, sk, sv, b, h, h / (nh / nkv), c * chunk, Math.min(nqb, (c + 1) * chunk),
                    nt, hs, scale);
        });
    }

    /** The tiles of one forward thread: per query block of a chunk its q rows, out rows and softmax state. */
    private static final class ForwardScratch {
        final float[][] q, o;            // [chunk][BQ · hsp]: q rows; unnormalised out rows
        final float[][] m, l;            // [chunk][BQ]: running max; [chunk][BQ · L]: lanewise running sums
        final float[] kRows, v, kt, s;   // k rows, v rows [BQ][hsp]; scale · kᵀ [hs][BQ]; S then P [query][key]
        final float[] mNew = new float[BQ], alpha = new float[BQ];

        ForwardScratch(int hs, int chunk) {
            int hsp = paddedHeadSize(hs);
            q = new float[chunk][BQ * hsp];
            o = new float[chunk][BQ * hsp];
            m = new float[chunk][BQ];
            l = new float[chunk][BQ * L];
            kRows = new float[BQ * hsp];
            v = new float[BQ * hsp];
            kt = new float[hs * BQ];
            s = new float[BQ * BQ];
        }
    }

    /** Query blocks [qb0, qb1) of (b, h): key blocks outer, each key block's tiles read once. */
    private static void forwardChunk(ForwardScratch w, Strided so, Strided sl, Strided sq, Strided sk, Strided sv,
                                     int b, int h, int kvh, int qb0, int qb1, int nt, int hs, float scale) {
        int hsp = paddedHeadSize(hs);
        for (int qb = qb0; qb < qb1; qb++) {
            readRows(w.q[qb - qb0], hsp, sq, b, qb * BQ, h, Math.min(BQ, nt - qb * BQ), hs);
            Arrays.fill(w.m[qb - qb0], Float.NEGATIVE_INFINITY);
            Arrays.fill(w.l[qb - qb0], 0f);
        }
        for (int kb = 0; kb < qb1; kb++) {
            int k0 = kb * BQ, kn = Math.min(BQ, nt - k0);
            readRows(w.kRows, hsp, sk, b, k0, kvh, kn, hs);
            transpose(w.kt, w.kRows, hsp, kn, hs, scale);
            readRows(w.v, hsp, sv, b, k0, kvh, kn, hs);
            for (int qb = Math.max(kb, qb0); qb < qb1; qb++) {
                int i = qb - qb0, qn = Math.min(BQ, nt - qb * BQ);
                boolean diag = qb == kb;
                float[] o = w.o[i];
                // S[query][key] = q · (scale·k)ᵀ
                mm(w.s, BQ, w.q[i], 0, hsp, 1, w.kt, BQ, qn, BQ, hs, diag ? COLS_LOWER : FULL, false);
                onlineSoftmax(w.s, qn, diag, w.m[i], w.l[i], w.mNew, w.alpha);
                if (kb > 0) rescaleRows(o, hsp, w.alpha, qn);
                // out[query] += sum_key P[query][key] · v[key]
                mm(o, hsp, w.s, 0, BQ, 1, w.v, hsp, qn, hsp, kn, diag ? K_BELOW : FULL, kb > 0);
                if (diag) finishRows(so, sl, b, h, qb * BQ, qn, hs, o, w.m[i], w.l[i]);
            }
        }
    }

    /**
     * Online softmax step over rows i < qn of S [query][key]: m' = max(m, max_key S), alpha = exp(m - m'),
     * P = exp(S - m') in place, l = alpha·l + sum_key P (lanewise, summed over lanes at the end). On a diagonal tile
     * keys after the query get P = 0, and the vectors past a row's last key are zeroed rather than computed.
     * Key 0 of the first tile is unmasked for every row, so m is finite after the first tile.
     */
    private static void onlineSoftmax(float[] s, int qn, boolean diag, float[] m, float[] l, float[] mNew, float[] alpha) {
        int nv = BQ / L;
        for (int i = 0; i < qn; i++) {
            int rv = diag ? i / L + 1 : nv;             // vectors holding keys <= i
            FloatVector mx = FloatVector.broadcast(SPECIES, Float.NEGATIVE_INFINITY);
            for (int j = 0; j < rv - 1; j++) mx = mx.max(FloatVector.fromArray(SPECIES, s, i * BQ + j * L));
            FloatVector last = FloatVector.fromArray(SPECIES, s, i * BQ + (rv - 1) * L);
            if (diag) last = mx.blend(last, SPECIES.indexInRange((rv - 1) * L, i + 1));
            mx = mx.max(last);
            mNew[i] = Math.max(m[i], mx.reduceLanes(VectorOperators.MAX));
        }
        for (int i = 0; i < qn; i += L) {
            // Rows past qn compute garbage that no one reads (m and mNew keep finite or -inf values there).
            FloatVector mv = FloatVector.fromArray(SPECIES, m, i), mn = FloatVector.fromArray(SPECIES, mNew, i);
            exp(mv.sub(mn)).intoArray(alpha, i);
            mn.intoArray(m, i);
        }
        for (int i = 0; i < qn; i++) {
            int rv = diag ? i / L + 1 : nv;
            FloatVector mi = FloatVector.broadcast(SPECIES, mNew[i]);
            FloatVector sum = FloatVector.zero(SPECIES);
            for (int j = 0; j < rv; j++) {
                int at = i * BQ + j * L;
                FloatVector p = exp(FloatVector.fromArray(SPECIES, s, at).sub(mi));
                if (diag && j == rv - 1) p = FloatVector.zero(SPECIES).blend(p, SPECIES.indexInRange(j * L, i + 1));
                p.intoArray(s, at);
                sum = sum.add(p);
            }
            for (int j = rv; j < nv; j++) FloatVector.zero(SPECIES).intoArray(s, i * BQ + j * L);
            FloatVector.fromArray(SPECIES, l, i * L).fma(FloatVector.broadcast(SPECIES, alpha[i]), sum).intoArray(l, i * L);
        }
    }

    /** rows[i][:] *= alpha[i] for i < n, skipping rows whose max did not change (alpha == 1). */
    private static void rescaleRows(float[] rows, int hsp, float[] alpha, int n) {
        for (int i = 0; i < n; i++) {
            float a = alpha[i];
            if (a == 1f) continue;
            FloatVector av = FloatVector.broadcast(SPECIES, a);
            for (int d = 0; d < hsp; d += L) {
                FloatVector.fromArray(SPECIES, rows, i * hsp + d).mul(av).intoArray(rows, i * hsp + d);
            }
        }
    }

    /** out[b, q0 + i, h, :] = o[i] / l[i] and lse[b, h, q0 + i] = m[i] + ln(l[i]) for i < qn. */
    private static void finishRows(Strided so, Strided sl, int b, int h, int q0, int qn, int hs,
                                   float[] o, float[] m, float[] l) {
        int hsp = paddedHeadSize(hs), full = hs / L * L;
        MemorySegment seg = so.segment();
        for (int i = 0; i < qn; i++) {
            float sum = 0;
            for (int lane = 0; lane < L; lane++) sum += l[i * L + lane];   // in lane order: fixed
            float inv = 1f / sum;
            long at = so.at(b, q0 + i, h);
            FloatVector iv = FloatVector.broadcast(SPECIES, inv);
            int d = 0;
            for (; d < full; d += L) FloatVector.fromArray(SPECIES, o, i * hsp + d).mul(iv).intoMemorySegment(seg, at + 4L * d, NATIVE);
            for (; d < hs; d++) seg.set(F32, at + 4L * d, o[i * hsp + d] * inv);
            sl.segment().set(F32, sl.at(b, h, q0 + i), m[i] + (float) StrictMath.log(sum));
        }
    }

    // ---------------------------------------------------------------- backward

    static void backward(Tensor dq, Tensor dk, Tensor dv, Tensor dout, Tensor out, Tensor lse,
                         Tensor q, Tensor k, Tensor v, float scale) {
        int nb = q.dim(0), nt = q.dim(1), nh = q.dim(2), hs = q.dim(3), nkv = k.dim(2);
        if (nb == 0 || nt == 0 || nh == 0) return;
        Strided sq = Strided.of(q), sk = Strided.of(k), sv = Strided.of(v), so = Strided.of(out), sl = Strided.of(lse);
        Strided sdo = Strided.of(dout), sdq = Strided.of(dq), sdk = Strided.of(dk), sdv = Strided.of(dv);
        runUnits(nb * nkv, () -> new BackwardScratch(hs), (w, u) ->
                backwardGroup(w, sdq, sdk, sdv, sdo, so, sl, sq, sk, sv, u / nkv, u % nkv, nh, nkv, nt, hs, scale));
    }

    /** The tiles of one backward thread. */
    private static final class BackwardScratch {
        final float[][] k, kt, vt, dk, dv;   // per key block of a chunk: k rows, scale·kᵀ, vᵀ, dk and dv accumulators
        final float[] q, g, dq, vRows;       // q rows, dout rows, dq rows of one query block; v rows (to build vᵀ)
        final float[] p, ds;                 // P, then dP and scale · dS [query][key]
        final float[] lse = new float[BQ], dRow = new float[BQ], oRow;

        BackwardScratch(int hs) {
            int hsp = paddedHeadSize(hs);
            k = new float[BACKWARD_CHUNK][BQ * hsp];
            kt = new float[BACKWARD_CHUNK][hs * BQ];
            vt = new float[BACKWARD_CHUNK][hs * BQ];
            dk = new float[BACKWARD_CHUNK][BQ * hsp];
            dv = new float[BACKWARD_CHUNK][BQ * hsp];
            q = new float[BQ * hsp];
            g = new float[BQ * hsp];
            dq = new float[BQ * hsp];
            vRows = new float[BQ * hsp];
            p = new float[BQ * BQ];
            ds = new float[BQ * BQ];
            oRow = new float[hsp];
        }
    }

    /**
     * One (batch, kv head) task: key blocks in chunks; per chunk, every query block from the chunk's first on, of
     * every query head of the group, meets the chunk's key blocks in ascending order. dk and dv of a key block sum
     * over (head, query block) in that order and are added to the tensors once per chunk; dq of a query block sums
     * over the chunk's key blocks and is added once per chunk, chunks in ascending order.
     */
    private static void backwardGroup(BackwardScratch w, Strided sdq, Strided sdk, Strided sdv, Strided sdo,
                                      Strided so, Strided sl, Strided sq, Strided sk, Strided sv,
                                      int b, int kvh, int nh, int nkv, int nt, int hs, float scale) {
        int hsp = paddedHeadSize(hs), group = nh / nkv;
        int nqb = (nt + BQ - 1) / BQ;
        for (int kc0 = 0; kc0 < nqb; kc0 += BACKWARD_CHUNK) {
            int kc1 = Math.min(nqb, kc0 + BACKWARD_CHUNK);
            for (int kb = kc0; kb < kc1; kb++) {
                int j = kb - kc0, k0 = kb * BQ, kn = Math.min(BQ, nt - k0);
                readRows(w.k[j], hsp, sk, b, k0, kvh, kn, hs);
                transpose(w.kt[j], w.k[j], hsp, kn, hs, scale);
                readRows(w.vRows, hsp, sv, b, k0, kvh, kn, hs);
                transpose(w.vt[j], w.vRows, hsp, kn, hs, 1f);
                Arrays.fill(w.dk[j], 0f);
                Arrays.fill(w.dv[j], 0f);
            }
            for (int h = kvh * group; h < (kvh + 1) * group; h++) {
                for (int qb = kc0; qb < nqb; qb++) {
                    int q0 = qb * BQ, qn = Math.min(BQ, nt - q0);
                    readRows(w.q, hsp, sq, b, q0, h, qn, hs);
                    readRows(w.g, hsp, sdo, b, q0, h, qn, hs);
                    for (int i = 0; i < qn; i++) {
                        w.lse[i] = sl.segment().get(F32, sl.at(b, h, q0 + i));
                        w.dRow[i] = rowDot(w.g, i * hsp, so, b, q0 + i, h, hs, w.oRow);
                    }
                    for (int kb = kc0; kb < Math.min(kc1, qb + 1); kb++) {
                        backwardTile(w, kb - kc0, qn, Math.min(BQ, nt - kb * BQ), qb == kb, hsp, hs, scale, kb > kc0);
                    }
                    addRows(sdq, b, q0, h, w.dq, hsp, qn, hs);
                }
            }
            for (int kb = kc0; kb < kc1; kb++) {
                int k0 = kb * BQ, kn = Math.min(BQ, nt - k0);
                addRows(sdk, b, k0, kvh, w.dk[kb - kc0], hsp, kn, hs);
                addRows(sdv, b, k0, kvh, w.dv[kb - kc0], hsp, kn, hs);
            }
        }
    }

    /**
     * One (query block, key block) pair of backward, with the query block's rows in w.q, w.g, w.lse, w.dRow and the
     * key block's tiles at index j: P = exp(S - lse), dv += Pᵀ·dout, dS = scale · P ∘ (dout·vᵀ - D),
     * dk += dSᵀ·q, dq (+)= dS·k (overwrites w.dq unless accumulate).
     */
    private static void backwardTile(BackwardScratch w, int j, int qn, int kn, boolean diag, int hsp, int hs,
                                     float scale, boolean accumulate) {
        float[] p = w.p, ds = w.ds;
        int nv = BQ / L;
        // S = q · (scale·k)ᵀ, then P = exp(S - lse), causal, zero past each row's last key
        mm(p, BQ, w.q, 0, hsp, 1, w.kt[j], BQ, qn, BQ, hs, diag ? COLS_LOWER : FULL, false);
        // dP = dout · vᵀ
        mm(ds, BQ, w.g, 0, hsp, 1, w.vt[j], BQ, qn, BQ, hs, diag ? COLS_LOWER : FULL, false);
        FloatVector vs = FloatVector.broadcast(SPECIES, scale), zero = FloatVector.zero(SPECIES);
        for (int i = 0; i < qn; i++) {
            int rv = diag ? i / L + 1 : nv;
            FloatVector lseI = FloatVector.broadcast(SPECIES, w.lse[i]), dI = FloatVector.broadcast(SPECIES, w.dRow[i]);
            for (int c = 0; c < rv; c++) {
                int at = i * BQ + c * L;
                FloatVector pv = exp(FloatVector.fromArray(SPECIES, p, at).sub(lseI));
                if (diag && c == rv - 1) pv = zero.blend(pv, SPECIES.indexInRange(c * L, i + 1));
                pv.intoArray(p, at);
                // dS = scale · P ∘ (dP - D)
                FloatVector.fromArray(SPECIES, ds, at).sub(dI).mul(pv).mul(vs).intoArray(ds, at);
            }
            for (int c = rv; c < nv; c++) {
                zero.intoArray(p, i * BQ + c * L);
                zero.intoArray(ds, i * BQ + c * L);
            }
        }
        // dv[key] += sum_query P[query][key] · dout[query]
        mm(w.dv[j], hsp, p, 0, 1, BQ, w.g, hsp, kn, hsp, qn, diag ? K_FROM : FULL, true);
        // dk[key] += sum_query dS[query][key] · q[query]
        mm(w.dk[j], hsp, ds, 0, 1, BQ, w.q, hsp, kn, hsp, qn, diag ? K_FROM : FULL, true);
        // dq[query] += sum_key dS[query][key] · k[key]
        mm(w.dq, hsp, ds, 0, BQ, 1, w.k[j], hsp, qn, hsp, kn, diag ? K_BELOW : FULL, accumulate);
    }

    /**
     * g[gOff + 0..hs) · out[b, t, h, :]: whole vectors in lane order, then the tail in index order. tmp: hsp floats.
     */
    private static float rowDot(float[] g, int gOff, Strided out, int b, int t, int h, int hs, float[] tmp) {
        readRows(tmp, 0, out, b, t, h, 1, hs);
        FloatVector acc = FloatVector.zero(SPECIES);
        int d = 0;
        for (; d + L <= hs; d += L) {
            acc = FloatVector.fromArray(SPECIES, g, gOff + d).fma(FloatVector.fromArray(SPECIES, tmp, d), acc);
        }
        // Lanes summed in lane order (reduceLanes leaves its order open, so it could differ between compilations).
        float sum = 0;
        for (int i = 0; i < L; i++) sum += acc.lane(i);
        for (; d < hs; d++) sum += g[gOff + d] * tmp[d];
        return sum;
    }

    // ---------------------------------------------------------------- tiles

    /** rows[i·hsp + 0..hs) = x[b, t0 + i, head, :] for i < n; the padding columns keep their zeros. */
    private static void readRows(float[] rows, int hsp, Strided x, int b, int t0, int head, int n, int hs) {
        MemorySegment seg = x.segment();
        int full = hs / L * L;
        for (int i = 0; i < n; i++) {
            long at = x.at(b, t0 + i, head);
            int d = 0;
            for (; d < full; d += L) FloatVector.fromMemorySegment(SPECIES, seg, at + 4L * d, NATIVE).intoArray(rows, i * hsp + d);
            for (; d < hs; d++) rows[i * hsp + d] = seg.get(F32, at + 4L * d);
        }
    }

    /** x[b, t0 + i, head, :] += rows[i][0..hs) for i < n. */
    private static void addRows(Strided x, int b, int t0, int head, float[] rows, int hsp, int n, int hs) {
        MemorySegment seg = x.segment();
        int full = hs / L * L;
        for (int i = 0; i < n; i++) {
            long at = x.at(b, t0 + i, head);
            int d = 0;
            for (; d < full; d += L) {
                FloatVector.fromMemorySegment(SPECIES, seg, at + 4L * d, NATIVE)
                        .add(FloatVector.fromArray(SPECIES, rows, i * hsp + d)).intoMemorySegment(seg, at + 4L * d, NATIVE);
            }
            for (; d < hs; d++) seg.set(F32, at + 4L * d, seg.get(F32, at + 4L * d) + rows[i * hsp + d]);
        }
    }

    /** t[d][i] = factor · rows[i][d] for i < n, d < hs; columns i >= n are zero. */
    private static void transpose(float[] t, float[] rows, int hsp, int n, int hs, float factor) {
        for (int d = 0; d < hs; d++) {
            int base = d * BQ;
            for (int i = 0; i < n; i++) t[base + i] = factor * rows[i * hsp + d];
            for (int i = n; i < BQ; i++) t[base + i] = 0f;
        }
    }

    // ---------------------------------------------------------------- exp

    private static final float LOG2E = 1.44269504088896341f;
    /** ln 2 split in two: LN2_HI has 12 low mantissa bits zero, so n · LN2_HI is exact for |n| < 2^12. */
    private static final float LN2_HI = 0.693145751953125f, LN2_LO = 1.42860682030941723212e-6f;
    /** 1.5 · 2^23: adding it rounds a float with |x| < 2^22 to an integer held in the low mantissa bits. */
    private static final float ROUND_MAGIC = 12582912f;
    /** Below this, e^x < 2^-125.5 is returned as 0 (no subnormals); above EXP_MAX the input is clamped. */
    static final float EXP_MIN = -87f, EXP_MAX = 88f;

    /**
     * e^x per lane, written with IEEE-exact lane operations only (add, mul, fma, integer shift), so it gives the
     * same bits whether the JIT has compiled it or not, unlike {@code lanewise(EXP)}, whose interpreted fallback
     * ({@code Math.exp}) and compiled intrinsic may differ in the last bit. Method: x = n·ln2 + r with n an integer
     * and |r| <= ln2/2 (Cody-Waite), e^r by its Taylor polynomial to degree 7 (truncation < 6e-9 relative), times
     * 2^n built in the exponent bits. Accuracy: relative error below 3e-7 (a few ulp) on [-87, 88]; 0 for
     * x < -87 and for -inf; x > 88 is treated as 88; NaN gives NaN.
     */
    static FloatVector exp(FloatVector x) {
        FloatVector xc = x.max(EXP_MIN).min(EXP_MAX);
        FloatVector t = xc.fma(FloatVector.broadcast(SPECIES, LOG2E), FloatVector.broadcast(SPECIES, ROUND_MAGIC));
        FloatVector n = t.sub(ROUND_MAGIC);
        FloatVector r = n.fma(FloatVector.broadcast(SPECIES, -LN2_HI), xc).add(n.mul(-LN2_LO));
        FloatVector p = FloatVector.broadcast(SPECIES, 1f / 5040);
        p = p.fma(r, FloatVector.broadcast(SPECIES, 1f / 720));
        p = p.fma(r, FloatVector.broadcast(SPECIES, 1f / 120));
        p = p.fma(r, FloatVector.broadcast(SPECIES, 1f / 24));
        p = p.fma(r, FloatVector.broadcast(SPECIES, 1f / 6));
        p = p.fma(r, FloatVector.broadcast(SPECIES, 0.5f));
        p = p.fma(r, FloatVector.broadcast(SPECIES, 1f));
        p = p.fma(r, FloatVector.broadcast(SPECIES, 1f));
        // t's bits are 0x4B400000 + n; 2^n has bits (n + 127) << 23 = (tbits << 23) + ((127 - 0x4B400000) << 23).
        IntVector bits = t.reinterpretAsInts().lanewise(VectorOperators.LSHL, 23).add((127 - 0x4B400000) << 23);
        FloatVector y = p.mul(bits.reinterpretAsFloats());
        return y.blend(0f, x.compare(VectorOperators.LT, EXP_MIN));
    }

    // ---------------------------------------------------------------- micro-kernel

    /** Products of a diagonal tile skip the masked triangle per row block [r, r + hb) of C; see {@link #mm}. */
    private static final int FULL = 0, COLS_LOWER = 1, K_BELOW = 2, K_FROM = 3;

    /**
     * The tile product of every step: {@code C[r][0..w) (+)= sum_k A[aOff + r·ars + k·acs] · B[k][0..w)} for r < rows,
     * with C and B row-major (row lengths ldc and ldb, w a multiple of the vector length) and A read by strides, so
     * one kernel serves A, Aᵀ and both layouts of the score tile. Register tiles of 6 rows × 4 vectors (24
     * accumulators, 10 loads per 24 FMAs; B is streamed once per 6 rows), with 6×1, 4×4, 4×1, 1×4 and 1×1 edges.
     * The sum runs over k in [0, n), trimmed per row block [r, r + hb) of C by {@code trim}: FULL no trim;
     * COLS_LOWER only the columns below r + hb, rounded up to whole vectors (C = S of a diagonal tile: row r needs
     * keys up to r); K_BELOW k < r + hb (C = out or dq of a diagonal tile: P and dS are zero for keys after the
     * query); K_FROM k >= r (C = dk or dv of a diagonal tile: zero for queries before the key). Other columns of C
     * are left as they were.
     */
    static void mm(float[] c, int ldc, float[] a, int aOff, int ars, int acs, float[] b, int ldb, int rows, int w,
                   int n, int trim, boolean acc) {
        for (int r = 0, hb; r < rows; r += hb) {
            hb = rows - r >= 6 ? 6 : rows - r >= 4 ? 4 : 1;
            int end = r + hb;
            int cw = trim == COLS_LOWER ? Math.min(w, (end + L - 1) / L * L) : w;
            int k0 = trim == K_FROM ? Math.min(r, n) : 0;
            int k1 = trim == K_BELOW ? Math.min(n, end) : n;
            int cr = r * ldc, ar = aOff + r * ars, j = 0;
            if (hb == 6) {
                for (; j + 4 * L <= cw; j += 4 * L) kernel6x4(c, cr + j, ldc, a, ar, ars, acs, b, j, ldb, k0, k1, acc);
                for (; j < cw; j += L) kernel6x1(c, cr + j, ldc, a, ar, ars, acs, b, j, ldb, k0, k1, acc);
            } else if (hb == 4) {
                for (; j + 4 * L <= cw; j += 4 * L) kernel4x4(c, cr + j, ldc, a, ar, ars, acs, b, j, ldb, k0, k1, acc);
                for (; j < cw; j += L) kernel4x1(c, cr + j, ldc, a, ar, ars, acs, b, j, ldb, k0, k1, acc);
            } else {
                for (; j + 4 * L <= cw; j += 4 * L) kernel1x4(c, cr + j, ldc, a, ar, ars, acs, b, j, ldb, k0, k1, acc);
                for (; j < cw; j += L) kernel1x1(c, cr + j, ldc, a, ar, ars, acs, b, j, ldb, k0, k1, acc);
            }
        }
    }

    private static void kernel6x4(float[] c, int c0, int ldc, float[] a, int a0, int ars, int acs, float[] b, int b0,
                                  int ldb, int k0, int k1, boolean acc) {
        int c1 = c0 + ldc, c2 = c1 + ldc, c3 = c2 + ldc, c4 = c3 + ldc, c5 = c4 + ldc;
        int a1 = a0 + ars, a2 = a1 + ars, a3 = a2 + ars, a4 = a3 + ars, a5 = a4 + ars;
        FloatVector z = FloatVector.zero(SPECIES);
        FloatVector x00 = acc ? FloatVector.fromArray(SPECIES, c, c0) : z, x01 = acc ? FloatVector.fromArray(SPECIES, c, c0 + 1 * L) : z;
        FloatVector x02 = acc ? FloatVector.fromArray(SPECIES, c, c0 + 2 * L) : z, x03 = acc ? FloatVector.fromArray(SPECIES, c, c0 + 3 * L) : z;
        FloatVector x10 = acc ? FloatVector.fromArray(SPECIES, c, c1) : z, x11 = acc ? FloatVector.fromArray(SPECIES, c, c1 + 1 * L) : z;
        FloatVector x12 = acc ? FloatVector.fromArray(SPECIES, c, c1 + 2 * L) : z, x13 = acc ? FloatVector.fromArray(SPECIES, c, c1 + 3 * L) : z;
        FloatVector x20 = acc ? FloatVector.fromArray(SPECIES, c, c2) : z, x21 = acc ? FloatVector.fromArray(SPECIES, c, c2 + 1 * L) : z;
        FloatVector x22 = acc ? FloatVector.fromArray(SPECIES, c, c2 + 2 * L) : z, x23 = acc ? FloatVector.fromArray(SPECIES, c, c2 + 3 * L) : z;
        FloatVector x30 = acc ? FloatVector.fromArray(SPECIES, c, c3) : z, x31 = acc ? FloatVector.fromArray(SPECIES, c, c3 + 1 * L) : z;
        FloatVector x32 = acc ? FloatVector.fromArray(SPECIES, c, c3 + 2 * L) : z, x33 = acc ? FloatVector.fromArray(SPECIES, c, c3 + 3 * L) : z;
        FloatVector x40 = acc ? FloatVector.fromArray(SPECIES, c, c4) : z, x41 = acc ? FloatVector.fromArray(SPECIES, c, c4 + 1 * L) : z;
        FloatVector x42 = acc ? FloatVector.fromArray(SPECIES, c, c4 + 2 * L) : z, x43 = acc ? FloatVector.fromArray(SPECIES, c, c4 + 3 * L) : z;
        FloatVector x50 = acc ? FloatVector.fromArray(SPECIES, c, c5) : z, x51 = acc ? FloatVector.fromArray(SPECIES, c, c5 + 1 * L) : z;
        FloatVector x52 = acc ? FloatVector.fromArray(SPECIES, c, c5 + 2 * L) : z, x53 = acc ? FloatVector.fromArray(SPECIES, c, c5 + 3 * L) : z;
        for (int k = k0, ak = k0 * acs, bk = b0 + k0 * ldb; k < k1; k++, ak += acs, bk += ldb) {
            FloatVector w0 = FloatVector.fromArray(SPECIES, b, bk);
            FloatVector w1 = FloatVector.fromArray(SPECIES, b, bk + 1 * L);
            FloatVector w2 = FloatVector.fromArray(SPECIES, b, bk + 2 * L);
            FloatVector w3 = FloatVector.fromArray(SPECIES, b, bk + 3 * L);
            FloatVector y0 = FloatVector.broadcast(SPECIES, a[a0 + ak]);
            x00 = w0.fma(y0, x00); x01 = w1.fma(y0, x01); x02 = w2.fma(y0, x02); x03 = w3.fma(y0, x03);
            FloatVector y1 = FloatVector.broadcast(SPECIES, a[a1 + ak]);
            x10 = w0.fma(y1, x10); x11 = w1.fma(y1, x11); x12 = w2.fma(y1, x12); x13 = w3.fma(y1, x13);
            FloatVector y2 = FloatVector.broadcast(SPECIES, a[a2 + ak]);
            x20 = w0.fma(y2, x20); x21 = w1.fma(y2, x21); x22 = w2.fma(y2, x22); x23 = w3.fma(y2, x23);
            FloatVector y3 = FloatVector.broadcast(SPECIES, a[a3 + ak]);
            x30 = w0.fma(y3, x30); x31 = w1.fma(y3, x31); x32 = w2.fma(y3, x32); x33 = w3.fma(y3, x33);
            FloatVector y4 = FloatVector.broadcast(SPECIES, a[a4 + ak]);
            x40 = w0.fma(y4, x40); x41 = w1.fma(y4, x41); x42 = w2.fma(y4, x42); x43 = w3.fma(y4, x43);
            FloatVector y5 = FloatVector.broadcast(SPECIES, a[a5 + ak]);
            x50 = w0.fma(y5, x50); x51 = w1.fma(y5, x51); x52 = w2.fma(y5, x52); x53 = w3.fma(y5, x53);
        }
        x00.intoArray(c, c0); x01.intoArray(c, c0 + 1 * L); x02.intoArray(c, c0 + 2 * L); x03.intoArray(c, c0 + 3 * L);
        x10.intoArray(c, c1); x11.intoArray(c, c1 + 1 * L); x12.intoArray(c, c1 + 2 * L); x13.intoArray(c, c1 + 3 * L);
        x20.intoArray(c, c2); x21.intoArray(c, c2 + 1 * L); x22.intoArray(c, c2 + 2 * L); x23.intoArray(c, c2 + 3 * L);
        x30.intoArray(c, c3); x31.intoArray(c, c3 + 1 * L); x32.intoArray(c, c3 + 2 * L); x33.intoArray(c, c3 + 3 * L);
        x40.intoArray(c, c4); x41.intoArray(c, c4 + 1 * L); x42.intoArray(c, c4 + 2 * L); x43.intoArray(c, c4 + 3 * L);
        x50.intoArray(c, c5); x51.intoArray(c, c5 + 1 * L); x52.intoArray(c, c5 + 2 * L); x53.intoArray(c, c5 + 3 * L);
    }

    private static void kernel6x1(float[] c, int c0, int ldc, float[] a, int a0, int ars, int acs, float[] b, int b0,
                                  int ldb, int k0, int k1, boolean acc) {
        int c1 = c0 + ldc, c2 = c1 + ldc, c3 = c2 + ldc, c4 = c3 + ldc, c5 = c4 + ldc;
        int a1 = a0 + ars, a2 = a1 + ars, a3 = a2 + ars, a4 = a3 + ars, a5 = a4 + ars;
        FloatVector z = FloatVector.zero(SPECIES);
        FloatVector x00 = acc ? FloatVector.fromArray(SPECIES, c, c0) : z;
        FloatVector x10 = acc ? FloatVector.fromArray(SPECIES, c, c1) : z;
        FloatVector x20 = acc ? FloatVector.fromArray(SPECIES, c, c2) : z;
        FloatVector x30 = acc ? FloatVector.fromArray(SPECIES, c, c3) : z;
        FloatVector x40 = acc ? FloatVector.fromArray(SPECIES, c, c4) : z;
        FloatVector x50 = acc ? FloatVector.fromArray(SPECIES, c, c5) : z;
        for (int k = k0, ak = k0 * acs, bk = b0 + k0 * ldb; k < k1; k++, ak += acs, bk += ldb) {
            FloatVector w0 = FloatVector.fromArray(SPECIES, b, bk);
            FloatVector y0 = FloatVector.broadcast(SPECIES, a[a0 + ak]);
            x00 = w0.fma(y0, x00);
            FloatVector y1 = FloatVector.broadcast(SPECIES, a[a1 + ak]);
            x10 = w0.fma(y1, x10);
            FloatVector y2 = FloatVector.broadcast(SPECIES, a[a2 + ak]);
            x20 = w0.fma(y2, x20);
            FloatVector y3 = FloatVector.broadcast(SPECIES, a[a3 + ak]);
            x30 = w0.fma(y3, x30);
            FloatVector y4 = FloatVector.broadcast(SPECIES, a[a4 + ak]);
            x40 = w0.fma(y4, x40);
            FloatVector y5 = FloatVector.broadcast(SPECIES, a[a5 + ak]);
            x50 = w0.fma(y5, x50);
        }
        x00.intoArray(c, c0);
        x10.intoArray(c, c1);
        x20.intoArray(c, c2);
        x30.intoArray(c, c3);
        x40.intoArray(c, c4);
        x50.intoArray(c, c5);
    }

    private static void kernel4x4(float[] c, int c0, int ldc, float[] a, int a0, int ars, int acs, float[] b, int b0,
                                  int ldb, int k0, int k1, boolean acc) {
        int c1 = c0 + ldc, c2 = c1 + ldc, c3 = c2 + ldc;
        int a1 = a0 + ars, a2 = a1 + ars, a3 = a2 + ars;
        FloatVector z = FloatVector.zero(SPECIES);
        FloatVector x00 = acc ? FloatVector.fromArray(SPECIES, c, c0) : z, x01 = acc ? FloatVector.fromArray(SPECIES, c, c0 + 1 * L) : z;
        FloatVector x02 = acc ? FloatVector.fromArray(SPECIES, c, c0 + 2 * L) : z, x03 = acc ? FloatVector.fromArray(SPECIES, c, c0 + 3 * L) : z;
        FloatVector x10 = acc ? FloatVector.fromArray(SPECIES, c, c1) : z, x11 = acc ? FloatVector.fromArray(SPECIES, c, c1 + 1 * L) : z;
        FloatVector x12 = acc ? FloatVector.fromArray(SPECIES, c, c1 + 2 * L) : z, x13 = acc ? FloatVector.fromArray(SPECIES, c, c1 + 3 * L) : z;
        FloatVector x20 = acc ? FloatVector.fromArray(SPECIES, c, c2) : z, x21 = acc ? FloatVector.fromArray(SPECIES, c, c2 + 1 * L) : z;
        FloatVector x22 = acc ? FloatVector.fromArray(SPECIES, c, c2 + 2 * L) : z, x23 = acc ? FloatVector.fromArray(SPECIES, c, c2 + 3 * L) : z;
        FloatVector x30 = acc ? FloatVector.fromArray(SPECIES, c, c3) : z, x31 = acc ? FloatVector.fromArray(SPECIES, c, c3 + 1 * L) : z;
        FloatVector x32 = acc ? FloatVector.fromArray(SPECIES, c, c3 + 2 * L) : z, x33 = acc ? FloatVector.fromArray(SPECIES, c, c3 + 3 * L) : z;
        for (int k = k0, ak = k0 * acs, bk = b0 + k0 * ldb; k < k1; k++, ak += acs, bk += ldb) {
            FloatVector w0 = FloatVector.fromArray(SPECIES, b, bk);
            FloatVector w1 = FloatVector.fromArray(SPECIES, b, bk + 1 * L);
            FloatVector w2 = FloatVector.fromArray(SPECIES, b, bk + 2 * L);
            FloatVector w3 = FloatVector.fromArray(SPECIES, b, bk + 3 * L);
            FloatVector y0 = FloatVector.broadcast(SPECIES, a[a0 + ak]);
            x00 = w0.fma(y0, x00); x01 = w1.fma(y0, x01); x02 = w2.fma(y0, x02); x03 = w3.fma(y0, x03);
            FloatVector y1 = FloatVector.broadcast(SPECIES, a[a1 + ak]);
            x10 = w0.fma(y1, x10); x11 = w1.fma(y1, x11); x12 = w2.fma(y1, x12); x13 = w3.fma(y1, x13);
            FloatVector y2 = FloatVector.broadcast(SPECIES, a[a2 + ak]);
            x20 = w0.fma(y2, x20); x21 = w1.fma(y2, x21); x22 = w2.fma(y2, x22); x23 = w3.fma(y2, x23);
            FloatVector y3 = FloatVector.broadcast(SPECIES, a[a3 + ak]);
            x30 = w0.fma(y3, x30); x31 = w1.fma(y3, x31); x32 = w2.fma(y3, x32); x33 = w3.fma(y3, x33);
        }
        x00.intoArray(c, c0); x01.intoArray(c, c0 + 1 * L); x02.intoArray(c, c0 + 2 * L); x03.intoArray(c, c0 + 3 * L);
        x10.intoArray(c, c1); x11.intoArray(c, c1 + 1 * L); x12.intoArray(c, c1 + 2 * L); x13.intoArray(c, c1 + 3 * L);
        x20.intoArray(c, c2); x21.intoArray(c, c2 + 1 * L); x22.intoArray(c, c2 + 2 * L); x23.intoArray(c, c2 + 3 * L);
        x30.intoArray(c, c3); x31.intoArray(c, c3 + 1 * L); x32.intoArray(c, c3 + 2 * L); x33.intoArray(c, c3 + 3 * L);
    }

    private static void kernel4x1(float[] c, int c0, int ldc, float[] a, int a0, int ars, int acs, float[] b, int b0,
                                  int ldb, int k0, int k1, boolean acc) {
        int c1 = c0 + ldc, c2 = c1 + ldc, c3 = c2 + ldc;
        int a1 = a0 + ars, a2 = a1 + ars, a3 = a2 + ars;
        FloatVector z = FloatVector.zero(SPECIES);
        FloatVector x00 = acc ? FloatVector.fromArray(SPECIES, c, c0) : z;
        FloatVector x10 = acc ? FloatVector.fromArray(SPECIES, c, c1) : z;
        FloatVector x20 = acc ? FloatVector.fromArray(SPECIES, c, c2) : z;
        FloatVector x30 = acc ? FloatVector.fromArray(SPECIES, c, c3) : z;
        for (int k = k0, ak = k0 * acs, bk = b0 + k0 * ldb; k < k1; k++, ak += acs, bk += ldb) {
            FloatVector w0 = FloatVector.fromArray(SPECIES, b, bk);
            FloatVector y0 = FloatVector.broadcast(SPECIES, a[a0 + ak]);
            x00 = w0.fma(y0, x00);
            FloatVector y1 = FloatVector.broadcast(SPECIES, a[a1 + ak]);
            x10 = w0.fma(y1, x10);
            FloatVector y2 = FloatVector.broadcast(SPECIES, a[a2 + ak]);
            x20 = w0.fma(y2, x20);
            FloatVector y3 = FloatVector.broadcast(SPECIES, a[a3 + ak]);
            x30 = w0.fma(y3, x30);
        }
        x00.intoArray(c, c0);
        x10.intoArray(c, c1);
        x20.intoArray(c, c2);
        x30.intoArray(c, c3);
    }

    private static void kernel1x4(float[] c, int c0, int ldc, float[] a, int a0, int ars, int acs, float[] b, int b0,
                                  int ldb, int k0, int k1, boolean acc) {
        FloatVector z = FloatVector.zero(SPECIES);
        FloatVector x00 = acc ? FloatVector.fromArray(SPECIES, c, c0) : z, x01 = acc ? FloatVector.fromArray(SPECIES, c, c0 + 1 * L) : z;
        FloatVector x02 = acc ? FloatVector.fromArray(SPECIES, c, c0 + 2 * L) : z, x03 = acc ? FloatVector.fromArray(SPECIES, c, c0 + 3 * L) : z;
        for (int k = k0, ak = k0 * acs, bk = b0 + k0 * ldb; k < k1; k++, ak += acs, bk += ldb) {
            FloatVector w0 = FloatVector.fromArray(SPECIES, b, bk);
            FloatVector w1 = FloatVector.fromArray(SPECIES, b, bk + 1 * L);
            FloatVector w2 = FloatVector.fromArray(SPECIES, b, bk + 2 * L);
            FloatVector w3 = FloatVector.fromArray(SPECIES, b, bk + 3 * L);
            FloatVector y0 = FloatVector.broadcast(SPECIES, a[a0 + ak]);
            x00 = w0.fma(y0, x00); x01 = w1.fma(y0, x01); x02 = w2.fma(y0, x02); x03 = w3.fma(y0, x03);
        }
        x00.intoArray(c, c0); x01.intoArray(c, c0 + 1 * L); x02.intoArray(c, c0 + 2 * L); x03.intoArray(c, c0 + 3 * L);
    }

    private static void kernel1x1(float[] c, int c0, int ldc, float[] a, int a0, int ars, int acs, float[] b, int b0,
                                  int ldb, int k0, int k1, boolean acc) {
        FloatVector z = FloatVector.zero(SPECIES);
        FloatVector x00 = acc ? FloatVector.fromArray(SPECIES, c, c0) : z;
        for (int k = k0, ak = k0 * acs, bk = b0 + k0 * ldb; k < k1; k++, ak += acs, bk += ldb) {
            FloatVector w0 = FloatVector.fromArray(SPECIES, b, bk);
            FloatVector y0 = FloatVector.broadcast(SPECIES, a[a0 + ak]);
            x00 = w0.fma(y0, x00);
        }
        x00.intoArray(c, c0);
    }
}
