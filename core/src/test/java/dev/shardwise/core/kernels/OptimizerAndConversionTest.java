package dev.shardwise.core.kernels;

import dev.shardwise.core.exec.ComputePool;
import dev.shardwise.core.tensor.BFloat16;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

import java.lang.foreign.ValueLayout;

import static dev.shardwise.core.kernels.KernelFixture.assertClose;
import static org.junit.jupiter.api.Assertions.*;

/** AdamW against a scalar formula, bf16 conversion against {@link BFloat16}, and the vector helpers. */
class OptimizerAndConversionTest {
    private final KernelFixture fx = new KernelFixture(5);

    @AfterEach
    void close() { fx.close(); }

    @Test
    void adamWMatchesScalarFormulaOverSeveralSteps() {
        for (int n : new int[]{1, 7, 33, 1000, 70_001}) {
            double lr = 1e-2, b1 = 0.9, b2 = 0.95, eps = 1e-8, wd = 0.1;
            double[] p = new double[n], m = new double[n], v = new double[n];
            for (int i = 0; i < n; i++) p[i] = fx.random.nextGaussian();
            Tensor tp = fx.zeros(DType.F32, n).copyFrom(p), tm = fx.zeros(DType.F32, n), tv = fx.zeros(DType.F32, n);
            Tensor tp64 = fx.zeros(DType.F64, n).copyFrom(p), tm64 = fx.zeros(DType.F64, n), tv64 = fx.zeros(DType.F64, n);
            for (int t = 1; t <= 5; t++) {
                double[] g = new double[n];
                for (int i = 0; i < n; i++) g[i] = (float) (fx.random.nextGaussian() * (1 + i % 3));   // exact in f32 and f64
                Tensor tg = fx.zeros(DType.F32, n).copyFrom(g), tg64 = fx.zeros(DType.F64, n).copyFrom(g);
                AdamW.step(tp, tg, tm, tv, lr, b1, b2, eps, wd, t);
                AdamW.step(tp64, tg64, tm64, tv64, lr, b1, b2, eps, wd, t);
                for (int i = 0; i < n; i++) {   // the scalar formula (Loshchilov and Hutter 2019, Algorithm 2)
                    double gi = g[i];
                    m[i] = b1 * m[i] + (1 - b1) * gi;
                    v[i] = b2 * v[i] + (1 - b2) * gi * gi;
                    double mh = m[i] / (1 - Math.pow(b1, t)), vh = v[i] / (1 - Math.pow(b2, t));
                    p[i] -= lr * (mh / (Math.sqrt(vh) + eps) + wd * p[i]);
                }
                Tensor expected = fx.zeros(DType.F64, n).copyFrom(p);
                assertClose("adamw f64 n=" + n + " step " + t, tp64, expected, 1e-12, 1e-12);
                // f32 state: each step moves p by ~lr with relative error ~1e-6
                assertClose("adamw f32 n=" + n + " step " + t, tp, expected, 1e-6, 1e-6);
                assertClose("adamw f32 m n=" + n + " step " + t, tm, fx.zeros(DType.F64, n).copyFrom(m), 1e-6, 1e-5);
            }
        }
    }

    @Test
    void adamWWithAGradientScaleGivesTheBitsOfScalingTheGradientsFirst() {
        for (DType dtype : new DType[]{DType.F32, DType.F64}) {
            for (int n : new int[]{1, 33, 70_001}) {
                double scale = 0.37;
                Tensor g = fx.randn(dtype, 2, n), p1 = fx.randn(dtype, 1, n), p2 = fx.copy(p1, dtype);
                Tensor m1 = fx.randn(dtype, 0.1, n), m2 = fx.copy(m1, dtype);
                Tensor v1 = fx.zeros(dtype, n).fill(0.5), v2 = fx.copy(v1, dtype);
                Tensor scaled = fx.copy(g, dtype);
                Vectors.scale(scaled, scale);
                AdamW.step(p1, g, m1, v1, 1e-2, 0.9, 0.95, 1e-8, 0.1, 3, scale);
                AdamW.step(p2, scaled, m2, v2, 1e-2, 0.9, 0.95, 1e-8, 0.1, 3);
                String cs = "adamw gradScale " + dtype + " n=" + n;
                assertArrayEquals(p2.toDoubleArray(), p1.toDoubleArray(), cs + " param");
                assertArrayEquals(m2.toDoubleArray(), m1.toDoubleArray(), cs + " m");
                assertArrayEquals(v2.toDoubleArray(), v1.toDoubleArray(), cs + " v");
            }
        }
    }

    @Test
    void adamWRejectsStepZero() {
        Tensor t = fx.zeros(DType.F32, 4);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> AdamW.step(t, t, t, t, 1e-3, 0.9, 0.999, 1e-8, 0, 0));
        assertTrue(e.getMessage().contains("1-based"), e.getMessage());
    }

    @Test
    void bf16ConversionMatchesScalarBitForBitIncludingTiesNaNAndInfinity() {
        int n = 100_003;
        Tensor f = fx.zeros(DType.F32, n);
        int[] special = {0x7fc00000, 0xffc00001, 0x7f800001, 0x7f800000, 0xff800000, 0x00000001, 0x80000000,
                0x3f808000, 0x3f818000, 0x3f80ffff, 0x7f7fffff, 0x0000ffff, 0x007f8000};
        for (int i = 0; i < n; i++) {
            int bits = i < special.length ? special[i] : fx.random.nextInt();
            f.segment().set(ValueLayout.JAVA_INT, 4L * i, bits);
        }
        Tensor h = fx.zeros(DType.BF16, n);
        Bf16Convert.fromFloat(h, f);
        Tensor back = fx.zeros(DType.F32, n);
        Bf16Convert.toFloat(back, h);
        for (int i = 0; i < n; i++) {
            float v = f.segment().get(ValueLayout.JAVA_FLOAT, 4L * i);
            short expected = BFloat16.fromFloat(v);
            short actual = h.segment().get(ValueLayout.JAVA_SHORT, 2L * i);
            if (expected != actual) {
                fail(String.format("bf16 of float bits 0x%08x: expected 0x%04x, got 0x%04x (element %d)",
                        Float.floatToRawIntBits(v), expected, actual, i));
            }
            int wide = back.segment().get(ValueLayout.JAVA_INT, 4L * i);
            assertEquals(Float.floatToRawIntBits(BFloat16.toFloat(actual)), wide, "widening of bf16 element " + i);
        }
    }

    @Test
    void vectorHelpersMatchScalarLoops() {
        for (int n : new int[]{1, 7, 33, 129, 100_003}) {
            double[] a = new double[n], b = new double[n];
            for (int i = 0; i < n; i++) { a[i] = (float) fx.random.nextGaussian(); b[i] = (float) fx.random.nextGaussian(); }
            for (DType dt : new DType[]{DType.F32, DType.F64}) {
                String cs = dt.label() + " n=" + n;
                Tensor ta = fx.zeros(dt, n).copyFrom(a), tb = fx.zeros(dt, n).copyFrom(b), out = fx.zeros(dt, n);
                Vectors.add(out, ta, tb);
                double[] e = new double[n];
                for (int i = 0; i < n; i++) e[i] = a[i] + b[i];
                assertClose(cs + " add", out, fx.zeros(DType.F64, n).copyFrom(e), 1e-6, 1e-6);
                Vectors.axpy(out, ta, -0.5);
                for (int i = 0; i < n; i++) e[i] += -0.5 * a[i];
                assertClose(cs + " axpy", out, fx.zeros(DType.F64, n).copyFrom(e), 1e-6, 1e-6);
                Vectors.accumulate(out, tb);
                for (int i = 0; i < n; i++) e[i] += b[i];
                assertClose(cs + " accumulate", out, fx.zeros(DType.F64, n).copyFrom(e), 1e-6, 1e-6);
                Vectors.scale(out, 3);
                for (int i = 0; i < n; i++) e[i] *= 3;
                assertClose(cs + " scale", out, fx.zeros(DType.F64, n).copyFrom(e), 1e-5, 1e-6);
                double ss = 0;
                for (double x : a) ss += x * x;
                assertEquals(ss, Vectors.sumOfSquares(ta), 1e-12 * Math.max(1, ss), cs + " sumOfSquares");
                Vectors.copy(out, ta);
                assertArrayEquals(ta.toDoubleArray(), out.toDoubleArray(), cs + " copy");
                Vectors.fill(out, 2.5);
                for (double x : out.toDoubleArray()) assertEquals(2.5, x, cs + " fill");
                Vectors.zero(out);
                for (double x : out.toDoubleArray()) assertEquals(0.0, x, cs + " zero");
            }
        }
    }

    @Test
    void sumOfSquaresIsBitIdenticalForOneAndTwoThreads() {
        Tensor x = fx.randn(DType.F32, 1, 1_000_003);
        double[] s = new double[2];
        for (int threads = 1; threads <= 2; threads++) {
            int k = threads - 1;
            try (ComputePool pool = new ComputePool("t" + threads, threads)) {
                ComputePool.runWith(pool, () -> s[k] = Vectors.sumOfSquares(x));
            }
        }
        assertEquals(s[0], s[1], 0.0, "sumOfSquares with 1 vs 2 threads");
    }

    @Test
    void vectorHelpersRejectNonContiguousTensors() {
        Tensor t = fx.zeros(DType.F32, 4, 6).slice(1, 0, 3);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> Vectors.scale(t, 2));
        assertTrue(e.getMessage().contains("not contiguous"), e.getMessage());
    }
}
