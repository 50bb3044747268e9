package dev.shardwise.core.kernels;

import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;
import jdk.incubator.vector.DoubleVector;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorShape;
import jdk.incubator.vector.VectorSpecies;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

import static dev.shardwise.core.kernels.Kernels.F;
import static dev.shardwise.core.kernels.Kernels.L;
import static dev.shardwise.core.kernels.Kernels.LE;
import static dev.shardwise.core.kernels.VecOps.get;
import static dev.shardwise.core.kernels.VecOps.load;
import static dev.shardwise.core.kernels.VecOps.put;

/**
 * Small vector operations the trainer needs on flat tensors (gradient accumulation, scaling, clipping, copies).
 * Every tensor argument must be contiguous; the tensors of one call share one shape and dtype (F32 through
 * the Vector API, F64 through plain loops). Elementwise operations are bit-identical for any thread count;
 * so is {@link #sumOfSquares}, which sums fixed chunks in float64 and adds the chunk sums in order.
 */
public final class Vectors {
    private Vectors() { }

    private static final ValueLayout.OfDouble D = ValueLayout.JAVA_DOUBLE_UNALIGNED;
    /** Elements per partial sum of {@link #sumOfSquares}; fixed so the result does not depend on threads. */
    static final int SUM_CHUNK = 1 << 16;

    /** {@code out = a + b}. */
    public static void add(Tensor out, Tensor a, Tensor b) {
        Rows[] r = flat("Vectors.add", new String[]{"out", "a", "b"}, out, a, b);
        MemorySegment os = r[0].segment(), as = r[1].segment(), bs = r[2].segment();
        if (out.dtype() == DType.F32) {
            Kernels.forStrips((oo, ao, bo, z3, z4, len) -> {
                int i = 0;
                for (; i <= len - L; i += L) load(as, ao + 4L * i).add(load(bs, bo + 4L * i)).intoMemorySegment(os, oo + 4L * i, LE);
                for (; i < len; i++) put(os, oo + 4L * i, get(as, ao + 4L * i) + get(bs, bo + 4L * i));
            }, r);
        } else {
            Kernels.forStrips((oo, ao, bo, z3, z4, len) -> {
                for (int i = 0; i < len; i++) os.set(D, oo + 8L * i, as.get(D, ao + 8L * i) + bs.get(D, bo + 8L * i));
            }, r);
        }
    }

    /** {@code y += x}. */
    public static void accumulate(Tensor y, Tensor x) {
        axpy(y, x, 1.0);
    }

    /** {@code y += alpha · x}. */
    public static void axpy(Tensor y, Tensor x, double alpha) {
        Rows[] r = flat("Vectors.axpy", new String[]{"y", "x"}, y, x);
        MemorySegment ys = r[0].segment(), xs = r[1].segment();
        if (y.dtype() == DType.F32) {
            float a = (float) alpha;
            boolean plain = alpha == 1.0;
            FloatVector va = FloatVector.broadcast(F, a);
            Kernels.forStrips((yo, xo, z2, z3, z4, len) -> {
                int i = 0;
                if (plain) {
                    for (; i <= len - L; i += L) load(ys, yo + 4L * i).add(load(xs, xo + 4L * i)).intoMemorySegment(ys, yo + 4L * i, LE);
                    for (; i < len; i++) put(ys, yo + 4L * i, get(ys, yo + 4L * i) + get(xs, xo + 4L * i));
                } else {
                    for (; i <= len - L; i += L) load(xs, xo + 4L * i).fma(va, load(ys, yo + 4L * i)).intoMemorySegment(ys, yo + 4L * i, LE);
                    for (; i < len; i++) put(ys, yo + 4L * i, Math.fma(a, get(xs, xo + 4L * i), get(ys, yo + 4L * i)));
                }
            }, r);
        } else {
            Kernels.forStrips((yo, xo, z2, z3, z4, len) -> {
                for (int i = 0; i < len; i++) ys.set(D, yo + 8L * i, ys.get(D, yo + 8L * i) + alpha * xs.get(D, xo + 8L * i));
            }, r);
        }
    }

    /** {@code x = alpha · x}. */
    public static void scale(Tensor x, double alpha) {
        Rows[] r = flat("Vectors.scale", new String[]{"x"}, x);
        MemorySegment xs = r[0].segment();
        if (x.dtype() == DType.F32) {
            float a = (float) alpha;
            Kernels.forStrips((xo, z1, z2, z3, z4, len) -> {
                int i = 0;
                for (; i <= len - L; i += L) load(xs, xo + 4L * i).mul(a).intoMemorySegment(xs, xo + 4L * i, LE);
                for (; i < len; i++) put(xs, xo + 4L * i, get(xs, xo + 4L * i) * a);
            }, r);
        } else {
            Kernels.forStrips((xo, z1, z2, z3, z4, len) -> {
                for (int i = 0; i < len; i++) xs.set(D, xo + 8L * i, xs.get(D, xo + 8L * i) * alpha);
            }, r);
        }
    }

    /** Sets every element of {@code x} to {@code value} (rounded to x's dtype). */
    public static void fill(Tensor x, double value) {
        Rows[] r = flat("Vectors.fill", new String[]{"x"}, x);
        MemorySegment xs = r[0].segment();
        if (x.dtype() == DType.F32) {
            FloatVector v = FloatVector.broadcast(F, (float) value);
            Kernels.forStrips((xo, z1, z2, z3, z4, len) -> {
                int i = 0;
                for (; i <= len - L; i += L) v.intoMemorySegment(xs, xo + 4L * i, LE);
                for (; i < len; i++) put(xs, xo + 4L * i, (float) value);
            }, r);
        } else {
            Kernels.forStrips((xo, z1, z2, z3, z4, len) -> {
                for (int i = 0; i < len; i++) xs.set(D, xo + 8L * i, value);
            }, r);
        }
    }

    /** Sets every element of {@code x} to zero. */
    public static void zero(Tensor x) {
        fill(x, 0.0);
    }

    /** {@code dst = src} (same shape and dtype; the two must not overlap). */
    public static void copy(Tensor dst, Tensor src) {
        Rows[] r = flat("Vectors.copy", new String[]{"dst", "src"}, dst, src);
        MemorySegment ds = r[0].segment(), ss = r[1].segment();
        int es = dst.dtype().byteSize();
        Kernels.forStrips((d0, s0, z2, z3, z4, len) -> MemorySegment.copy(ss, s0, ds, d0, (long) len * es), r);
    }

    /**
     * Sum of the squares of all elements, accumulated in float64 (for the global gradient norm used in
     * clipping). Bit-identical for any thread count: fixed chunks of {@value #SUM_CHUNK} elements are each
     * summed in a fixed order and the chunk sums added in chunk order.
     */
    public static double sumOfSquares(Tensor x) {
        Rows[] r = flat("Vectors.sumOfSquares", new String[]{"x"}, x);
        MemorySegment xs = r[0].segment();
        long base = r[0].base();
        long n = x.numel();
        int chunks = Kernels.fixedChunks(n, SUM_CHUNK);
        double[] partial = new double[chunks];
        boolean f32 = x.dtype() == DType.F32;
        Kernels.forChunks(chunks, n, k -> {
            long from = (long) k * SUM_CHUNK;
            int len = (int) Math.min(SUM_CHUNK, n - from);
            partial[k] = f32 ? sumSqF32(xs, base + 4 * from, len) : sumSqF64(xs, base + 8 * from, len);
        });
        double s = 0;
        for (double p : partial) s += p;
        return s;
    }

    /** Doubles per vector, and floats loaded to fill one (half a preferred float vector on x86). */
    private static final VectorSpecies<Double> D_SPECIES = DoubleVector.SPECIES_PREFERRED;
    private static final VectorSpecies<Float> F_HALF =
            VectorSpecies.of(float.class, VectorShape.forBitSize(D_SPECIES.vectorBitSize() / 2));

    private static double sumSqF32(MemorySegment s, long off, int len) {
        // Two accumulators of D_SPECIES.length() doubles; each takes alternate half-vectors of floats, widened
        // lane for lane (a same-length conversion compiles to one instruction; converting each half of a full float
        // vector with convertShape(..., part) was not intrinsified: 21 MB of gradients took 1.2 ms on one thread,
        // this 0.5 ms). Same accumulators, same order, same bits as that form.
        DoubleVector a = DoubleVector.zero(D_SPECIES);
        DoubleVector b = a;
        int half = F_HALF.length(), i = 0;
        for (; i <= len - 2 * half; i += 2 * half) {
            DoubleVector lo = (DoubleVector) FloatVector.fromMemorySegment(F_HALF, s, off + 4L * i, LE)
                    .convertShape(VectorOperators.F2D, D_SPECIES, 0);
            DoubleVector hi = (DoubleVector) FloatVector.fromMemorySegment(F_HALF, s, off + 4L * (i + half), LE)
                    .convertShape(VectorOperators.F2D, D_SPECIES, 0);
            a = lo.fma(lo, a);
            b = hi.fma(hi, b);
        }
        double r = VecOps.sumLanes(a.add(b));
        for (; i < len; i++) {
            double v = get(s, off + 4L * i);
            r += v * v;
        }
        return r;
    }

    private static double sumSqF64(MemorySegment s, long off, int len) {
        double r = 0;
        for (int i = 0; i < len; i++) {
            double v = s.get(D, off + 8L * i);
            r += v * v;
        }
        return r;
    }

    private static Rows[] flat(String op, String[] names, Tensor... ts) {
        Kernels.floatType(op, names, ts);
        Rows[] r = new Rows[ts.length];
        for (int k = 0; k < ts.length; k++) {
            Kernels.sameShape(op, names[k], ts[k], names[0], ts[0]);
            Kernels.contiguous(op, names[k], ts[k]);
            r[k] = Rows.of(op, names[k], ts[k].view(-1));
        }
        return r;
    }
}
