package dev.shardwise.core.kernels;

import dev.shardwise.core.exec.ComputePool;
import dev.shardwise.core.tensor.Tensor;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorSpecies;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

/**
 * The fp32 FlashAttention-2 kernel behind {@link Attention}: queries and keys in tiles of {@value #BQ} rows,
 * online softmax, register-tiled Vector API micro-kernels for the tile products, fp32 accumulation.
 *
 * <p>Layout trick: score tiles are kept transposed, {@code Sᵀ[key][query]}, with the query index in vector lanes.
 * Then the online-softmax state (running max m, running sum l, rescale factor alpha) and lse and D are plain
 * lanewise vectors, and every tile product is one shape of micro-kernel ({@link #mm}): a broadcast scalar from a
 * strided operand times contiguous vector rows of the other. Query tiles are transposed once per query block
 * (amortised over all its key blocks); key and value tiles are only copied row by row.
 *
 * <p>Parallelism: forward over (batch, head, query block) tasks, longest first; backward over
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

    /** Heap scratch of one task, in bytes (independent of T). */
    static long forwardScratchBytes(int hs) {
        int hsp = paddedHeadSize(hs);
        return 4L * (BQ * hsp * 3 + hs * BQ * 2 + BQ * BQ + 3 * BQ);
    }

    /** Heap scratch of one backward task, in bytes (independent of T). */
    static long backwardScratchBytes(int hs) {
        int hsp = paddedHeadSize(hs);
        return 4L * (BQ * hsp * 8 + hs * BQ * 2 + BQ * BQ * 2 + 2 * BQ + hsp);
    }

    // ---------------------------------------------------------------- forward

    static void forward(Tensor out, Tensor lse, Tensor q, Tensor k, Tensor v, float scale) {
        int nb = q.dim(0), nt = q.dim(1), nh = q.dim(2), hs = q.dim(3), nkv = k.dim(2);
        if (nb == 0 || nt == 0 || nh == 0) return;
        Strided sq = Strided.of(q), sk = Strided.of(k), sv = Strided.of(v), so = Strided.of(out), sl = Strided.of(lse);
        int nqb = (nt + BQ - 1) / BQ, heads = nb * nh;
        // Task order: last query blocks (most key blocks) first, so the dynamic claim balances the tail.
        ComputePool.current().parallelFor(heads * nqb, task -> {
            int qb = nqb - 1 - task / heads, bh = task % heads;
            int b = bh / nh, h = bh % nh;
            forwardBlock(so, sl, sq, sk, sv, b, h, h / (nh / nkv), qb, nt, hs, scale);
        });
    }

    private static void forwardBlock(Strided so, Strided sl, Strided sq, Strided sk, Strided sv,
                                     int b, int h, int kvh, int qb, int nt, int hs, float scale) {
        int hsp = paddedHeadSize(hs);
        int q0 = qb * BQ, qn = Math.min(BQ, nt - q0);
        float[] rows = new float[BQ * hsp];       // q rows, later out rows [BQ][hsp]
        float[] qt = new float[hs * BQ];          // scale · qᵀ [hs][BQ]
        float[] kr = new float[BQ * hsp];         // k rows [BQ][hsp]
        float[] vr = new float[BQ * hsp];         // v rows [BQ][hsp]
        float[] s = new float[BQ * BQ];           // Sᵀ then Pᵀ [key][query]
        float[] ot = new float[hs * BQ];          // unnormalised outᵀ [hs][BQ]
        float[] m = new float[BQ], l = new float[BQ], alpha = new float[BQ];

        readRows(rows, hsp, sq, b, q0, h, qn, hs);
        transpose(qt, rows, hsp, qn, hs, scale);
        java.util.Arrays.fill(m, Float.NEGATIVE_INFINITY);
        for (int kb = 0; kb <= qb; kb++) {
            int k0 = kb * BQ, kn = Math.min(BQ, nt - k0);
            readRows(kr, hsp, sk, b, k0, kvh, kn, hs);
            readRows(vr, hsp, sv, b, k0, kvh, kn, hs);
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
                FloatVector p0 = FloatVector.fromArray(SPECIES, s, key * BQ + i).sub(mx).lanewise(VectorOperators.EXP);
                FloatVector p1 = FloatVector.fromArray(SPECIES, s, (key + 1) * BQ + i).sub(mx).lanewise(VectorOperators.EXP);
                p0.intoArray(s, key * BQ + i);
                p1.intoArray(s, (key + 1) * BQ + i);
                sum0 = sum0.add(p0);
                sum1 = sum1.add(p1);
            }
            if (key < kn) {
                FloatVector p0 = FloatVector.fromArray(SPECIES, s, key * BQ + i).sub(mx).lanewise(VectorOperators.EXP);
                p0.intoArray(s, key * BQ + i);
                sum0 = sum0.add(p0);
            }
            FloatVector a = mOld.sub(mx).lanewise(VectorOperators.EXP);
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
        ComputePool.current().parallelFor(nb * nkv, task -> {
            int b = task / nkv, kvh = task % nkv;
            backwardGroup(sdq, sdk, sdv, sdo, so, sl, sq, sk, sv, b, kvh, nh / nkv, nt, hs, scale);
        });
    }

    private static void backwardGroup(Strided sdq, Strided sdk, Strided sdv, Strided sdo, Strided so, Strided sl,
                                      Strided sq, Strided sk, Strided sv, int b, int kvh, int group,
                                      int nt, int hs, float scale) {
        int hsp = paddedHeadSize(hs);
        int nqb = (nt + BQ - 1) / BQ;
        float[] qr = new float[BQ * hsp];         // q rows [BQ][hsp]
        float[] qt = new float[hs * BQ];          // scale · qᵀ [hs][BQ]
        float[] gr = new float[BQ * hsp];         // dout rows [BQ][hsp]
        float[] gt = new float[hs * BQ];          // doutᵀ [hs][BQ]
        float[] or = new float[BQ * hsp];         // out rows, for D
        float[] kr = new float[BQ * hsp];         // k rows [BQ][hsp]
        float[] vr = new float[BQ * hsp];         // v rows [BQ][hsp]
        float[] p = new float[BQ * BQ];           // Pᵀ [key][query]
        float[] ds = new float[BQ * BQ];          // dPᵀ, then scale · dSᵀ [key][query]
        float[] dqAcc = new float[BQ * hsp];      // dq of this query block [BQ][hsp]
        float[] dkvTile = new float[BQ * hsp];    // dk or dv of one key block, before adding to the tensor
        float[] rowTmp = new float[hsp];
        float[] lseT = new float[BQ], dRow = new float[BQ];
        for (int h = kvh * group; h < (kvh + 1) * group; h++) {
            for (int qb = 0; qb < nqb; qb++) {
                int q0 = qb * BQ, qn = Math.min(BQ, nt - q0);
                readRows(qr, hsp, sq, b, q0, h, qn, hs);
                transpose(qt, qr, hsp, qn, hs, scale);
                readRows(gr, hsp, sdo, b, q0, h, qn, hs);
                transpose(gt, gr, hsp, qn, hs, 1f);
                readRows(or, hsp, so, b, q0, h, qn, hs);
                for (int i = 0; i < BQ; i++) {
                    if (i < qn) {
                        lseT[i] = sl.segment().get(F32, sl.at(b, h, q0 + i));
                        float acc = 0;
                        for (int d = 0; d < hs; d++) acc += gr[i * hsp + d] * or[i * hsp + d];
                        dRow[i] = acc;
                    } else {
                        lseT[i] = Float.POSITIVE_INFINITY;    // padding lanes: P = exp(S - inf) = 0
                        dRow[i] = 0;
                    }
                }
                java.util.Arrays.fill(dqAcc, 0f);
                for (int kb = 0; kb <= qb; kb++) {
                    int k0 = kb * BQ, kn = Math.min(BQ, nt - k0);
                    readRows(kr, hsp, sk, b, k0, kvh, kn, hs);
                    readRows(vr, hsp, sv, b, k0, kvh, kn, hs);
                    // Sᵀ = k · (scale·q)ᵀ, then Pᵀ = exp(Sᵀ - lse)
                    mm(p, kr, 0, hsp, 1, qt, kn, BQ, hs, false);
                    for (int key = 0; key < kn; key++) {
                        for (int i = 0; i < BQ; i += L) {
                            FloatVector.fromArray(SPECIES, p, key * BQ + i).sub(FloatVector.fromArray(SPECIES, lseT, i))
                                    .lanewise(VectorOperators.EXP).intoArray(p, key * BQ + i);
                        }
                    }
                    if (kb == qb) {
                        for (int key = 1; key < kn; key++) java.util.Arrays.fill(p, key * BQ, key * BQ + key, 0f);
                    }
                    // dPᵀ = v · doutᵀ, then dSᵀ = scale · Pᵀ ∘ (dPᵀ - D)
                    mm(ds, vr, 0, hsp, 1, gt, kn, BQ, hs, false);
                    FloatVector vs = FloatVector.broadcast(SPECIES, scale);
                    for (int key = 0; key < kn; key++) {
                        for (int i = 0; i < BQ; i += L) {
                            int at = key * BQ + i;
                            FloatVector.fromArray(SPECIES, ds, at).sub(FloatVector.fromArray(SPECIES, dRow, i))
                                    .mul(FloatVector.fromArray(SPECIES, p, at)).mul(vs).intoArray(ds, at);
                        }
                    }
                    // dv[key] += sum_query Pᵀ[key][query] · dout[query]
                    mm(dkvTile, p, 0, BQ, 1, gr, kn, hsp, qn, false);
                    addRows(sdv, b, k0, kvh, dkvTile, hsp, kn, hs, rowTmp);
                    // dk[key] += sum_query dSᵀ[key][query] · q[query]
                    mm(dkvTile, ds, 0, BQ, 1, qr, kn, hsp, qn, false);
                    addRows(sdk, b, k0, kvh, dkvTile, hsp, kn, hs, rowTmp);
                    // dq[query] += sum_key dSᵀ[key][query] · k[key]
                    mm(dqAcc, ds, 0, 1, BQ, kr, qn, hsp, kn, true);
                }
                addRows(sdq, b, q0, h, dqAcc, hsp, qn, hs, rowTmp);
            }
        }
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

    // ---------------------------------------------------------------- micro-kernel

    /**
     * The tile product of every step: {@code C[r][0..w) (+)= sum_{c<n} A[aOff + r·ars + c·acs] · B[c][0..w)}
     * for r < rows, with C and B row-major of row length w (a multiple of the vector length) and A read by
     * strides, so one kernel serves A, Aᵀ and both layouts of the score tile. Register tile: 4 rows × 4 vectors
     * (16 accumulators, 8 loads per 16 FMAs), with 4×1, 1×4 and 1×1 edges.
     */
    static void mm(float[] c, float[] a, int aOff, int ars, int acs, float[] bm, int rows, int w, int n, boolean accumulate) {
        int r = 0;
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
