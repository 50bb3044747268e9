package dev.shardwise.core.kernels;

import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorSpecies;

/**
 * The register-tiled fp32 product of small row-major tiles that {@link AttentionF32} builds FlashAttention from
 * (a GotoBLAS-style micro-kernel on Java arrays): one broadcast scalar of a strided operand times contiguous
 * vector rows of the other, accumulated in registers, with trims that skip the masked triangle of a causal
 * diagonal tile.
 */
final class TileProduct {
    private static final VectorSpecies<Float> SPECIES = FloatVector.SPECIES_PREFERRED;
    private static final int L = SPECIES.length();

    private TileProduct() { }

    /** Products of a diagonal tile skip the masked triangle per row block [r, r + hb) of C; see {@link #mm}. */
    static final int FULL = 0, COLS_LOWER = 1, K_BELOW = 2, K_FROM = 3;

    /**
     * The tile product of every step: {@code C[r][0..w) (+)= sum_k A[aOff + r·ars + k·acs] · B[k][0..w)} for r < rows,
     * with C and B row-major (row lengths ldc and ldb, w a multiple of the vector length) and A read by strides, so
     * one kernel serves A, Aᵀ and both layouts of the score tile. Register tiles of 6 rows × 4 vectors (24
     * accumulators, 10 loads per 24 FMAs; B is streamed once per 6 rows), with 6×3, 6×2, 6×1, 4×4, 4×1, 1×4 and 1×1 edges.
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
                switch ((cw - j) / L) {
                    case 3 -> kernel6x3(c, cr + j, ldc, a, ar, ars, acs, b, j, ldb, k0, k1, acc);
                    case 2 -> kernel6x2(c, cr + j, ldc, a, ar, ars, acs, b, j, ldb, k0, k1, acc);
                    case 1 -> kernel6x1(c, cr + j, ldc, a, ar, ars, acs, b, j, ldb, k0, k1, acc);
                    default -> { }
                }
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

    private static void kernel6x3(float[] c, int c0, int ldc, float[] a, int a0, int ars, int acs, float[] b, int b0,
                                  int ldb, int k0, int k1, boolean acc) {
        int c1 = c0 + ldc, c2 = c1 + ldc, c3 = c2 + ldc, c4 = c3 + ldc, c5 = c4 + ldc;
        int a1 = a0 + ars, a2 = a1 + ars, a3 = a2 + ars, a4 = a3 + ars, a5 = a4 + ars;
        FloatVector z = FloatVector.zero(SPECIES);
        FloatVector x00 = acc ? FloatVector.fromArray(SPECIES, c, c0) : z, x01 = acc ? FloatVector.fromArray(SPECIES, c, c0 + 1 * L) : z;
        FloatVector x02 = acc ? FloatVector.fromArray(SPECIES, c, c0 + 2 * L) : z;
        FloatVector x10 = acc ? FloatVector.fromArray(SPECIES, c, c1) : z, x11 = acc ? FloatVector.fromArray(SPECIES, c, c1 + 1 * L) : z;
        FloatVector x12 = acc ? FloatVector.fromArray(SPECIES, c, c1 + 2 * L) : z;
        FloatVector x20 = acc ? FloatVector.fromArray(SPECIES, c, c2) : z, x21 = acc ? FloatVector.fromArray(SPECIES, c, c2 + 1 * L) : z;
        FloatVector x22 = acc ? FloatVector.fromArray(SPECIES, c, c2 + 2 * L) : z;
        FloatVector x30 = acc ? FloatVector.fromArray(SPECIES, c, c3) : z, x31 = acc ? FloatVector.fromArray(SPECIES, c, c3 + 1 * L) : z;
        FloatVector x32 = acc ? FloatVector.fromArray(SPECIES, c, c3 + 2 * L) : z;
        FloatVector x40 = acc ? FloatVector.fromArray(SPECIES, c, c4) : z, x41 = acc ? FloatVector.fromArray(SPECIES, c, c4 + 1 * L) : z;
        FloatVector x42 = acc ? FloatVector.fromArray(SPECIES, c, c4 + 2 * L) : z;
        FloatVector x50 = acc ? FloatVector.fromArray(SPECIES, c, c5) : z, x51 = acc ? FloatVector.fromArray(SPECIES, c, c5 + 1 * L) : z;
        FloatVector x52 = acc ? FloatVector.fromArray(SPECIES, c, c5 + 2 * L) : z;
        for (int k = k0, ak = k0 * acs, bk = b0 + k0 * ldb; k < k1; k++, ak += acs, bk += ldb) {
            FloatVector w0 = FloatVector.fromArray(SPECIES, b, bk);
            FloatVector w1 = FloatVector.fromArray(SPECIES, b, bk + 1 * L);
            FloatVector w2 = FloatVector.fromArray(SPECIES, b, bk + 2 * L);
            FloatVector y0 = FloatVector.broadcast(SPECIES, a[a0 + ak]);
            x00 = w0.fma(y0, x00); x01 = w1.fma(y0, x01); x02 = w2.fma(y0, x02);
            FloatVector y1 = FloatVector.broadcast(SPECIES, a[a1 + ak]);
            x10 = w0.fma(y1, x10); x11 = w1.fma(y1, x11); x12 = w2.fma(y1, x12);
            FloatVector y2 = FloatVector.broadcast(SPECIES, a[a2 + ak]);
            x20 = w0.fma(y2, x20); x21 = w1.fma(y2, x21); x22 = w2.fma(y2, x22);
            FloatVector y3 = FloatVector.broadcast(SPECIES, a[a3 + ak]);
            x30 = w0.fma(y3, x30); x31 = w1.fma(y3, x31); x32 = w2.fma(y3, x32);
            FloatVector y4 = FloatVector.broadcast(SPECIES, a[a4 + ak]);
            x40 = w0.fma(y4, x40); x41 = w1.fma(y4, x41); x42 = w2.fma(y4, x42);
            FloatVector y5 = FloatVector.broadcast(SPECIES, a[a5 + ak]);
            x50 = w0.fma(y5, x50); x51 = w1.fma(y5, x51); x52 = w2.fma(y5, x52);
        }
        x00.intoArray(c, c0); x01.intoArray(c, c0 + 1 * L); x02.intoArray(c, c0 + 2 * L);
        x10.intoArray(c, c1); x11.intoArray(c, c1 + 1 * L); x12.intoArray(c, c1 + 2 * L);
        x20.intoArray(c, c2); x21.intoArray(c, c2 + 1 * L); x22.intoArray(c, c2 + 2 * L);
        x30.intoArray(c, c3); x31.intoArray(c, c3 + 1 * L); x32.intoArray(c, c3 + 2 * L);
        x40.intoArray(c, c4); x41.intoArray(c, c4 + 1 * L); x42.intoArray(c, c4 + 2 * L);
        x50.intoArray(c, c5); x51.intoArray(c, c5 + 1 * L); x52.intoArray(c, c5 + 2 * L);
    }

    private static void kernel6x2(float[] c, int c0, int ldc, float[] a, int a0, int ars, int acs, float[] b, int b0,
                                  int ldb, int k0, int k1, boolean acc) {
        int c1 = c0 + ldc, c2 = c1 + ldc, c3 = c2 + ldc, c4 = c3 + ldc, c5 = c4 + ldc;
        int a1 = a0 + ars, a2 = a1 + ars, a3 = a2 + ars, a4 = a3 + ars, a5 = a4 + ars;
        FloatVector z = FloatVector.zero(SPECIES);
        FloatVector x00 = acc ? FloatVector.fromArray(SPECIES, c, c0) : z, x01 = acc ? FloatVector.fromArray(SPECIES, c, c0 + 1 * L) : z;
        FloatVector x10 = acc ? FloatVector.fromArray(SPECIES, c, c1) : z, x11 = acc ? FloatVector.fromArray(SPECIES, c, c1 + 1 * L) : z;
        FloatVector x20 = acc ? FloatVector.fromArray(SPECIES, c, c2) : z, x21 = acc ? FloatVector.fromArray(SPECIES, c, c2 + 1 * L) : z;
        FloatVector x30 = acc ? FloatVector.fromArray(SPECIES, c, c3) : z, x31 = acc ? FloatVector.fromArray(SPECIES, c, c3 + 1 * L) : z;
        FloatVector x40 = acc ? FloatVector.fromArray(SPECIES, c, c4) : z, x41 = acc ? FloatVector.fromArray(SPECIES, c, c4 + 1 * L) : z;
        FloatVector x50 = acc ? FloatVector.fromArray(SPECIES, c, c5) : z, x51 = acc ? FloatVector.fromArray(SPECIES, c, c5 + 1 * L) : z;
        for (int k = k0, ak = k0 * acs, bk = b0 + k0 * ldb; k < k1; k++, ak += acs, bk += ldb) {
            FloatVector w0 = FloatVector.fromArray(SPECIES, b, bk);
            FloatVector w1 = FloatVector.fromArray(SPECIES, b, bk + 1 * L);
            FloatVector y0 = FloatVector.broadcast(SPECIES, a[a0 + ak]);
            x00 = w0.fma(y0, x00); x01 = w1.fma(y0, x01);
            FloatVector y1 = FloatVector.broadcast(SPECIES, a[a1 + ak]);
            x10 = w0.fma(y1, x10); x11 = w1.fma(y1, x11);
            FloatVector y2 = FloatVector.broadcast(SPECIES, a[a2 + ak]);
            x20 = w0.fma(y2, x20); x21 = w1.fma(y2, x21);
            FloatVector y3 = FloatVector.broadcast(SPECIES, a[a3 + ak]);
            x30 = w0.fma(y3, x30); x31 = w1.fma(y3, x31);
            FloatVector y4 = FloatVector.broadcast(SPECIES, a[a4 + ak]);
            x40 = w0.fma(y4, x40); x41 = w1.fma(y4, x41);
            FloatVector y5 = FloatVector.broadcast(SPECIES, a[a5 + ak]);
            x50 = w0.fma(y5, x50); x51 = w1.fma(y5, x51);
        }
        x00.intoArray(c, c0); x01.intoArray(c, c0 + 1 * L);
        x10.intoArray(c, c1); x11.intoArray(c, c1 + 1 * L);
        x20.intoArray(c, c2); x21.intoArray(c, c2 + 1 * L);
        x30.intoArray(c, c3); x31.intoArray(c, c3 + 1 * L);
        x40.intoArray(c, c4); x41.intoArray(c, c4 + 1 * L);
        x50.intoArray(c, c5); x51.intoArray(c, c5 + 1 * L);
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
