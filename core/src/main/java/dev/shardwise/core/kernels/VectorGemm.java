package dev.shardwise.core.kernels;

import dev.shardwise.core.exec.ComputePool;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorSpecies;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;

/**
 * fp32 GEMM in the Vector API, blocked and packed as in GotoBLAS/BLIS (Goto and van de Geijn 2008):
 * {@code C = alpha·op(A)·op(B) + beta·C}, with {@code op(A) [M, K]}, {@code op(B) [K, N]}, {@code C [M, N]}.
 *
 * <p>Loops, outermost first: C is cut into one task per pool thread, along N or M, whichever makes each
 * thread pack less ({@link #splitOnN}). Within a task, rows go in chunks of {@link #MC} and K in slices of
 * {@link #KC}; for each (chunk, slice) the task packs {@code op(A)[mc, pc:pc+KC]} once into {@link #MR}-row
 * k-major slivers, then for each {@link #NC}-wide column block packs {@code op(B)[pc:pc+KC, jc:jc+NC]} into
 * {@link #NR}-column micro-panels (576 KiB: it stays in the core's 1 MiB L2) and runs the micro-kernel for
 * every sliver against every micro-panel (the 12 KiB sliver stays in L1 across the block's 8 micro-panels).
 * The micro-kernel keeps an MR × NR tile of C (8 rows × 3 vectors of 16 lanes = 24 zmm registers) in
 * registers and accumulates with fma over the KC slice. Transposes are absorbed by the packing routines;
 * edge tiles (M, N not multiples of MR, NR) are zero-padded in the packed panels and written back with
 * scalar tails.
 *
 * <p>Measured on the 2-core Zen 4 VM, single thread: 16-lane vectors (SPECIES_512, double-pumped on Zen 4)
 * ran at 90–100 GFLOP/s on GPT-2 shapes, 8-lane (SPECIES_256, same 8 × 3 tile) at 56–77; this kernel is at
 * 0.9–1.0× single-threaded OpenBLAS on those shapes.
 *
 * <p>Each element of C is computed by one task, summing K in the fixed order of its KC slices, so results
 * are bit-identical from run to run and for any number of threads. Packing buffers are per thread (a
 * {@link ThreadLocal} of heap arrays, about 1.4 MiB, allocated once per thread).
 */
final class VectorGemm {
    private VectorGemm() { }

    static final VectorSpecies<Float> S = FloatVector.SPECIES_512;
    /** MR lanes: one k-step of an A sliver, moved as one vector when packing. */
    private static final VectorSpecies<Float> S_MR = FloatVector.SPECIES_256;
    static final int L = S.length();
    /** Register tile: rows of A per micro-kernel call. */
    static final int MR = 8;
    /** Register tile: columns of B per micro-kernel call (3 vectors). */
    static final int NR = 3 * L;
    /**
     * Depth of one K slice: the A sliver MR × KC is 12 KiB (L1), the B block KC × NC 576 KiB (L2 is 1 MiB on
     * Zen 4). Chosen by measurement on the 2-core Zen 4 VM (single thread, CPU time, GPT-2 shapes): KC × NC of
     * 384 × 384 ran at 0.93–0.97× OpenBLAS; 256 × 480 at 0.88–0.95×; 512 × 288 and 192 × 672 no better.
     */
    static final int KC = 384;
    /**
     * Rows of A packed at once (MC × KC = 768 KiB, in L3), reused for all column blocks of a task. 512 beat
     * 1024 and 256 (2 threads, thread CPU time: TN 4096-token weight gradient 196 vs 172 vs 190 GFLOP/s).
     */
    static final int MC = 512;
    /** Columns of one packed B block (a multiple of NR). */
    static final int NC = 8 * NR;

    private static final ValueLayout.OfFloat F32 = ValueLayout.JAVA_FLOAT_UNALIGNED;
    private static final ByteOrder ORDER = ByteOrder.nativeOrder();

    /** Per-thread packing buffers, reused across calls (sizes are fixed by the block constants). */
    private static final class Workspace {
        final float[] bPack = new float[KC * NC];
        final float[] aPack = new float[MC * KC];
        final float[] stage = new float[Math.max(KC * MR, MC)];
        final float[] tile = new float[MR * NR];
        final float[] row = new float[Math.max(KC, NR)];
    }

    private static final ThreadLocal<Workspace> WORKSPACE = ThreadLocal.withInitial(Workspace::new);

    /**
     * {@code C = alpha·op(A)·op(B) + beta·C} on raw float segments; offsets and leading dimensions in elements.
     * A is stored [M, K] (or [K, M] when transA), B [K, N] (or [N, K] when transB), C [M, N]. Callers have
     * validated shapes and handled the K == 0 / alpha == 0 cases.
     */
    static void sgemm(ComputePool pool, boolean transA, boolean transB, int m, int n, int k, float alpha,
                      MemorySegment a, long aOff, long lda, MemorySegment b, long bOff, long ldb,
                      float beta, MemorySegment c, long cOff, long ldc) {
        int threads = pool.threads();
        boolean splitN = splitOnN(transA, transB, m, n, k, threads);
        int extent = splitN ? n : m;
        int unit = splitN ? NR : MR;
        int units = (extent + unit - 1) / unit;
        int tasks = Math.min(threads, units);
        pool.parallelFor(tasks, t -> {
            int lo = (int) ((long) units * t / tasks) * unit;
            int hi = Math.min(extent, (int) ((long) units * (t + 1) / tasks) * unit);
            if (hi <= lo) return;
            Workspace w = WORKSPACE.get();
            if (splitN) {
                block(w, transA, transB, 0, m, lo, hi, k, alpha, a, aOff, lda, b, bOff, ldb, beta, c, cOff, ldc);
            } else {
                block(w, transA, transB, lo, hi, 0, n, k, alpha, a, aOff, lda, b, bOff, ldb, beta, c, cOff, ldc);
            }
        });
    }

    /**
     * Whether to give each thread a range of columns (true) or of rows (false) of C: the one that packs less
     * per thread. Splitting N makes every thread pack all of A, splitting M all of B (once per MC-row chunk);
     * packing A untransposed or B transposed goes through a scalar transpose, about twice the cost of the
     * vector copies of the other two layouts, so those elements count double.
     */
    static boolean splitOnN(boolean transA, boolean transB, int m, int n, int k, int threads) {
        if (threads == 1 || m < 2L * MR * threads) return true;
        if (n < 2L * NR * threads) return false;
        double costA = transA ? 1 : 2, costB = transB ? 2 : 1;
        double rowsPerThread = (double) m / threads, colsPerThread = (double) n / threads;
        double packSplitN = costA * m * k + costB * k * colsPerThread * Math.ceil(m / (double) MC);
        double packSplitM = costA * rowsPerThread * k + costB * k * n * Math.ceil(rowsPerThread / MC);
        return packSplitN <= packSplitM;
    }

    /** C[i0:i1, j0:j1] over all of K. */
    private static void block(Workspace w, boolean transA, boolean transB, int i0, int i1, int j0, int j1,
                              int k, float alpha, MemorySegment a, long aOff, long lda,
                              MemorySegment b, long bOff, long ldb, float beta,
                              MemorySegment c, long cOff, long ldc) {
        for (int mc0 = i0; mc0 < i1; mc0 += MC) {
            int mcEnd = Math.min(i1, mc0 + MC);
            for (int pc = 0; pc < k; pc += KC) {
                int kc = Math.min(KC, k - pc);
                boolean first = pc == 0;
                // Pack op(A)[mc0:mcEnd, pc:pc+kc] once, as MR-row k-major slivers; reused for every column block.
                if (transA) {
                    packAT(w, a, aOff, lda, pc, kc, mc0, mcEnd);
                } else {
                    for (int ic = mc0; ic < mcEnd; ic += MR) {
                        packA(w, a, aOff, lda, pc, kc, ic, Math.min(MR, mcEnd - ic), (ic - mc0) * kc);
                    }
                }
                for (int jc = j0; jc < j1; jc += NC) {
                    int nc = Math.min(NC, j1 - jc);
                    if (transB) packBT(w, b, bOff, ldb, pc, kc, jc, nc);
                    else packB(w, b, bOff, ldb, pc, kc, jc, nc);
                    for (int ic = mc0; ic < mcEnd; ic += MR) {
                        int mr = Math.min(MR, mcEnd - ic);
                        int at = (ic - mc0) * kc;
                        for (int jr = 0; jr < nc; jr += NR) {
                            int nr = Math.min(NR, nc - jr);
                            microKernel(w.aPack, at, w.bPack, jr * kc, kc, w.tile);
                            store(w.tile, c, cOff + (long) ic * ldc + jc + jr, ldc, mr, nr, alpha, first ? beta : 1f);
                        }
                    }
                }
            }
        }
    }

    /**
     * tile[MR, NR] = aPack[kc, MR]ᵀ · bPack[kc, NR]: one k-major sliver of A (at aBase) times one B micro-panel (at bBase).
     */
    static void microKernel(float[] ap, int aBase, float[] bp, int bBase, int kc, float[] tile) {
        FloatVector c00 = FloatVector.zero(S), c01 = c00, c02 = c00;
        FloatVector c10 = c00, c11 = c00, c12 = c00;
        FloatVector c20 = c00, c21 = c00, c22 = c00;
        FloatVector c30 = c00, c31 = c00, c32 = c00;
        FloatVector c40 = c00, c41 = c00, c42 = c00;
        FloatVector c50 = c00, c51 = c00, c52 = c00;
        FloatVector c60 = c00, c61 = c00, c62 = c00;
        FloatVector c70 = c00, c71 = c00, c72 = c00;
        for (int p = 0; p < kc; p++) {
            int bo = bBase + p * NR;
            int ao = aBase + p * MR;
            FloatVector b0 = FloatVector.fromArray(S, bp, bo);
            FloatVector b1 = FloatVector.fromArray(S, bp, bo + L);
            FloatVector b2 = FloatVector.fromArray(S, bp, bo + 2 * L);
            FloatVector x = FloatVector.broadcast(S, ap[ao]);
            c00 = x.fma(b0, c00); c01 = x.fma(b1, c01); c02 = x.fma(b2, c02);
            x = FloatVector.broadcast(S, ap[ao + 1]);
            c10 = x.fma(b0, c10); c11 = x.fma(b1, c11); c12 = x.fma(b2, c12);
            x = FloatVector.broadcast(S, ap[ao + 2]);
            c20 = x.fma(b0, c20); c21 = x.fma(b1, c21); c22 = x.fma(b2, c22);
            x = FloatVector.broadcast(S, ap[ao + 3]);
            c30 = x.fma(b0, c30); c31 = x.fma(b1, c31); c32 = x.fma(b2, c32);
            x = FloatVector.broadcast(S, ap[ao + 4]);
            c40 = x.fma(b0, c40); c41 = x.fma(b1, c41); c42 = x.fma(b2, c42);
            x = FloatVector.broadcast(S, ap[ao + 5]);
            c50 = x.fma(b0, c50); c51 = x.fma(b1, c51); c52 = x.fma(b2, c52);
            x = FloatVector.broadcast(S, ap[ao + 6]);
            c60 = x.fma(b0, c60); c61 = x.fma(b1, c61); c62 = x.fma(b2, c62);
            x = FloatVector.broadcast(S, ap[ao + 7]);
            c70 = x.fma(b0, c70); c71 = x.fma(b1, c71); c72 = x.fma(b2, c72);
        }
        c00.intoArray(tile, 0); c01.intoArray(tile, L); c02.intoArray(tile, 2 * L);
        c10.intoArray(tile, NR); c11.intoArray(tile, NR + L); c12.intoArray(tile, NR + 2 * L);
        c20.intoArray(tile, 2 * NR); c21.intoArray(tile, 2 * NR + L); c22.intoArray(tile, 2 * NR + 2 * L);
        c30.intoArray(tile, 3 * NR); c31.intoArray(tile, 3 * NR + L); c32.intoArray(tile, 3 * NR + 2 * L);
        c40.intoArray(tile, 4 * NR); c41.intoArray(tile, 4 * NR + L); c42.intoArray(tile, 4 * NR + 2 * L);
        c50.intoArray(tile, 5 * NR); c51.intoArray(tile, 5 * NR + L); c52.intoArray(tile, 5 * NR + 2 * L);
        c60.intoArray(tile, 6 * NR); c61.intoArray(tile, 6 * NR + L); c62.intoArray(tile, 6 * NR + 2 * L);
        c70.intoArray(tile, 7 * NR); c71.intoArray(tile, 7 * NR + L); c72.intoArray(tile, 7 * NR + 2 * L);
    }

    /**
     * C[0:mr, 0:nr] = alpha·tile + beta·C, where beta == 0 ignores C's old contents (NaN included);
     * {@code cOff} is C's element offset of the tile's top-left corner.
     */
    private static void store(float[] tile, MemorySegment c, long cOff, long ldc, int mr, int nr,
                              float alpha, float beta) {
        for (int r = 0; r < mr; r++) {
            long rowByte = (cOff + r * ldc) * Float.BYTES;
            for (int v = 0; v < NR; v += L) {
                if (v >= nr) break;
                FloatVector acc = FloatVector.fromArray(S, tile, r * NR + v).mul(alpha);
                long at = rowByte + (long) v * Float.BYTES;
                if (v + L <= nr) {
                    if (beta == 0f) {
                        acc.intoMemorySegment(c, at, ORDER);
                    } else {
                        FloatVector old = FloatVector.fromMemorySegment(S, c, at, ORDER);
                        (beta == 1f ? acc.add(old) : old.fma(FloatVector.broadcast(S, beta), acc)).intoMemorySegment(c, at, ORDER);
                    }
                } else {
                    // Partial vector: scalar (masked segment accesses are far slower here).
                    int base = r * NR + v;
                    for (int j = 0; j < nr - v; j++) {
                        long cj = at + (long) j * Float.BYTES;
                        float x = alpha * tile[base + j];
                        c.set(F32, cj, beta == 0f ? x : beta == 1f ? x + c.get(F32, cj) : Math.fma(beta, c.get(F32, cj), x));
                    }
                }
            }
        }
    }

    // ---- packing: op(B)[pc:pc+kc, jc:jc+nc] into NR-column micro-panels, k-major, zero-padded ----

    /** B stored [K, N]: row p of the slice is contiguous over columns. */
    private static void packB(Workspace w, MemorySegment b, long bOff, long ldb, int pc, int kc, int jc, int nc) {
        float[] bp = w.bPack;
        for (int jr = 0; jr < nc; jr += NR) {
            int nr = Math.min(NR, nc - jr);
            int base = jr * kc;
            for (int p = 0; p < kc; p++) {
                long src = (bOff + (pc + p) * ldb + jc + jr) * Float.BYTES;
                int dst = base + p * NR;
                for (int v = 0; v < NR; v += L) {
                    if (v + L <= nr) {
                        FloatVector.fromMemorySegment(S, b, src + (long) v * Float.BYTES, ORDER).intoArray(bp, dst + v);
                    } else {
                        for (int j = v; j < v + L; j++) {
                            bp[dst + j] = j < nr ? b.get(F32, src + (long) j * Float.BYTES) : 0f;
                        }
                    }
                }
            }
        }
    }

    /** B stored [N, K] (transB): column j of op(B) is row j of storage, contiguous over k. */
    private static void packBT(Workspace w, MemorySegment b, long bOff, long ldb, int pc, int kc, int jc, int nc) {
        float[] bp = w.bPack;
        float[] row = w.row;
        for (int jr = 0; jr < nc; jr += NR) {
            int nr = Math.min(NR, nc - jr);
            int base = jr * kc;
            for (int j = 0; j < NR; j++) {
                if (j < nr) {
                    MemorySegment.copy(b, F32, (bOff + (long) (jc + jr + j) * ldb + pc) * Float.BYTES, row, 0, kc);
                    for (int p = 0; p < kc; p++) bp[base + p * NR + j] = row[p];
                } else {
                    for (int p = 0; p < kc; p++) bp[base + p * NR + j] = 0f;
                }
            }
        }
    }

    // ---- packing: op(A)[ic:ic+mr, pc:pc+kc] into an MR-row sliver, k-major, zero-padded ----

    /**
     * A stored [M, K]: each row is bulk-copied into a row-major staging sliver, which is then transposed to
     * k-major with sequential stores (faster here than strided stores, or than a micro-kernel reading the
     * row-major sliver through 8 row offsets: 0.95× vs 0.90× OpenBLAS).
     */
    private static void packA(Workspace w, MemorySegment a, long aOff, long lda, int pc, int kc, int ic, int mr,
                              int at) {
        float[] ap = w.stage;
        for (int r = 0; r < mr; r++) {
            MemorySegment.copy(a, F32, (aOff + (long) (ic + r) * lda + pc) * Float.BYTES, ap, r * kc, kc);
        }
        if (mr < MR) java.util.Arrays.fill(ap, mr * kc, MR * kc, 0f);
        float[] d = w.aPack;
        int s1 = kc, s2 = 2 * kc, s3 = 3 * kc, s4 = 4 * kc, s5 = 5 * kc, s6 = 6 * kc, s7 = 7 * kc;
        for (int p = 0; p < kc; p++) {
            int o = at + p * MR;
            d[o] = ap[p]; d[o + 1] = ap[s1 + p]; d[o + 2] = ap[s2 + p]; d[o + 3] = ap[s3 + p];
            d[o + 4] = ap[s4 + p]; d[o + 5] = ap[s5 + p]; d[o + 6] = ap[s6 + p]; d[o + 7] = ap[s7 + p];
        }
    }

    /**
     * A stored [K, M] (transA): row p of storage holds op(A)[:, p]. Reads each row's [mc0, mcEnd) span in one
     * contiguous copy (rows are far apart, e.g. 200 KB for a 50257-wide gradient, so reading 8 floats per row
     * and sliver would miss the TLB on every row), then deals it out to the slivers.
     */
    private static void packAT(Workspace w, MemorySegment a, long aOff, long lda, int pc, int kc, int mc0, int mcEnd) {
        float[] ap = w.aPack;
        float[] st = w.stage;
        int rows = mcEnd - mc0;
        int padded = (rows + MR - 1) / MR * MR;
        java.util.Arrays.fill(st, rows, padded, 0f);
        for (int p = 0; p < kc; p++) {
            MemorySegment.copy(a, F32, (aOff + (long) (pc + p) * lda + mc0) * Float.BYTES, st, 0, rows);
            for (int i = 0, sliver = p * MR; i < padded; i += MR, sliver += MR * kc) {
                FloatVector.fromArray(S_MR, st, i).intoArray(ap, sliver);
            }
        }
    }
}
