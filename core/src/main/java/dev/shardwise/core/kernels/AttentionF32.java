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

/**
 * The fp32 FlashAttention-2 kernel behind {@link Attention}: queries and keys in tiles of {@value #BQ} rows,
 * online softmax, register-tiled Vector API micro-kernels for the tile products, fp32 accumulation.
 *
 * <p>One micro-kernel ({@link #mm}) does every tile product: a broadcast scalar from a strided operand times
 * contiguous vector rows of the other, so the layouts are chosen to give it contiguous rows.
 * <ul>
 * <li>Forward keeps score tiles transposed, {@code Sᵀ[key][query]}, with queries in vector lanes: the online-softmax
 * state (running max m, running sum l, rescale alpha) is then lanewise, and outᵀ accumulates as [HS][query]. The
 * query tile is transposed once per query block; key and value tiles are only copied row by row.
 * <li>Backward runs key blocks outer and keeps scores row-major, {@code S[query][key]}: k and v are transposed
 * once per key block, q and dout tiles only copied, dk and dv accumulate in tiles, and dq gets one addition per
 * (key block, query block) pair. D = rowsum(dout ∘ out) is computed once, O(B·NH·T) floats.
 * </ul>
 * Exponentials use {@link #exp}, which is bit-reproducible whether compiled or not.
 *
 * <p>Parallelism: forward over (batch, head, chunk of query blocks) tasks; backward over
 * (batch, key/value head) tasks, each owning dk and dv of its kv head and dq of the query heads that read it,
 * so no two tasks write the same element and each sum runs in a fixed order: bit-identical for any thread count.
 */
final class AttentionF32 {
    static final VectorSpecies<Float> SPECIES = FloatVector.SPECIES_PREFERRED;
    private static final int L = SPECIES.length();
    /** Query and key tile size in rows: 64×64 score tiles (16 KiB) stay in L1 beside the operand tiles. */
    static final int BQ = 64;
    private static final ValueLayout.OfFloat F32 = ValueLayout.JAVA_FLOAT;

    private AttentionF32() { }

    /** Head size rounded up to whole vectors: row length of the padded row tiles. */
    static int paddedHeadSize(int hs) {
        return (hs + L - 1) / L * L;
    }

    /** Heap scratch of one forward task at most, in bytes (independent of T: the key/value tile cache is capped). */
    static long forwardScratchBytes(int hs) {
        int hsp = paddedHeadSize(hs);
        return 4L * (BQ * hsp + hs * BQ * 2 + BQ * BQ + 3 * BQ) + Math.max(8L * BQ * hsp, KV_CACHE_BYTES);
    }

    /** Heap scratch of one backward task, in bytes (independent of T). */
    static long backwardScratchBytes(int hs) {
        int hsp = paddedHeadSize(hs);
        return 4L * (BQ * hsp * 7 + hs * BQ * 2 + BQ * BQ * 2 + hsp);
    }

    // ---------------------------------------------------------------- forward

    static void forward(Tensor out, Tensor lse, Tensor q, Tensor k, Tensor v, float scale) {
        int nb = q.dim(0), nt = q.dim(1), nh = q.dim(2), hs = q.dim(3), nkv = k.dim(2);
        if (nb == 0 || nt == 0 || nh == 0) return;
        Strided sq = Strided.of(q), sk = Strided.of(k), sv = Strided.of(v), so = Strided.of(out), sl = Strided.of(lse);
        int nqb = (nt + BQ - 1) / BQ, heads = nb * nh;
        ComputePool pool = ComputePool.current();
        // A task takes every chunks-th query block of one (batch, head), chunk c taking c, c + chunks, ...: the
        // chunks of a head get about equal work, and one task re-reads the same k and v prefix (L2-resident)
        // for its blocks. Enough chunks for about 4 tasks per thread.
        int chunks = Math.max(1, Math.min(nqb, (4 * pool.threads() + heads - 1) / heads));
        pool.parallelFor(heads * chunks, task -> {
            int bh = task / chunks, c = task % chunks;
            int b = bh / nh, h = bh % nh;
            ForwardScratch scratch = new ForwardScratch(hs, nqb);
            for (int qb = c; qb < nqb; qb += chunks) {
                forwardBlock(scratch, so, sl, sq, sk, sv, b, h, h / (nh / nkv), qb, nt, hs, scale);
            }
        });
    }

    /** Key and value row tiles one forward task keeps for reuse by its later query blocks, at most (bytes). */
    private static final long KV_CACHE_BYTES = 512 << 10;

    /**
     * The tiles of one forward task (about 100 KiB for HS = 64), and the key and value row tiles it has read: a
     * task runs query blocks in ascending order and query block qb reads key blocks 0..qb, so each tile read once
     * serves every later block. Kept when all of a head's tiles fit in {@link #KV_CACHE_BYTES} (T <= 1024 for
     * HS = 64); otherwise one pair of tiles is read again for every (query block, key block) pair.
     */
    private static final class ForwardScratch {
        final float[] rows, qt, s, ot, m = new float[BQ], l = new float[BQ], alpha = new float[BQ];
        private final float[][] kTiles, vTiles;   // [key block][BQ · hsp], or one reused slot each
        private final boolean cached;
        private int loaded = -1;                  // key blocks [0, loaded] are in the tiles (when cached)

        ForwardScratch(int hs, int keyBlocks) {
            int hsp = paddedHeadSize(hs);
            rows = new float[BQ * hsp];    // q rows, later out rows [BQ][hsp]
            qt = new float[hs * BQ];       // scale · qᵀ [hs][BQ]
            s = new float[BQ * BQ];        // Sᵀ then Pᵀ [key][query]
            ot = new float[hs * BQ];       // unnormalised outᵀ [hs][BQ]
            cached = 2L * keyBlocks * BQ * hsp * 4 <= KV_CACHE_BYTES;
            kTiles = new float[cached ? keyBlocks : 1][BQ * hsp];   // k rows [BQ][hsp]
            vTiles = new float[cached ? keyBlocks : 1][BQ * hsp];   // v rows [BQ][hsp]
        }

        /** Makes key block kb's k and v rows available in {@code kTile(kb)} and {@code vTile(kb)}. */
        void load(Strided sk, Strided sv, int b, int kvh, int kb, int nt, int hs) {
            if (cached && kb <= loaded) return;
            int k0 = kb * BQ, kn = Math.min(BQ, nt - k0), hsp = paddedHeadSize(hs);
            readRows(kTile(kb), hsp, sk, b, k0, kvh, kn, hs);
            readRows(vTile(kb), hsp, sv, b, k0, kvh, kn, hs);
            if (cached) loaded = Math.max(loaded, kb);
        }

        float[] kTile(int kb) { return kTiles[cached ? kb : 0]; }

        float[] vTile(int kb) { return vTiles[cached ? kb : 0]; }
    }

    private static void forwardBlock(ForwardScratch w, Strided so, Strided sl, Strided sq, Strided sk, Strided sv,
                                     int b, int h, int kvh, int qb, int nt, int hs, float scale) {
        int hsp = paddedHeadSize(hs);
        int q0 = qb * BQ, qn = Math.min(BQ, nt - q0);
        float[] rows = w.rows, qt = w.qt, s = w.s, ot = w.ot, m = w.m, l = w.l, alpha = w.alpha;

        readRows(rows, hsp, sq, b, q0, h, qn, hs);
        transpose(qt, rows, hsp, qn, hs, scale);
        java.util.Arrays.fill(m, Float.NEGATIVE_INFINITY);
        java.util.Arrays.fill(l, 0f);
        java.util.Arrays.fill(ot, 0f);
        for (int kb = 0; kb <= qb; kb++) {
            int k0 = kb * BQ, kn = Math.min(BQ, nt - k0);
            w.load(sk, sv, b, kvh, kb, nt, hs);
            float[] kr = w.kTile(kb), vr = w.vTile(kb);
            // Sᵀ[key][query] = k · (scale·q)ᵀ
            mm(s, kr, 0, hsp, 1, qt, kn, BQ, hs, false);
            if (kb == qb) maskFuture(s, kn);
            onlineSoftmax(s, kn, m, l, alpha);
            for (int d = 0; d < hs; d++) {
                for (int i = 0; i < BQ; i += L) {
                    FloatVector.fromArray(SPECIES, ot, d * BQ + i).mul(FloatVector.fromArray(SPECIES, alpha, i))
                            .intoArray(ot, d * BQ + i);
                }
            }
            // outᵀ[d][query] += sum_key v[key][d] · Pᵀ[key][query]
            mm(ot, vr, 0, 1, hsp, s, hs, BQ, kn, true);
        }
        for (int i = 0; i < qn; i++) {
            float inv = 1f / l[i];
            for (int d = 0; d < hs; d++) rows[i * hsp + d] = ot[d * BQ + i] * inv;
            sl.segment().set(F32, sl.at(b, h, q0 + i), m[i] + (float) Math.log(l[i]));
        }
        writeRows(so, b, q0, h, rows, hsp, qn, hs);
    }

    /** On a diagonal tile (key block == query block) sets Sᵀ[key][query] = -inf where key > query. */
    private static void maskFuture(float[] s, int kn) {
        for (int key = 1; key < kn; key++) {
            java.util.Arrays.fill(s, key * BQ, key * BQ + key, Float.NEGATIVE_INFINITY);
        }
    }

    /**
     * Online softmax step over a tile Sᵀ[kn][BQ]: m = max(m, max_key S), alpha = exp(m_old - m),
     * Pᵀ = exp(Sᵀ - m) in place, l = alpha·l + sum_key P. Every query lane has key 0 of the first tile
     * unmasked, so m is finite after the first tile and no lane computes inf - inf.
     */
    private static void onlineSoftmax(float[] s, int kn, float[] m, float[] l, float[] alpha) {
        for (int i = 0; i < BQ; i += L) {
            FloatVector mOld = FloatVector.fromArray(SPECIES, m, i);
            FloatVector mx = mOld;
            for (int key = 0; key < kn; key++) mx = mx.max(FloatVector.fromArray(SPECIES, s, key * BQ + i));
            FloatVector sum0 = FloatVector.zero(SPECIES), sum1 = sum0;
            int key = 0;
            for (; key + 2 <= kn; key += 2) {
                FloatVector p0 = exp(FloatVector.fromArray(SPECIES, s, key * BQ + i).sub(mx));
                FloatVector p1 = exp(FloatVector.fromArray(SPECIES, s, (key + 1) * BQ + i).sub(mx));
                p0.intoArray(s, key * BQ + i);
                p1.intoArray(s, (key + 1) * BQ + i);
                sum0 = sum0.add(p0);
                sum1 = sum1.add(p1);
            }
            if (key < kn) {
                FloatVector p0 = exp(FloatVector.fromArray(SPECIES, s, key * BQ + i).sub(mx));
                p0.intoArray(s, key * BQ + i);
                sum0 = sum0.add(p0);
            }
            FloatVector a = exp(mOld.sub(mx));
            a.intoArray(alpha, i);
            FloatVector.fromArray(SPECIES, l, i).mul(a).add(sum0.add(sum1)).intoArray(l, i);
            mx.intoArray(m, i);
        }
    }

    // ---------------------------------------------------------------- backward

    static void backward(Tensor dq, Tensor dk, Tensor dv, Tensor dout, Tensor out, Tensor lse,
                         Tensor q, Tensor k, Tensor v, float scale) {
        int nb = q.dim(0), nt = q.dim(1), nh = q.dim(2), hs = q.dim(3), nkv = k.dim(2);
        if (nb == 0 || nt == 0 || nh == 0) return;
        Strided sq = Strided.of(q), sk = Strided.of(k), sv = Strided.of(v), so = Strided.of(out), sl = Strided.of(lse);
        Strided sdo = Strided.of(dout), sdq = Strided.of(dq), sdk = Strided.of(dk), sdv = Strided.of(dv);
        ComputePool pool = ComputePool.current();
        // D[b, h, t] = dout[b, t, h] · out[b, t, h]: O(B·NH·T) floats, computed once instead of once per key block.
        float[] dRows = new float[nb * nh * nt];
        pool.parallelFor(nb * nh, bh -> {
            int b = bh / nh, h = bh % nh;
            for (int t = 0; t < nt; t++) dRows[bh * nt + t] = rowDot(sdo, so, b, t, h, hs);
        });
        pool.parallelFor(nb * nkv, task -> {
            int b = task / nkv, kvh = task % nkv;
            backwardGroup(sdq, sdk, sdv, sdo, sl, sq, sk, sv, dRows, b, kvh, nh, nkv, nt, hs, scale);
        });
    }

    /**
     * One (batch, kv head) task. Key blocks outer, so dk and dv of a key block accumulate in tiles and are added
     * to the tensors once; dq of a query block gets one addition per key block, in ascending key-block order.
     * Scores here are row-major S[query][key]: k and v are transposed once per key block, q and dout only copied.
     */
    private static void backwardGroup(Strided sdq, Strided sdk, Strided sdv, Strided sdo, Strided sl,
                                      Strided sq, Strided sk, Strided sv, float[] dRows, int b, int kvh,
                                      int nh, int nkv, int nt, int hs, float scale) {
        int hsp = paddedHeadSize(hs), group = nh / nkv;
        int nqb = (nt + BQ - 1) / BQ;
        float[] kr = new float[BQ * hsp];         // k rows [BQ][hsp]
        float[] kt = new float[hs * BQ];          // scale · kᵀ [hs][BQ]
        float[] vr = new float[BQ * hsp];         // v rows, only to build vt
        float[] vt = new float[hs * BQ];          // vᵀ [hs][BQ]
        float[] qr = new float[BQ * hsp];         // q rows [BQ][hsp]
        float[] gr = new float[BQ * hsp];         // dout rows [BQ][hsp]
        float[] p = new float[BQ * BQ];           // P [query][key]
        float[] ds = new float[BQ * BQ];          // dP, then scale · dS [query][key]
        float[] dkAcc = new float[BQ * hsp], dvAcc = new float[BQ * hsp];
        float[] dqTile = new float[BQ * hsp];
        float[] rowTmp = new float[hsp];
        for (int kb = 0; kb < nqb; kb++) {
            int k0 = kb * BQ, kn = Math.min(BQ, nt - k0);
            readRows(kr, hsp, sk, b, k0, kvh, kn, hs);
            transpose(kt, kr, hsp, kn, hs, scale);
            readRows(vr, hsp, sv, b, k0, kvh, kn, hs);
            transpose(vt, vr, hsp, kn, hs, 1f);
            java.util.Arrays.fill(dkAcc, 0f);
            java.util.Arrays.fill(dvAcc, 0f);
            for (int h = kvh * group; h < (kvh + 1) * group; h++) {
                int dBase = (b * nh + h) * nt;
                for (int qb = kb; qb < nqb; qb++) {
                    int q0 = qb * BQ, qn = Math.min(BQ, nt - q0);
                    readRows(qr, hsp, sq, b, q0, h, qn, hs);
                    readRows(gr, hsp, sdo, b, q0, h, qn, hs);
                    // S = q · (scale·k)ᵀ, then P = exp(S - lse), causal
                    mm(p, qr, 0, hsp, 1, kt, qn, BQ, hs, false);
                    for (int i = 0; i < qn; i++) {
                        FloatVector lseI = FloatVector.broadcast(SPECIES, sl.segment().get(F32, sl.at(b, h, q0 + i)));
                        for (int j = 0; j < BQ; j += L) {
                            exp(FloatVector.fromArray(SPECIES, p, i * BQ + j).sub(lseI)).intoArray(p, i * BQ + j);
                        }
                        // Diagonal tile: keys after the query (and the padding keys of a last, partial block) get 0.
                        if (qb == kb) java.util.Arrays.fill(p, i * BQ + i + 1, (i + 1) * BQ, 0f);
                    }
                    // dP = dout · vᵀ, then dS = scale · P ∘ (dP - D)
                    mm(ds, gr, 0, hsp, 1, vt, qn, BQ, hs, false);
                    for (int i = 0; i < qn; i++) {
                        FloatVector dI = FloatVector.broadcast(SPECIES, dRows[dBase + q0 + i]);
                        FloatVector vs = FloatVector.broadcast(SPECIES, scale);
                        for (int j = 0; j < BQ; j += L) {
                            int at = i * BQ + j;
                            FloatVector.fromArray(SPECIES, ds, at).sub(dI).mul(FloatVector.fromArray(SPECIES, p, at))
                                    .mul(vs).intoArray(ds, at);
                        }
                    }
                    // dv[key] += sum_query P[query][key] · dout[query]
                    mm(dvAcc, p, 0, 1, BQ, gr, kn, hsp, qn, true);
                    // dk[key] += sum_query dS[query][key] · q[query]
                    mm(dkAcc, ds, 0, 1, BQ, qr, kn, hsp, qn, true);
                    // dq[query] += sum_key dS[query][key] · k[key]
                    mm(dqTile, ds, 0, BQ, 1, kr, qn, hsp, kn, false);
                    addRows(sdq, b, q0, h, dqTile, hsp, qn, hs, rowTmp);
                }
            }
            addRows(sdk, b, k0, kvh, dkAcc, hsp, kn, hs, rowTmp);
            addRows(sdv, b, k0, kvh, dvAcc, hsp, kn, hs, rowTmp);
        }
    }

    /** x[b, t, h] · y[b, t, h] over the head dimension: whole vectors in lane order, then the tail in index order. */
    private static float rowDot(Strided x, Strided y, int b, int t, int h, int hs) {
        long ax = x.at(b, t, h), ay = y.at(b, t, h);
        MemorySegment xs = x.segment(), ys = y.segment();
        FloatVector acc = FloatVector.zero(SPECIES);
        int d = 0;
        for (; d + L <= hs; d += L) {
            acc = FloatVector.fromMemorySegment(SPECIES, xs, ax + 4L * d, ByteOrder.nativeOrder())
                    .fma(FloatVector.fromMemorySegment(SPECIES, ys, ay + 4L * d, ByteOrder.nativeOrder()), acc);
        }
        // Lanes summed in lane order (reduceLanes leaves its order open, so it could differ between compilations).
        float sum = 0;
        for (int i = 0; i < L; i++) sum += acc.lane(i);
        for (; d < hs; d++) sum += xs.get(F32, ax + 4L * d) * ys.get(F32, ay + 4L * d);
        return sum;
    }

    // ---------------------------------------------------------------- tiles

    /** rows[i][0..hs) = x[b, t0 + i, head, :] for i < n; the padding columns keep their zeros. */
    private static void readRows(float[] rows, int hsp, Strided x, int b, int t0, int head, int n, int hs) {
        for (int i = 0; i < n; i++) {
            MemorySegment.copy(x.segment(), F32, x.at(b, t0 + i, head), rows, i * hsp, hs);
        }
    }

    /** x[b, t0 + i, head, :] = rows[i][0..hs) for i < n. */
    private static void writeRows(Strided x, int b, int t0, int head, float[] rows, int hsp, int n, int hs) {
        for (int i = 0; i < n; i++) {
            MemorySegment.copy(rows, i * hsp, x.segment(), F32, x.at(b, t0 + i, head), hs);
        }
    }

    /** x[b, t0 + i, head, :] += rows[i][0..hs) for i < n, with tmp a scratch row of hsp floats. */
    private static void addRows(Strided x, int b, int t0, int head, float[] rows, int hsp, int n, int hs, float[] tmp) {
        for (int i = 0; i < n; i++) {
            long at = x.at(b, t0 + i, head);
            MemorySegment.copy(x.segment(), F32, at, tmp, 0, hs);
            for (int d = 0; d < hsp; d += L) {
                FloatVector.fromArray(SPECIES, tmp, d).add(FloatVector.fromArray(SPECIES, rows, i * hsp + d)).intoArray(tmp, d);
            }
            MemorySegment.copy(tmp, 0, x.segment(), F32, at, hs);
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

    /**
     * The tile product of every step: {@code C[r][0..w) (+)= sum_{c<n} A[aOff + r·ars + c·acs] · B[c][0..w)}
     * for r < rows, with C and B row-major of row length w (a multiple of the vector length) and A read by
     * strides, so one kernel serves A, Aᵀ and both layouts of the score tile. Register tile: 6 rows × 4 vectors
     * (24 accumulators, 10 loads per 24 FMAs; B is streamed once per 6 rows), with 4×4, 4×1, 1×4 and 1×1 edges.
     */
    static void mm(float[] c, float[] a, int aOff, int ars, int acs, float[] bm, int rows, int w, int n, boolean accumulate) {
        int r = 0;
        for (; r + 6 <= rows; r += 6) {
            int j = 0;
            for (; j + 4 * L <= w; j += 4 * L) kernel6x4(c, a, aOff + r * ars, ars, acs, bm, r, j, w, n, accumulate);
            for (; j < w; j += L) {
                kernel4x1(c, a, aOff + r * ars, ars, acs, bm, r, j, w, n, accumulate);
                kernel1x1(c, a, aOff + (r + 4) * ars, acs, bm, r + 4, j, w, n, accumulate);
                kernel1x1(c, a, aOff + (r + 5) * ars, acs, bm, r + 5, j, w, n, accumulate);
            }
        }
        for (; r + 4 <= rows; r += 4) {
            int j = 0;
            for (; j + 4 * L <= w; j += 4 * L) kernel4x4(c, a, aOff + r * ars, ars, acs, bm, r, j, w, n, accumulate);
            for (; j < w; j += L) kernel4x1(c, a, aOff + r * ars, ars, acs, bm, r, j, w, n, accumulate);
        }
        for (; r < rows; r++) {
            int j = 0;
            for (; j + 4 * L <= w; j += 4 * L) kernel1x4(c, a, aOff + r * ars, acs, bm, r, j, w, n, accumulate);
            for (; j < w; j += L) kernel1x1(c, a, aOff + r * ars, acs, bm, r, j, w, n, accumulate);
        }
    }

    private static void kernel6x4(float[] c, float[] a, int a0, int ars, int acs, float[] bm, int r, int j, int w,
                                  int n, boolean acc) {
        int c0 = r * w + j;
        FloatVector z = FloatVector.zero(SPECIES);
        FloatVector x00 = acc ? FloatVector.fromArray(SPECIES, c, c0 + 0 * w + 0 * L) : z;
        FloatVector x01 = acc ? FloatVector.fromArray(SPECIES, c, c0 + 0 * w + 1 * L) : z;
        FloatVector x02 = acc ? FloatVector.fromArray(SPECIES, c, c0 + 0 * w + 2 * L) : z;
        FloatVector x03 = acc ? FloatVector.fromArray(SPECIES, c, c0 + 0 * w + 3 * L) : z;
        FloatVector x10 = acc ? FloatVector.fromArray(SPECIES, c, c0 + 1 * w + 0 * L) : z;
        FloatVector x11 = acc ? FloatVector.fromArray(SPECIES, c, c0 + 1 * w + 1 * L) : z;
        FloatVector x12 = acc ? FloatVector.fromArray(SPECIES, c, c0 + 1 * w + 2 * L) : z;
        FloatVector x13 = acc ? FloatVector.fromArray(SPECIES, c, c0 + 1 * w + 3 * L) : z;
        FloatVector x20 = acc ? FloatVector.fromArray(SPECIES, c, c0 + 2 * w + 0 * L) : z;
        FloatVector x21 = acc ? FloatVector.fromArray(SPECIES, c, c0 + 2 * w + 1 * L) : z;
        FloatVector x22 = acc ? FloatVector.fromArray(SPECIES, c, c0 + 2 * w + 2 * L) : z;
        FloatVector x23 = acc ? FloatVector.fromArray(SPECIES, c, c0 + 2 * w + 3 * L) : z;
        FloatVector x30 = acc ? FloatVector.fromArray(SPECIES, c, c0 + 3 * w + 0 * L) : z;
        FloatVector x31 = acc ? FloatVector.fromArray(SPECIES, c, c0 + 3 * w + 1 * L) : z;
        FloatVector x32 = acc ? FloatVector.fromArray(SPECIES, c, c0 + 3 * w + 2 * L) : z;
        FloatVector x33 = acc ? FloatVector.fromArray(SPECIES, c, c0 + 3 * w + 3 * L) : z;
        FloatVector x40 = acc ? FloatVector.fromArray(SPECIES, c, c0 + 4 * w + 0 * L) : z;
        FloatVector x41 = acc ? FloatVector.fromArray(SPECIES, c, c0 + 4 * w + 1 * L) : z;
        FloatVector x42 = acc ? FloatVector.fromArray(SPECIES, c, c0 + 4 * w + 2 * L) : z;
        FloatVector x43 = acc ? FloatVector.fromArray(SPECIES, c, c0 + 4 * w + 3 * L) : z;
        FloatVector x50 = acc ? FloatVector.fromArray(SPECIES, c, c0 + 5 * w + 0 * L) : z;
        FloatVector x51 = acc ? FloatVector.fromArray(SPECIES, c, c0 + 5 * w + 1 * L) : z;
        FloatVector x52 = acc ? FloatVector.fromArray(SPECIES, c, c0 + 5 * w + 2 * L) : z;
        FloatVector x53 = acc ? FloatVector.fromArray(SPECIES, c, c0 + 5 * w + 3 * L) : z;
        int a1 = a0 + ars, a2 = a1 + ars, a3 = a2 + ars, a4 = a3 + ars, a5 = a4 + ars;
        for (int k = 0, ak = 0, bk = j; k < n; k++, ak += acs, bk += w) {
            FloatVector b0 = FloatVector.fromArray(SPECIES, bm, bk), b1 = FloatVector.fromArray(SPECIES, bm, bk + L);
            FloatVector b2 = FloatVector.fromArray(SPECIES, bm, bk + 2 * L), b3 = FloatVector.fromArray(SPECIES, bm, bk + 3 * L);
            FloatVector y0 = FloatVector.broadcast(SPECIES, a[a0 + ak]);
            x00 = b0.fma(y0, x00); x01 = b1.fma(y0, x01); x02 = b2.fma(y0, x02); x03 = b3.fma(y0, x03);
            FloatVector y1 = FloatVector.broadcast(SPECIES, a[a1 + ak]);
            x10 = b0.fma(y1, x10); x11 = b1.fma(y1, x11); x12 = b2.fma(y1, x12); x13 = b3.fma(y1, x13);
            FloatVector y2 = FloatVector.broadcast(SPECIES, a[a2 + ak]);
            x20 = b0.fma(y2, x20); x21 = b1.fma(y2, x21); x22 = b2.fma(y2, x22); x23 = b3.fma(y2, x23);
            FloatVector y3 = FloatVector.broadcast(SPECIES, a[a3 + ak]);
            x30 = b0.fma(y3, x30); x31 = b1.fma(y3, x31); x32 = b2.fma(y3, x32); x33 = b3.fma(y3, x33);
            FloatVector y4 = FloatVector.broadcast(SPECIES, a[a4 + ak]);
            x40 = b0.fma(y4, x40); x41 = b1.fma(y4, x41); x42 = b2.fma(y4, x42); x43 = b3.fma(y4, x43);
            FloatVector y5 = FloatVector.broadcast(SPECIES, a[a5 + ak]);
            x50 = b0.fma(y5, x50); x51 = b1.fma(y5, x51); x52 = b2.fma(y5, x52); x53 = b3.fma(y5, x53);
        }
        x00.intoArray(c, c0 + 0 * w + 0 * L); x01.intoArray(c, c0 + 0 * w + 1 * L); x02.intoArray(c, c0 + 0 * w + 2 * L); x03.intoArray(c, c0 + 0 * w + 3 * L);
        x10.intoArray(c, c0 + 1 * w + 0 * L); x11.intoArray(c, c0 + 1 * w + 1 * L); x12.intoArray(c, c0 + 1 * w + 2 * L); x13.intoArray(c, c0 + 1 * w + 3 * L);
        x20.intoArray(c, c0 + 2 * w + 0 * L); x21.intoArray(c, c0 + 2 * w + 1 * L); x22.intoArray(c, c0 + 2 * w + 2 * L); x23.intoArray(c, c0 + 2 * w + 3 * L);
        x30.intoArray(c, c0 + 3 * w + 0 * L); x31.intoArray(c, c0 + 3 * w + 1 * L); x32.intoArray(c, c0 + 3 * w + 2 * L); x33.intoArray(c, c0 + 3 * w + 3 * L);
        x40.intoArray(c, c0 + 4 * w + 0 * L); x41.intoArray(c, c0 + 4 * w + 1 * L); x42.intoArray(c, c0 + 4 * w + 2 * L); x43.intoArray(c, c0 + 4 * w + 3 * L);
        x50.intoArray(c, c0 + 5 * w + 0 * L); x51.intoArray(c, c0 + 5 * w + 1 * L); x52.intoArray(c, c0 + 5 * w + 2 * L); x53.intoArray(c, c0 + 5 * w + 3 * L);
    }

    private static void kernel4x4(float[] c, float[] a, int a0, int ars, int acs, float[] bm, int r, int j, int w,
                                  int n, boolean acc) {
        int c0 = r * w + j, c1 = c0 + w, c2 = c1 + w, c3 = c2 + w;
        FloatVector z = FloatVector.zero(SPECIES);
        FloatVector x00 = acc ? FloatVector.fromArray(SPECIES, c, c0) : z, x01 = acc ? FloatVector.fromArray(SPECIES, c, c0 + L) : z;
        FloatVector x02 = acc ? FloatVector.fromArray(SPECIES, c, c0 + 2 * L) : z, x03 = acc ? FloatVector.fromArray(SPECIES, c, c0 + 3 * L) : z;
        FloatVector x10 = acc ? FloatVector.fromArray(SPECIES, c, c1) : z, x11 = acc ? FloatVector.fromArray(SPECIES, c, c1 + L) : z;
        FloatVector x12 = acc ? FloatVector.fromArray(SPECIES, c, c1 + 2 * L) : z, x13 = acc ? FloatVector.fromArray(SPECIES, c, c1 + 3 * L) : z;
        FloatVector x20 = acc ? FloatVector.fromArray(SPECIES, c, c2) : z, x21 = acc ? FloatVector.fromArray(SPECIES, c, c2 + L) : z;
        FloatVector x22 = acc ? FloatVector.fromArray(SPECIES, c, c2 + 2 * L) : z, x23 = acc ? FloatVector.fromArray(SPECIES, c, c2 + 3 * L) : z;
        FloatVector x30 = acc ? FloatVector.fromArray(SPECIES, c, c3) : z, x31 = acc ? FloatVector.fromArray(SPECIES, c, c3 + L) : z;
        FloatVector x32 = acc ? FloatVector.fromArray(SPECIES, c, c3 + 2 * L) : z, x33 = acc ? FloatVector.fromArray(SPECIES, c, c3 + 3 * L) : z;
        int a1 = a0 + ars, a2 = a1 + ars, a3 = a2 + ars;
        for (int k = 0, ak = 0, bk = j; k < n; k++, ak += acs, bk += w) {
            FloatVector b0 = FloatVector.fromArray(SPECIES, bm, bk), b1 = FloatVector.fromArray(SPECIES, bm, bk + L);
            FloatVector b2 = FloatVector.fromArray(SPECIES, bm, bk + 2 * L), b3 = FloatVector.fromArray(SPECIES, bm, bk + 3 * L);
            FloatVector y = FloatVector.broadcast(SPECIES, a[a0 + ak]);
            x00 = b0.fma(y, x00); x01 = b1.fma(y, x01); x02 = b2.fma(y, x02); x03 = b3.fma(y, x03);
            y = FloatVector.broadcast(SPECIES, a[a1 + ak]);
            x10 = b0.fma(y, x10); x11 = b1.fma(y, x11); x12 = b2.fma(y, x12); x13 = b3.fma(y, x13);
            y = FloatVector.broadcast(SPECIES, a[a2 + ak]);
            x20 = b0.fma(y, x20); x21 = b1.fma(y, x21); x22 = b2.fma(y, x22); x23 = b3.fma(y, x23);
            y = FloatVector.broadcast(SPECIES, a[a3 + ak]);
            x30 = b0.fma(y, x30); x31 = b1.fma(y, x31); x32 = b2.fma(y, x32); x33 = b3.fma(y, x33);
        }
        x00.intoArray(c, c0); x01.intoArray(c, c0 + L); x02.intoArray(c, c0 + 2 * L); x03.intoArray(c, c0 + 3 * L);
        x10.intoArray(c, c1); x11.intoArray(c, c1 + L); x12.intoArray(c, c1 + 2 * L); x13.intoArray(c, c1 + 3 * L);
        x20.intoArray(c, c2); x21.intoArray(c, c2 + L); x22.intoArray(c, c2 + 2 * L); x23.intoArray(c, c2 + 3 * L);
        x30.intoArray(c, c3); x31.intoArray(c, c3 + L); x32.intoArray(c, c3 + 2 * L); x33.intoArray(c, c3 + 3 * L);
    }

    private static void kernel4x1(float[] c, float[] a, int a0, int ars, int acs, float[] bm, int r, int j, int w,
                                  int n, boolean acc) {
        int c0 = r * w + j, c1 = c0 + w, c2 = c1 + w, c3 = c2 + w;
        FloatVector z = FloatVector.zero(SPECIES);
        FloatVector x0 = acc ? FloatVector.fromArray(SPECIES, c, c0) : z, x1 = acc ? FloatVector.fromArray(SPECIES, c, c1) : z;
        FloatVector x2 = acc ? FloatVector.fromArray(SPECIES, c, c2) : z, x3 = acc ? FloatVector.fromArray(SPECIES, c, c3) : z;
        int a1 = a0 + ars, a2 = a1 + ars, a3 = a2 + ars;
        for (int k = 0, ak = 0, bk = j; k < n; k++, ak += acs, bk += w) {
            FloatVector b0 = FloatVector.fromArray(SPECIES, bm, bk);
            x0 = b0.fma(FloatVector.broadcast(SPECIES, a[a0 + ak]), x0);
            x1 = b0.fma(FloatVector.broadcast(SPECIES, a[a1 + ak]), x1);
            x2 = b0.fma(FloatVector.broadcast(SPECIES, a[a2 + ak]), x2);
            x3 = b0.fma(FloatVector.broadcast(SPECIES, a[a3 + ak]), x3);
        }
        x0.intoArray(c, c0); x1.intoArray(c, c1); x2.intoArray(c, c2); x3.intoArray(c, c3);
    }

    private static void kernel1x4(float[] c, float[] a, int a0, int acs, float[] bm, int r, int j, int w,
                                  int n, boolean acc) {
        int c0 = r * w + j;
        FloatVector z = FloatVector.zero(SPECIES);
        FloatVector x0 = acc ? FloatVector.fromArray(SPECIES, c, c0) : z, x1 = acc ? FloatVector.fromArray(SPECIES, c, c0 + L) : z;
        FloatVector x2 = acc ? FloatVector.fromArray(SPECIES, c, c0 + 2 * L) : z, x3 = acc ? FloatVector.fromArray(SPECIES, c, c0 + 3 * L) : z;
        for (int k = 0, ak = a0, bk = j; k < n; k++, ak += acs, bk += w) {
            FloatVector y = FloatVector.broadcast(SPECIES, a[ak]);
            x0 = FloatVector.fromArray(SPECIES, bm, bk).fma(y, x0);
            x1 = FloatVector.fromArray(SPECIES, bm, bk + L).fma(y, x1);
            x2 = FloatVector.fromArray(SPECIES, bm, bk + 2 * L).fma(y, x2);
            x3 = FloatVector.fromArray(SPECIES, bm, bk + 3 * L).fma(y, x3);
        }
        x0.intoArray(c, c0); x1.intoArray(c, c0 + L); x2.intoArray(c, c0 + 2 * L); x3.intoArray(c, c0 + 3 * L);
    }

    private static void kernel1x1(float[] c, float[] a, int a0, int acs, float[] bm, int r, int j, int w,
                                  int n, boolean acc) {
        int c0 = r * w + j;
        FloatVector x0 = acc ? FloatVector.fromArray(SPECIES, c, c0) : FloatVector.zero(SPECIES);
        for (int k = 0, ak = a0, bk = j; k < n; k++, ak += acs, bk += w) {
            x0 = FloatVector.fromArray(SPECIES, bm, bk).fma(FloatVector.broadcast(SPECIES, a[ak]), x0);
        }
        x0.intoArray(c, c0);
    }
}
