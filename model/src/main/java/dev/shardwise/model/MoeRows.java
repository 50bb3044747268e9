package dev.shardwise.model;

import dev.shardwise.core.exec.ComputePool;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;
import jdk.incubator.vector.DoubleVector;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorShape;
import jdk.incubator.vector.VectorSpecies;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;

/**
 * Row moves of a mixture of experts over contiguous [rows, C] tensors of F32 or F64: gather the routed tokens into
 * expert order (dispatch) and scatter rows back by the same index (expert parallelism's return to source order), add
 * weighted expert outputs back onto the tokens (combine), the gates' gradients and the scatter-add of the experts'
 * input gradients. Each runs over the compute pool in blocks of tokens; every output row
 * is written by one task, in a fixed order (a token's assignments j = 0 .. k-1), and dot products sum in float64 in
 * a fixed lane order, so results do not depend on the thread count.
 *
 * <p>Assignment a = n·k + j is token n's j-th choice; {@code rowOf[a]} is its row in the expert-ordered [M, C]
 * tensors, or -1 when capacity dropped it.
 */
final class MoeRows {
    private static final VectorSpecies<Float> F = FloatVector.SPECIES_PREFERRED;
    private static final VectorSpecies<Double> D = DoubleVector.SPECIES_PREFERRED;
    /** Floats widened to fill one D vector (half a preferred float vector on x86). */
    private static final VectorSpecies<Float> F_HALF = VectorSpecies.of(float.class, VectorShape.forBitSize(D.vectorBitSize() / 2));
    private static final ByteOrder LE = ByteOrder.LITTLE_ENDIAN;
    private static final ValueLayout.OfFloat FL = ValueLayout.JAVA_FLOAT_UNALIGNED;
    private static final ValueLayout.OfDouble DL = ValueLayout.JAVA_DOUBLE_UNALIGNED;
    /** Tokens per task: 64 rows of C = 256 are 64 KiB per tensor touched. */
    private static final int BLOCK = 64;

    private MoeRows() { }

    /** dst[i, :] = src[rows[i], :] for i in [0, dst rows); src [N, C], dst [M, C] (a gather by assignment with k = 1). */
    static void gather(Tensor dst, Tensor src, int[] rows) {
        gatherAssigned(dst, src, rows, 1);
    }

    /** dst[i, :] = src[assignment[i] / k, :] for i in [0, dst rows): dispatch by assignment (a = n·k + j is token n's). */
    static void gatherAssigned(Tensor dst, Tensor src, int[] assignment, int k) {
        forBlocks(dst.dim(0), (lo, hi) -> gatherAssigned(dst, src, assignment, k, lo, hi - lo));
    }

    /**
     * dst[i, :] = src[assignment[i] / k, :] for i in [from, from + count), on this thread: one expert tile's share of a
     * dispatch by assignment (a = n·k + j is token n's). src [N, C], dst [M, C].
     */
    static void gatherAssigned(Tensor dst, Tensor src, int[] assignment, int k, int from, int count) {
        int c = width(dst, src);
        long rowBytes = (long) c * dst.dtype().byteSize();
        for (int i = from; i < from + count; i++) {
            MemorySegment.copy(src.segment(), src.byteOffset() + (long) (assignment[i] / k) * rowBytes, dst.segment(),
                    dst.byteOffset() + i * rowBytes, rowBytes);
        }
    }

    /** dst[rows[i], :] = src[i, :] for i in [0, src rows) (the inverse of {@link #gather}); rows distinct; src [M, C], dst [N, C]. */
    static void scatter(Tensor dst, Tensor src, int[] rows) {
        int c = width(dst, src), m = src.dim(0);
        long rowBytes = (long) c * dst.dtype().byteSize();
        forBlocks(m, (lo, hi) -> {
            for (int i = lo; i < hi; i++) {
                MemorySegment.copy(src.segment(), src.byteOffset() + i * rowBytes, dst.segment(), dst.byteOffset() + rows[i] * rowBytes, rowBytes);
            }
        });
    }

    /**
     * Combine: y[n, :] = base[n, :] + Σ_j w_a·ys[rowOf[a], :] over token n's kept assignments a = n·k + j, j
     * ascending, with w_a = scale·gate[a]; base null counts as 0. y, base [N, C]; ys [M, C].
     */
    static void combine(Tensor y, Tensor base, Tensor ys, int[] rowOf, int k, double[] gate, double scale) {
        int c = width(y, ys), n = y.dim(0);
        if (base != null) width(y, base);
        boolean f32 = y.dtype() == DType.F32;
        MemorySegment yS = y.segment(), sS = ys.segment(), bS = base == null ? null : base.segment();
        forBlocks(n, (lo, hi) -> {
            for (int t = lo; t < hi; t++) {
                long yo = offset(y, t, c), bo = base == null ? -1 : offset(base, t, c);
                if (f32) {
                    if (bS != null) MemorySegment.copy(bS, bo, yS, yo, 4L * c);
                    else yS.asSlice(yo, 4L * c).fill((byte) 0);
                } else {
                    for (int i = 0; i < c; i++) yS.set(DL, yo + 8L * i, bS == null ? 0 : bS.get(DL, bo + 8L * i));
                }
                for (int j = 0; j < k; j++) {
                    int a = t * k + j, r = rowOf[a];
                    if (r < 0) continue;
                    long so = offset(ys, r, c);
                    if (f32) axpyF32(yS, yo, (float) (scale * gate[a]), sS, so, c);
                    else for (int i = 0; i < c; i++) yS.set(DL, yo + 8L * i, yS.get(DL, yo + 8L * i) + scale * gate[a] * sS.get(DL, so + 8L * i));
                }
            }
        });
    }

    /**
     * Combine's backward, for y_n += s·g_a·ys_r: dys[r, :] = s·g_a·dy[n, :] and dgate[a] = s·Σ_i dy[n, i]·ys[r, i]
     * (float64) for every kept assignment a = n·k + j, r = rowOf[a]; dgate of dropped ones stays as it was.
     * dy [N, C]; dys, ys [M, C]; dgate [N·k].
     */
    static void combineBackward(Tensor dys, double[] dgate, Tensor dy, Tensor ys, int[] rowOf, int k, double[] gate, double scale) {
        int c = width(dys, dy), n = dy.dim(0);
        width(dys, ys);
        boolean f32 = dy.dtype() == DType.F32;
        MemorySegment dS = dys.segment(), gS = dy.segment(), sS = ys.segment();
        forBlocks(n, (lo, hi) -> {
            for (int t = lo; t < hi; t++) {
                long go = offset(dy, t, c);
                for (int j = 0; j < k; j++) {
                    int a = t * k + j, r = rowOf[a];
                    if (r < 0) continue;
                    combineBackwardRow(dS, offset(dys, r, c), dgate, a, gS, go, sS, offset(ys, r, c), c, f32, gate[a], scale);
                }
            }
        });
    }

    /**
     * {@link #combineBackward} for dispatched rows r in [from, from + count), on this thread (one expert tile's rows):
     * with a = assignment[r], n = a / k, dys[r, :] = s·g_a·dy[n, :] and dgate[a] = s·Σ_i dy[n, i]·ys[r, i], the same
     * arithmetic as {@link #combineBackward}, so the same bits. dy [N, C]; dys, ys [M, C].
     */
    static void combineBackwardRows(Tensor dys, double[] dgate, Tensor dy, Tensor ys, int[] assignment, int k, double[] gate,
                                    double scale, int from, int count) {
        int c = width(dys, dy);
        width(dys, ys);
        boolean f32 = dy.dtype() == DType.F32;
        MemorySegment dS = dys.segment(), gS = dy.segment(), sS = ys.segment();
        for (int r = from; r < from + count; r++) {
            int a = assignment[r];
            combineBackwardRow(dS, offset(dys, r, c), dgate, a, gS, offset(dy, a / k, c), sS, offset(ys, r, c), c, f32, gate[a], scale);
        }
    }

    /** One kept assignment a of combine's backward: its dys row (at dOff) and dgate[a], from dy's row (go) and ys's (so). */
    private static void combineBackwardRow(MemorySegment dS, long dOff, double[] dgate, int a, MemorySegment gS, long go,
                                           MemorySegment sS, long so, int c, boolean f32, double gate, double scale) {
        if (f32) {
            scaleF32(dS, dOff, (float) (scale * gate), gS, go, c);
            dgate[a] = scale * dotF32(gS, go, sS, so, c);
        } else {
            double s = 0;
            for (int i = 0; i < c; i++) {
                double g = gS.get(DL, go + 8L * i);
                dS.set(DL, dOff + 8L * i, scale * gate * g);
                s += g * sS.get(DL, so + 8L * i);
            }
            dgate[a] = scale * s;
        }
    }

    /**
     * Dispatch's backward: dx[n, :] += Σ_j dxs[rowOf[a], :] over token n's kept assignments a = n·k + j, j ascending,
     * then += extra[n, :] when extra is not null. dx, extra [N, C]; dxs [M, C], or null for none.
     */
    static void scatterAdd(Tensor dx, Tensor dxs, int[] rowOf, int k, Tensor extra) {
        int c = dx.dim(1), n = dx.dim(0);
        if (dxs != null) width(dx, dxs);
        if (extra != null) width(dx, extra);
        boolean f32 = dx.dtype() == DType.F32;
        MemorySegment xS = dx.segment(), sS = dxs == null ? null : dxs.segment(), eS = extra == null ? null : extra.segment();
        forBlocks(n, (lo, hi) -> {
            for (int t = lo; t < hi; t++) {
                long xo = offset(dx, t, c);
                for (int j = 0; j <= k; j++) {
                    long so;
                    MemorySegment from;
                    if (j < k) {
                        int r = sS == null ? -1 : rowOf[t * k + j];
                        if (r < 0) continue;
                        from = sS;
                        so = offset(dxs, r, c);
                    } else {
                        if (eS == null) continue;
                        from = eS;
                        so = offset(extra, t, c);
                    }
                    if (f32) axpyF32(xS, xo, 1f, from, so, c);
                    else for (int i = 0; i < c; i++) xS.set(DL, xo + 8L * i, xS.get(DL, xo + 8L * i) + from.get(DL, so + 8L * i));
                }
            }
        });
    }

    /** y[i] += a·x[i] (one fused multiply-add per element) for c floats. */
    private static void axpyF32(MemorySegment y, long yo, float a, MemorySegment x, long xo, int c) {
        FloatVector av = FloatVector.broadcast(F, a);
        int i = 0;
        for (; i <= c - F.length(); i += F.length()) {
            FloatVector.fromMemorySegment(F, x, xo + 4L * i, LE)
                    .fma(av, FloatVector.fromMemorySegment(F, y, yo + 4L * i, LE))
                    .intoMemorySegment(y, yo + 4L * i, LE);
        }
        for (; i < c; i++) y.set(FL, yo + 4L * i, Math.fma(x.get(FL, xo + 4L * i), a, y.get(FL, yo + 4L * i)));
    }

    /** y[i] = a·x[i] for c floats. */
    private static void scaleF32(MemorySegment y, long yo, float a, MemorySegment x, long xo, int c) {
        int i = 0;
        for (; i <= c - F.length(); i += F.length()) {
            FloatVector.fromMemorySegment(F, x, xo + 4L * i, LE).mul(a).intoMemorySegment(y, yo + 4L * i, LE);
        }
        for (; i < c; i++) y.set(FL, yo + 4L * i, a * x.get(FL, xo + 4L * i));
    }

    /** Σ_i a[i]·b[i] over c floats, widened to float64 (exact products), in D.length() lanes, then the tail. */
    private static double dotF32(MemorySegment a, long ao, MemorySegment b, long bo, int c) {
        DoubleVector acc = DoubleVector.zero(D);
        int half = F_HALF.length(), i = 0;
        for (; i <= c - half; i += half) {
            DoubleVector x = (DoubleVector) FloatVector.fromMemorySegment(F_HALF, a, ao + 4L * i, LE).convertShape(VectorOperators.F2D, D, 0);
            DoubleVector y = (DoubleVector) FloatVector.fromMemorySegment(F_HALF, b, bo + 4L * i, LE).convertShape(VectorOperators.F2D, D, 0);
            acc = x.fma(y, acc);
        }
        double s = 0;
        for (int l = 0; l < D.length(); l++) s += acc.lane(l);   // lane order (reduceLanes' order is unspecified)
        for (; i < c; i++) s += (double) a.get(FL, ao + 4L * i) * b.get(FL, bo + 4L * i);
        return s;
    }

    /** The work of rows [lo, hi). */
    interface Block {
        void run(int lo, int hi);
    }

    /** Runs rows [0, rows) in blocks of {@value #BLOCK} over the compute pool; blocks must write disjoint outputs. */
    static void forBlocks(int rows, Block body) {
        int blocks = (rows + BLOCK - 1) / BLOCK;
        ComputePool.current().parallelFor(blocks, b -> body.run(b * BLOCK, Math.min(rows, (b + 1) * BLOCK)));
    }

    private static long offset(Tensor t, int row, int c) {
        return t.byteOffset() + (long) row * c * t.dtype().byteSize();
    }

    private static int width(Tensor a, Tensor b) {
        if (a.rank() != 2 || b.rank() != 2 || a.dim(1) != b.dim(1) || a.dtype() != b.dtype() || !a.isContiguous() || !b.isContiguous()
                || (a.dtype() != DType.F32 && a.dtype() != DType.F64)) {
            throw new IllegalArgumentException("MoE row moves need contiguous [rows, C] tensors of one dtype (f32 or f64) and width, got "
                    + a.describe() + " and " + b.describe());
        }
        return a.dim(1);
    }
}
