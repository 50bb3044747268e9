package dev.shardwise.core.kernels;

import dev.shardwise.core.exec.ComputePool;
import dev.shardwise.core.tensor.Tensor;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.IntVector;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorSpecies;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;
import java.util.Arrays;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.function.Supplier;

import static dev.shardwise.core.kernels.TileProduct.COLS_LOWER;
import static dev.shardwise.core.kernels.TileProduct.FULL;
import static dev.shardwise.core.kernels.TileProduct.K_BELOW;
import static dev.shardwise.core.kernels.TileProduct.K_FROM;
import static dev.shardwise.core.kernels.TileProduct.mm;

/**
 * The fp32 FlashAttention-2 kernel behind {@link Attention}: queries and keys in tiles of {@value #BQ} rows,
 * online softmax, register-tiled Vector API micro-kernels for the tile products, fp32 accumulation.
 *
 * <p>One micro-kernel ({@link TileProduct#mm}) does every tile product: a broadcast scalar from a strided operand times
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
 * Exponentials use {@link #exp}, which is bit-reproducible whether compiled or not (the P tiles use its unclamped
 * form: their arguments are finite and at most about 0). Every pool thread allocates its scratch once per call and
 * reuses it for the tasks it claims (a call-local counter hands out the tasks).
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
        return 4L * (BACKWARD_CHUNK * (3 * BQ * hsp + 2 * hs * BQ) + 4 * BQ * hsp + 2 * BQ * BQ + 2 * BQ + L);
    }

    /**
     * Runs {@code units} tasks on the current pool, each pool thread claiming tasks from a call-local counter and
     * reusing one scratch object (made by {@code scratch}) for all of them.
     */
    private static <W> void runUnits(int units, Supplier<W> scratch, UnitBody<W> body) {
        ComputePool pool = ComputePool.current();
        AtomicInteger next = new AtomicInteger();
        pool.parallelFor(Math.min(pool.threads(), units), slot -> {
            int u = next.getAndIncrement();
            if (u >= units) return;                  // another thread took every unit: allocate nothing
            W w = scratch.get();
            for (; u < units; u = next.getAndIncrement()) body.run(w, u);
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
                FloatVector p = expUnchecked(FloatVector.fromArray(SPECIES, s, at).sub(mi));
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
            float sum = laneSum(l, i * L);
            float inv = 1f / sum;
            long at = so.at(b, q0 + i, h);
            FloatVector iv = FloatVector.broadcast(SPECIES, inv);
            int d = 0;
            for (; d < full; d += L) FloatVector.fromArray(SPECIES, o, i * hsp + d).mul(iv).intoMemorySegment(seg, at + 4L * d, NATIVE);
            for (; d < hs; d++) seg.set(F32, at + 4L * d, o[i * hsp + d] * inv);
            sl.segment().set(F32, sl.at(b, h, q0 + i), m[i] + (float) Math.log(sum));
        }
    }

    /** x[at] + ... + x[at + L - 1] in a fixed order: four interleaved partial sums (shorter dependency chains). */
    private static float laneSum(float[] x, int at) {
        float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        int lane = 0;
        for (; lane + 4 <= L; lane += 4) {
            s0 += x[at + lane];
            s1 += x[at + lane + 1];
            s2 += x[at + lane + 2];
            s3 += x[at + lane + 3];
        }
        for (; lane < L; lane++) s0 += x[at + lane];
        return (s0 + s1) + (s2 + s3);
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
        final float[] q, g, dq;              // q rows, dout rows, dq rows of one query block [BQ][hsp]
        final float[] vRows;                 // v rows (to build vᵀ), then the query block's out rows (for D)
        final float[] p, ds;                 // P, then dP and scale · dS [query][key]
        final float[] lse = new float[BQ], dRow = new float[BQ], lanes = new float[L];

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
            }
            for (int h = kvh * group; h < (kvh + 1) * group; h++) {
                for (int qb = kc0; qb < nqb; qb++) {
                    int q0 = qb * BQ, qn = Math.min(BQ, nt - q0);
                    readRows(w.q, hsp, sq, b, q0, h, qn, hs);
                    readRows(w.g, hsp, sdo, b, q0, h, qn, hs);
                    readRows(w.vRows, hsp, so, b, q0, h, qn, hs);      // out rows, for D
                    for (int i = 0; i < qn; i++) {
                        w.lse[i] = sl.segment().get(F32, sl.at(b, h, q0 + i));
                        w.dRow[i] = rowDot(w.g, w.vRows, i * hsp, hsp, w.lanes);
                    }
                    for (int kb = kc0; kb < Math.min(kc1, qb + 1); kb++) {
                        // The first contribution to a key block's dk and dv (its diagonal tile, first head) overwrites.
                        boolean diag = qb == kb;
                        backwardTile(w, kb - kc0, qn, Math.min(BQ, nt - kb * BQ), diag, hsp, hs, scale, kb > kc0,
                                !(diag && h == kvh * group));
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
     * dk += dSᵀ·q, dq (+)= dS·k; w.dq is overwritten unless accumulateDq, dk and dv unless accumulateKv.
     */
    private static void backwardTile(BackwardScratch w, int j, int qn, int kn, boolean diag, int hsp, int hs,
                                     float scale, boolean accumulateDq, boolean accumulateKv) {
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
                FloatVector pv = expUnchecked(FloatVector.fromArray(SPECIES, p, at).sub(lseI));
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
        mm(w.dv[j], hsp, p, 0, 1, BQ, w.g, hsp, kn, hsp, qn, diag ? K_FROM : FULL, accumulateKv);
        // dk[key] += sum_query dS[query][key] · q[query]
        mm(w.dk[j], hsp, ds, 0, 1, BQ, w.q, hsp, kn, hsp, qn, diag ? K_FROM : FULL, accumulateKv);
        // dq[query] += sum_key dS[query][key] · k[key]
        mm(w.dq, hsp, ds, 0, BQ, 1, w.k[j], hsp, qn, hsp, kn, diag ? K_BELOW : FULL, accumulateDq);
    }

    /**
     * x[off + 0..hsp) · y[off + 0..hsp) (padded rows: the padding is zero in both): lanewise products summed over
     * the vectors, then the lanes in a fixed order. tmp: L floats.
     */
    private static float rowDot(float[] x, float[] y, int off, int hsp, float[] tmp) {
        FloatVector acc = FloatVector.zero(SPECIES);
        for (int d = 0; d < hsp; d += L) {
            acc = FloatVector.fromArray(SPECIES, x, off + d).fma(FloatVector.fromArray(SPECIES, y, off + d), acc);
        }
        // Not reduceLanes: its order is left open, so it could differ between compilations.
        acc.intoArray(tmp, 0);
        return laneSum(tmp, 0);
    }

    // ---------------------------------------------------------------- tiles

    /*
     * Index vectors of the 16×16 block transpose (for 16-lane vectors): stage h in {8, 4, 2, 1} swaps the off-diagonal
     * h×h blocks of every 2h×2h block. Row i (with i & h == 0) and row i + h become LO_h.selectFrom(row i, row i + h)
     * and HI_h.selectFrom(row i, row i + h); indexes >= 16 pick from the second vector.
     */
    private static final FloatVector LO8 = swapIndex(8, false), HI8 = swapIndex(8, true), LO4 = swapIndex(4, false),
            HI4 = swapIndex(4, true), LO2 = swapIndex(2, false), HI2 = swapIndex(2, true), LO1 = swapIndex(1, false),
            HI1 = swapIndex(1, true);

    private static FloatVector swapIndex(int h, boolean high) {
        float[] idx = new float[L];
        for (int j = 0; j < L; j++) {
            boolean left = (j & h) == 0;
            idx[j] = high ? (left ? j + h : L + j) : (left ? j : L + j - h);
        }
        return L == 16 ? FloatVector.fromArray(SPECIES, idx, 0) : null;
    }

    /**
     * t[d][i] = factor · rows[i][d] for i < BQ, d < hs, for 16-lane vectors and hs a multiple of 16: 16×16 blocks
     * transposed in registers with two-source lane permutations, four stages of 16 each.
     */
    private static void transpose16(float[] t, float[] rows, int hsp, int hs, float factor) {
        FloatVector fv = FloatVector.broadcast(SPECIES, factor);
        FloatVector lo8 = LO8, hi8 = HI8, lo4 = LO4, hi4 = HI4, lo2 = LO2, hi2 = HI2, lo1 = LO1, hi1 = HI1;
        for (int i0 = 0; i0 < BQ; i0 += 16) {
            for (int d0 = 0; d0 < hs; d0 += 16) {
                int a0 = i0 * hsp + d0;
                FloatVector v0 = FloatVector.fromArray(SPECIES, rows, a0 + 0 * hsp);
                FloatVector v1 = FloatVector.fromArray(SPECIES, rows, a0 + 1 * hsp);
                FloatVector v2 = FloatVector.fromArray(SPECIES, rows, a0 + 2 * hsp);
                FloatVector v3 = FloatVector.fromArray(SPECIES, rows, a0 + 3 * hsp);
                FloatVector v4 = FloatVector.fromArray(SPECIES, rows, a0 + 4 * hsp);
                FloatVector v5 = FloatVector.fromArray(SPECIES, rows, a0 + 5 * hsp);
                FloatVector v6 = FloatVector.fromArray(SPECIES, rows, a0 + 6 * hsp);
                FloatVector v7 = FloatVector.fromArray(SPECIES, rows, a0 + 7 * hsp);
                FloatVector v8 = FloatVector.fromArray(SPECIES, rows, a0 + 8 * hsp);
                FloatVector v9 = FloatVector.fromArray(SPECIES, rows, a0 + 9 * hsp);
                FloatVector v10 = FloatVector.fromArray(SPECIES, rows, a0 + 10 * hsp);
                FloatVector v11 = FloatVector.fromArray(SPECIES, rows, a0 + 11 * hsp);
                FloatVector v12 = FloatVector.fromArray(SPECIES, rows, a0 + 12 * hsp);
                FloatVector v13 = FloatVector.fromArray(SPECIES, rows, a0 + 13 * hsp);
                FloatVector v14 = FloatVector.fromArray(SPECIES, rows, a0 + 14 * hsp);
                FloatVector v15 = FloatVector.fromArray(SPECIES, rows, a0 + 15 * hsp);
                FloatVector s8x0 = lo8.selectFrom(v0, v8), s8x8 = hi8.selectFrom(v0, v8);
                FloatVector s8x1 = lo8.selectFrom(v1, v9), s8x9 = hi8.selectFrom(v1, v9);
                FloatVector s8x2 = lo8.selectFrom(v2, v10), s8x10 = hi8.selectFrom(v2, v10);
                FloatVector s8x3 = lo8.selectFrom(v3, v11), s8x11 = hi8.selectFrom(v3, v11);
                FloatVector s8x4 = lo8.selectFrom(v4, v12), s8x12 = hi8.selectFrom(v4, v12);
                FloatVector s8x5 = lo8.selectFrom(v5, v13), s8x13 = hi8.selectFrom(v5, v13);
                FloatVector s8x6 = lo8.selectFrom(v6, v14), s8x14 = hi8.selectFrom(v6, v14);
                FloatVector s8x7 = lo8.selectFrom(v7, v15), s8x15 = hi8.selectFrom(v7, v15);
                FloatVector s4x0 = lo4.selectFrom(s8x0, s8x4), s4x4 = hi4.selectFrom(s8x0, s8x4);
                FloatVector s4x1 = lo4.selectFrom(s8x1, s8x5), s4x5 = hi4.selectFrom(s8x1, s8x5);
                FloatVector s4x2 = lo4.selectFrom(s8x2, s8x6), s4x6 = hi4.selectFrom(s8x2, s8x6);
                FloatVector s4x3 = lo4.selectFrom(s8x3, s8x7), s4x7 = hi4.selectFrom(s8x3, s8x7);
                FloatVector s4x8 = lo4.selectFrom(s8x8, s8x12), s4x12 = hi4.selectFrom(s8x8, s8x12);
                FloatVector s4x9 = lo4.selectFrom(s8x9, s8x13), s4x13 = hi4.selectFrom(s8x9, s8x13);
                FloatVector s4x10 = lo4.selectFrom(s8x10, s8x14), s4x14 = hi4.selectFrom(s8x10, s8x14);
                FloatVector s4x11 = lo4.selectFrom(s8x11, s8x15), s4x15 = hi4.selectFrom(s8x11, s8x15);
                FloatVector s2x0 = lo2.selectFrom(s4x0, s4x2), s2x2 = hi2.selectFrom(s4x0, s4x2);
                FloatVector s2x1 = lo2.selectFrom(s4x1, s4x3), s2x3 = hi2.selectFrom(s4x1, s4x3);
                FloatVector s2x4 = lo2.selectFrom(s4x4, s4x6), s2x6 = hi2.selectFrom(s4x4, s4x6);
                FloatVector s2x5 = lo2.selectFrom(s4x5, s4x7), s2x7 = hi2.selectFrom(s4x5, s4x7);
                FloatVector s2x8 = lo2.selectFrom(s4x8, s4x10), s2x10 = hi2.selectFrom(s4x8, s4x10);
                FloatVector s2x9 = lo2.selectFrom(s4x9, s4x11), s2x11 = hi2.selectFrom(s4x9, s4x11);
                FloatVector s2x12 = lo2.selectFrom(s4x12, s4x14), s2x14 = hi2.selectFrom(s4x12, s4x14);
                FloatVector s2x13 = lo2.selectFrom(s4x13, s4x15), s2x15 = hi2.selectFrom(s4x13, s4x15);
                FloatVector s1x0 = lo1.selectFrom(s2x0, s2x1), s1x1 = hi1.selectFrom(s2x0, s2x1);
                FloatVector s1x2 = lo1.selectFrom(s2x2, s2x3), s1x3 = hi1.selectFrom(s2x2, s2x3);
                FloatVector s1x4 = lo1.selectFrom(s2x4, s2x5), s1x5 = hi1.selectFrom(s2x4, s2x5);
                FloatVector s1x6 = lo1.selectFrom(s2x6, s2x7), s1x7 = hi1.selectFrom(s2x6, s2x7);
                FloatVector s1x8 = lo1.selectFrom(s2x8, s2x9), s1x9 = hi1.selectFrom(s2x8, s2x9);
                FloatVector s1x10 = lo1.selectFrom(s2x10, s2x11), s1x11 = hi1.selectFrom(s2x10, s2x11);
                FloatVector s1x12 = lo1.selectFrom(s2x12, s2x13), s1x13 = hi1.selectFrom(s2x12, s2x13);
                FloatVector s1x14 = lo1.selectFrom(s2x14, s2x15), s1x15 = hi1.selectFrom(s2x14, s2x15);
                s1x0.mul(fv).intoArray(t, (d0 + 0) * BQ + i0);
                s1x1.mul(fv).intoArray(t, (d0 + 1) * BQ + i0);
                s1x2.mul(fv).intoArray(t, (d0 + 2) * BQ + i0);
                s1x3.mul(fv).intoArray(t, (d0 + 3) * BQ + i0);
                s1x4.mul(fv).intoArray(t, (d0 + 4) * BQ + i0);
                s1x5.mul(fv).intoArray(t, (d0 + 5) * BQ + i0);
                s1x6.mul(fv).intoArray(t, (d0 + 6) * BQ + i0);
                s1x7.mul(fv).intoArray(t, (d0 + 7) * BQ + i0);
                s1x8.mul(fv).intoArray(t, (d0 + 8) * BQ + i0);
                s1x9.mul(fv).intoArray(t, (d0 + 9) * BQ + i0);
                s1x10.mul(fv).intoArray(t, (d0 + 10) * BQ + i0);
                s1x11.mul(fv).intoArray(t, (d0 + 11) * BQ + i0);
                s1x12.mul(fv).intoArray(t, (d0 + 12) * BQ + i0);
                s1x13.mul(fv).intoArray(t, (d0 + 13) * BQ + i0);
                s1x14.mul(fv).intoArray(t, (d0 + 14) * BQ + i0);
                s1x15.mul(fv).intoArray(t, (d0 + 15) * BQ + i0);
            }
        }
    }


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
        if (L == 16 && n == BQ && hs % 16 == 0) {
            transpose16(t, rows, hsp, hs, factor);
            return;
        }
        for (int d = 0; d < hs; d++) {
            int base = d * BQ;
            for (int i = 0; i < n; i++) t[base + i] = factor * rows[i * hsp + d];
            for (int i = n; i < BQ; i++) t[base + i] = 0f;
        }
    }

    // ---------------------------------------------------------------- exp

    /*
     * e^x = 2^y with y = x·log2(e) = k + f, k = round(y), f in [-1/2, 1/2] (the approach of VecOps.exp): 2^f is a
     * degree-6 polynomial fitted for least maximum relative error on [-1/2, 1/2] (2e-9 in exact arithmetic), 2^k
     * is built in the exponent bits. Adding BIAS = 1.5·2^23 + 127 to y rounds it to an integer and leaves k + 127 in
     * the low mantissa bits of t; clamping those bits (as ints) to [0, 254] flushes 2^k to +0 below and caps it at
     * 2^127 above. log2(e) is split in two (LOG2E + LOG2E_LO) so that f does not carry |x|·1e-8 of rounding error.
     * 14 vector operations, all IEEE-exact lane operations, so the bits do not depend on compilation.
     */
    private static final float LOG2E = 1.44269504f;
    private static final float LOG2E_LO = (float) (1.4426950408889634 - 1.44269504f);
    private static final float BIAS = 12583039f;                                   // 1.5 · 2^23 + 127
    private static final int K_LO = Float.floatToRawIntBits(12582912f);            // t's bits for k = -127
    private static final int K_HI = Float.floatToRawIntBits(12583166f);            // t's bits for k = 127
    private static final float C6 = 1.5353361959569156e-4f, C5 = 1.3398875016719103e-3f, C4 = 9.61843691766262e-3f,
            C3 = 5.5503323674201965e-2f, C2 = 0.24022647738456726f, C1 = 0.6931471824645996f;
    /** The range where {@link #exp} is accurate to 3e-7 relative; below it results go to 0, above they saturate. */
    static final float EXP_MIN = -87f, EXP_MAX = 88f;
    /** Bounds of {@link #exp}'s clamp: e^-104 is below the smallest subnormal; 88.3 keeps k at most 127. */
    private static final float CLAMP_LO = -104f, CLAMP_HI = 88.3f;

    /**
     * e^x per lane. Relative error below 3e-7 on [-87, 88]; 0 below about -87.3 (no subnormals) and for -inf;
     * x above 88.3 is treated as 88.3; NaN gives NaN.
     */
    static FloatVector exp(FloatVector x) {
        FloatVector lo = FloatVector.broadcast(SPECIES, CLAMP_LO), hi = FloatVector.broadcast(SPECIES, CLAMP_HI);
        return expUnchecked(x.blend(lo, x.compare(VectorOperators.LT, lo)).blend(hi, x.compare(VectorOperators.GT, hi)));
    }

    /**
     * {@link #exp} without its clamp (four operations fewer), for finite arguments of the softmax loops: the same bits
     * for x in [-104, 88.3]; 0 down to about -5e6, NaN for -inf and NaN, a huge value or +inf above 88.3.
     */
    static FloatVector expUnchecked(FloatVector x) {
        FloatVector log2e = FloatVector.broadcast(SPECIES, LOG2E), bias = FloatVector.broadcast(SPECIES, BIAS);
        FloatVector t = x.fma(log2e, bias);                                        // low mantissa bits: k + 127
        FloatVector f = x.fma(FloatVector.broadcast(SPECIES, LOG2E_LO), x.fma(log2e, bias.sub(t)));   // y - k
        IntVector biased = t.reinterpretAsInts().lanewise(VectorOperators.MAX, K_LO).lanewise(VectorOperators.MIN, K_HI);
        FloatVector twoK = biased.lanewise(VectorOperators.LSHL, 23).reinterpretAsFloats();
        FloatVector p = FloatVector.broadcast(SPECIES, C6).fma(f, FloatVector.broadcast(SPECIES, C5))
                .fma(f, FloatVector.broadcast(SPECIES, C4)).fma(f, FloatVector.broadcast(SPECIES, C3))
                .fma(f, FloatVector.broadcast(SPECIES, C2)).fma(f, FloatVector.broadcast(SPECIES, C1))
                .fma(f, FloatVector.broadcast(SPECIES, 1f));
        return p.mul(twoK);
    }
}
