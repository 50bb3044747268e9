package dev.shardwise.core.kernels;

import dev.shardwise.core.exec.ComputePool;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

import java.util.function.DoubleSupplier;

import static dev.shardwise.core.kernels.KernelFixture.assertClose;
import static org.junit.jupiter.api.Assertions.*;

/** LayerNorm and RmsNorm against their float64 references, and the references against finite differences. */
class NormTest {
    private final KernelFixture fx = new KernelFixture(11);

    @AfterEach
    void close() { fx.close(); }

    @ParameterizedTest(name = "N={0} C={1} pad={2}")
    @CsvSource({"1, 1, 0", "3, 7, 0", "7, 33, 2", "33, 129, 0", "2, 768, 8", "4, 1000, 0"})
    void layerNormMatchesFloat64Reference(int n, int c, int pad) {
        String cs = "layernorm N=" + n + " C=" + c + " pad=" + pad;
        Tensor x = fx.padded(DType.F32, n, c, pad, () -> 1.5 + 2 * fx.random.nextGaussian());
        Tensor w = fx.randn(DType.F32, 1, c), b = fx.randn(DType.F32, 1, c);
        Tensor out = fx.padded(DType.F32, n, c, pad, () -> 0);
        Tensor mean = fx.zeros(DType.F32, n), rstd = fx.zeros(DType.F32, n);
        Tensor out64 = fx.zeros(DType.F64, n, c), mean64 = fx.zeros(DType.F64, n), rstd64 = fx.zeros(DType.F64, n);
        LayerNorm.forward(out, mean, rstd, x, w, b, LayerNorm.GPT2_EPS);
        Tensor x64 = fx.f64(x), w64 = fx.f64(w);
        LayerNorm.forward(out64, mean64, rstd64, x64, w64, fx.f64(b), LayerNorm.GPT2_EPS);
        // f32 sums over C: relative error ~ sqrt(C) · eps on mean and variance
        assertClose(cs + " out", out, out64, 1e-5, 1e-5);
        assertClose(cs + " mean", mean, mean64, 1e-6, 1e-5);
        assertClose(cs + " rstd", rstd, rstd64, 1e-6, 1e-5);
        if (pad > 0) KernelFixture.assertPaddingUntouched(cs + " out", out, pad);

        Tensor dout = fx.padded(DType.F32, n, c, pad, () -> fx.random.nextGaussian());
        Tensor dx = fx.padded(DType.F32, n, c, pad, () -> 0.25);
        Tensor dw = fx.zeros(DType.F32, c).fill(1), db = fx.zeros(DType.F32, c).fill(-1);
        Tensor dx64 = fx.zeros(DType.F64, n, c).fill(0.25), dw64 = fx.zeros(DType.F64, c).fill(1), db64 = fx.zeros(DType.F64, c).fill(-1);
        LayerNorm.backward(dx, dw, db, dout, x, mean, rstd, w);
        LayerNorm.backward(dx64, dw64, db64, fx.f64(dout), x64, mean64, rstd64, w64);
        assertClose(cs + " dx", dx, dx64, 2e-5, 1e-4);
        assertClose(cs + " dweight", dw, dw64, 2e-5 * Math.sqrt(n), 1e-4);
        assertClose(cs + " dbias", db, db64, 2e-5 * Math.sqrt(n), 1e-4);
    }

    @ParameterizedTest(name = "{0} N={1} C={2} pad={3}")
    @CsvSource({"F32, 1, 1, 0", "F32, 3, 7, 0", "F32, 7, 33, 2", "F32, 65, 256, 0", "F32, 4, 1000, 3", "F64, 7, 33, 2"})
    void layerNormBackwardOntoAResidualGivesTheBitsOfBackwardIntoItsCopy(DType dtype, int n, int c, int pad) {
        String cs = "layernorm backwardOnto " + dtype + " N=" + n + " C=" + c + " pad=" + pad;
        Tensor x = fx.padded(dtype, n, c, pad, () -> 1.5 + 2 * fx.random.nextGaussian());
        Tensor w = fx.randn(dtype, 1, c), b = fx.randn(dtype, 1, c), out = fx.zeros(dtype, n, c);
        Tensor mean = fx.zeros(dtype, n), rstd = fx.zeros(dtype, n);
        LayerNorm.forward(out, mean, rstd, x, w, b, LayerNorm.GPT2_EPS);
        Tensor dout = fx.padded(dtype, n, c, pad, () -> fx.random.nextGaussian());
        Tensor residual = fx.padded(dtype, n, c, pad, () -> fx.random.nextGaussian());
        Tensor dx = fx.padded(dtype, n, c, pad, () -> Double.NaN), copy = fx.padded(dtype, n, c, 0, () -> 0);
        copy.copyFrom(residual.toDoubleArray());
        Tensor dw = fx.zeros(dtype, c).fill(1), db = fx.zeros(dtype, c).fill(-1);
        Tensor dw2 = fx.zeros(dtype, c).fill(1), db2 = fx.zeros(dtype, c).fill(-1);
        LayerNorm.backwardOnto(dx, residual, dw, db, dout, x, mean, rstd, w);
        LayerNorm.backward(copy, dw2, db2, dout, x, mean, rstd, w);
        assertArrayEquals(copy.toDoubleArray(), dx.toDoubleArray(), cs + " dx");
        assertArrayEquals(dw2.toDoubleArray(), dw.toDoubleArray(), cs + " dweight");
        assertArrayEquals(db2.toDoubleArray(), db.toDoubleArray(), cs + " dbias");
        if (pad > 0) KernelFixture.assertPaddingUntouched(cs + " dx", dx, pad);
    }

    @ParameterizedTest(name = "N={0} C={1} pad={2}")
    @CsvSource({"1, 1, 0", "3, 7, 0", "7, 33, 2", "33, 129, 0", "2, 1000, 8"})
    void rmsNormMatchesFloat64Reference(int n, int c, int pad) {
        String cs = "rmsnorm N=" + n + " C=" + c + " pad=" + pad;
        Tensor x = fx.padded(DType.F32, n, c, pad, () -> 0.5 + fx.random.nextGaussian());
        Tensor w = fx.randn(DType.F32, 1, c);
        Tensor out = fx.padded(DType.F32, n, c, pad, () -> 0), rstd = fx.zeros(DType.F32, n);
        Tensor out64 = fx.zeros(DType.F64, n, c), rstd64 = fx.zeros(DType.F64, n);
        RmsNorm.forward(out, rstd, x, w, 1e-6);
        Tensor x64 = fx.f64(x), w64 = fx.f64(w);
        RmsNorm.forward(out64, rstd64, x64, w64, 1e-6);
        assertClose(cs + " out", out, out64, 1e-5, 1e-5);
        assertClose(cs + " rstd", rstd, rstd64, 1e-6, 1e-5);

        Tensor dout = fx.padded(DType.F32, n, c, pad, () -> fx.random.nextGaussian());
        Tensor dx = fx.padded(DType.F32, n, c, pad, () -> 0.25), dw = fx.zeros(DType.F32, c).fill(1);
        Tensor dx64 = fx.zeros(DType.F64, n, c).fill(0.25), dw64 = fx.zeros(DType.F64, c).fill(1);
        RmsNorm.backward(dx, dw, dout, x, rstd, w);
        RmsNorm.backward(dx64, dw64, fx.f64(dout), x64, rstd64, w64);
        assertClose(cs + " dx", dx, dx64, 2e-5, 1e-4);
        assertClose(cs + " dweight", dw, dw64, 2e-5 * Math.sqrt(n), 1e-4);
        if (pad > 0) KernelFixture.assertPaddingUntouched(cs + " dx", dx, pad);
    }

    @Test
    void layerNormReferenceBackwardMatchesFiniteDifferencesInFloat64() {
        int n = 3, c = 5;
        Tensor x = fx.randn(DType.F64, 1, n, c), w = fx.randn(DType.F64, 1, c), b = fx.randn(DType.F64, 1, c);
        Tensor r = fx.randn(DType.F64, 1, n, c);
        Tensor out = fx.zeros(DType.F64, n, c), mean = fx.zeros(DType.F64, n), rstd = fx.zeros(DType.F64, n);
        LayerNorm.forward(out, mean, rstd, x, w, b, 1e-5);
        Tensor dx = fx.zeros(DType.F64, n, c), dw = fx.zeros(DType.F64, c), db = fx.zeros(DType.F64, c);
        LayerNorm.backward(dx, dw, db, r, x, mean, rstd, w);
        DoubleSupplier f = () -> {
            Tensor o = fx.zeros(DType.F64, n, c);
            LayerNorm.forward(o, fx.zeros(DType.F64, n), fx.zeros(DType.F64, n), x, w, b, 1e-5);
            return KernelFixture.dot(o, r);
        };
        checkGradient("layernorm dx", x, dx, f);
        checkGradient("layernorm dweight", w, dw, f);
        checkGradient("layernorm dbias", b, db, f);
    }

    @Test
    void rmsNormReferenceBackwardMatchesFiniteDifferencesInFloat64() {
        int n = 3, c = 5;
        Tensor x = fx.randn(DType.F64, 1, n, c), w = fx.randn(DType.F64, 1, c), r = fx.randn(DType.F64, 1, n, c);
        Tensor out = fx.zeros(DType.F64, n, c), rstd = fx.zeros(DType.F64, n);
        RmsNorm.forward(out, rstd, x, w, 1e-6);
        Tensor dx = fx.zeros(DType.F64, n, c), dw = fx.zeros(DType.F64, c);
        RmsNorm.backward(dx, dw, r, x, rstd, w);
        DoubleSupplier f = () -> {
            Tensor o = fx.zeros(DType.F64, n, c);
            RmsNorm.forward(o, fx.zeros(DType.F64, n), x, w, 1e-6);
            return KernelFixture.dot(o, r);
        };
        checkGradient("rmsnorm dx", x, dx, f);
        checkGradient("rmsnorm dweight", w, dw, f);
    }

    @Test
    void backwardIsBitIdenticalForOneAndTwoThreads() {
        int n = 200, c = 768;
        Tensor x = fx.randn(DType.F32, 1, n, c), w = fx.randn(DType.F32, 1, c), dout = fx.randn(DType.F32, 1, n, c);
        Tensor mean = fx.zeros(DType.F32, n), rstd = fx.zeros(DType.F32, n), out = fx.zeros(DType.F32, n, c);
        LayerNorm.forward(out, mean, rstd, x, w, fx.zeros(DType.F32, c), 1e-5);
        float[][] dws = new float[2][], dxs = new float[2][];
        for (int threads = 1; threads <= 2; threads++) {
            Tensor dx = fx.zeros(DType.F32, n, c), dw = fx.zeros(DType.F32, c), db = fx.zeros(DType.F32, c);
            try (ComputePool pool = new ComputePool("t" + threads, threads)) {
                ComputePool.runWith(pool, () -> LayerNorm.backward(dx, dw, db, dout, x, mean, rstd, w));
            }
            dws[threads - 1] = dw.toFloatArray();
            dxs[threads - 1] = dx.toFloatArray();
        }
        assertArrayEquals(dws[0], dws[1], "layernorm dweight with 1 vs 2 threads");
        assertArrayEquals(dxs[0], dxs[1], "layernorm dx with 1 vs 2 threads");
    }

    @Test
    void mismatchedShapesAreRejectedWithTheArgumentName() {
        Tensor x = fx.randn(DType.F32, 1, 2, 4);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> LayerNorm.forward(
                fx.zeros(DType.F32, 2, 4), fx.zeros(DType.F32, 2), fx.zeros(DType.F32, 2), x,
                fx.zeros(DType.F32, 5), fx.zeros(DType.F32, 4), 1e-5));
        assertTrue(e.getMessage().contains("weight"), e.getMessage());
    }

    /** Compares an analytic gradient with central differences of {@code f} over every element of {@code param}. */
    static void checkGradient(String what, Tensor param, Tensor grad, DoubleSupplier f) {
        double[] g = grad.toDoubleArray();
        double maxDiff = 0;
        for (int i = 0; i < g.length; i++) {
            double fd = KernelFixture.centralDifference(param, i, 1e-5, f);
            maxDiff = Math.max(maxDiff, Math.abs(fd - g[i]));
        }
        assertTrue(maxDiff < 1e-7, what + " vs central differences: max abs diff " + maxDiff + " > 1e-7");
    }
}
