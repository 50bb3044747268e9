package dev.shardwise.core.kernels;

import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;

import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.function.DoubleSupplier;

import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

/** Tensors for kernel tests: seeded random fills, padded-row views, f64 copies, and close comparisons. Close it after each test. */
final class KernelFixture implements AutoCloseable {
    private final MemoryPool pool = MemoryPool.unlimited("kernel tests");
    private final List<Tensor> owners = new ArrayList<>();
    final Random random;

    KernelFixture(long seed) {
        random = new Random(seed);
    }

    Tensor zeros(DType dtype, int... shape) {
        Tensor t = Tensor.allocate(pool, MemoryCategory.ACTIVATIONS, dtype, shape);
        owners.add(t);
        return t;
    }

    /** Normal(0, scale) values. */
    Tensor randn(DType dtype, double scale, int... shape) {
        return fill(zeros(dtype, shape), () -> scale * random.nextGaussian());
    }

    /** A [rows, cols] view whose rows are {@code cols + pad} apart (pad columns hold a sentinel), filled by {@code values}. */
    Tensor padded(DType dtype, int rows, int cols, int pad, DoubleSupplier values) {
        Tensor owner = zeros(dtype, rows, cols + pad).fill(777.0);
        Tensor view = owner.slice(1, 0, cols);
        for (int r = 0; r < rows; r++) for (int c = 0; c < cols; c++) view.set(values.getAsDouble(), r, c);
        return view;
    }

    Tensor fill(Tensor t, DoubleSupplier values) {
        double[] v = new double[Math.toIntExact(t.numel())];
        for (int i = 0; i < v.length; i++) v[i] = values.getAsDouble();
        return t.copyFrom(v);
    }

    /** A contiguous copy of {@code t} in {@code dtype}. */
    Tensor copy(Tensor t, DType dtype) {
        return zeros(dtype, t.shape()).copyFrom(t.toDoubleArray());
    }

    Tensor f64(Tensor t) {
        return copy(t, DType.F64);
    }

    /** Asserts |actual - expected| <= atol + rtol·|expected| everywhere; reports the max abs diff. */
    static void assertClose(String what, Tensor actual, Tensor expected, double atol, double rtol) {
        double[] a = actual.toDoubleArray(), e = expected.toDoubleArray();
        if (a.length != e.length) fail(what + ": " + a.length + " elements vs " + e.length);
        double maxDiff = 0;
        int worst = -1;
        for (int i = 0; i < a.length; i++) {
            double d = Math.abs(a[i] - e[i]);
            if (!(d <= atol + rtol * Math.abs(e[i]))) {
                if (worst < 0 || d > maxDiff) worst = i;
            }
            if (d > maxDiff || Double.isNaN(d)) maxDiff = d;
        }
        if (worst >= 0) {
            fail(String.format("%s: max abs diff %.3g exceeds tolerance %.1g + %.1g·|expected| (element %d: %s vs %s)",
                    what, maxDiff, atol, rtol, worst, a[worst], e[worst]));
        }
    }

    /** Asserts every element of the padding (columns beyond the view) still holds the sentinel. */
    static void assertPaddingUntouched(String what, Tensor view, int pad) {
        Tensor whole = Tensor.wrap(view.segment(), view.dtype(), view.dim(0), view.dim(1) + pad);
        for (int r = 0; r < view.dim(0); r++) {
            for (int c = view.dim(1); c < view.dim(1) + pad; c++) {
                assertTrue(whole.getDouble(r, c) == 777.0, what + ": padding at [" + r + ", " + c + "] was overwritten");
            }
        }
    }

    @Override
    public void close() {
        for (Tensor t : owners) t.close();
        owners.clear();
    }

    /** Central difference of {@code f} with respect to element {@code i} of flat f64 tensor {@code x}. */
    static double centralDifference(Tensor x, int i, double h, java.util.function.DoubleSupplier f) {
        java.lang.foreign.MemorySegment s = x.segment();
        long at = x.byteOffset() + 8L * i;
        double v = s.get(java.lang.foreign.ValueLayout.JAVA_DOUBLE, at);
        s.set(java.lang.foreign.ValueLayout.JAVA_DOUBLE, at, v + h);
        double up = f.getAsDouble();
        s.set(java.lang.foreign.ValueLayout.JAVA_DOUBLE, at, v - h);
        double down = f.getAsDouble();
        s.set(java.lang.foreign.ValueLayout.JAVA_DOUBLE, at, v);
        return (up - down) / (2 * h);
    }

    /** Sum of a ∘ b over all elements (f64). */
    static double dot(Tensor a, Tensor b) {
        double[] x = a.toDoubleArray(), y = b.toDoubleArray();
        double s = 0;
        for (int i = 0; i < x.length; i++) s += x[i] * y[i];
        return s;
    }
}
