package dev.shardwise.core.kernels;

import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

import static dev.shardwise.core.kernels.KernelFixture.assertClose;
import static org.junit.jupiter.api.Assertions.*;

/** GELU and SwiGLU against their float64 references, and the references against finite differences. */
class ActivationTest {
    private final KernelFixture fx = new KernelFixture(3);

    @AfterEach
    void close() { fx.close(); }

    @ParameterizedTest(name = "N={0} C={1} pad={2}")
    @CsvSource({"1, 1, 0", "3, 7, 0", "7, 33, 1", "33, 129, 0", "5, 3072, 0", "3, 1000, 24"})
    void geluMatchesFloat64Reference(int n, int c, int pad) {
        String cs = "gelu N=" + n + " C=" + c + " pad=" + pad;
        Tensor x = fx.padded(DType.F32, n, c, pad, () -> 3 * fx.random.nextGaussian());
        Tensor out = fx.padded(DType.F32, n, c, pad, () -> 0), out64 = fx.zeros(DType.F64, n, c);
        Gelu.forward(out, x);
        Gelu.forward(out64, fx.f64(x));
        // tanh (SVML) and a few f32 operations: a few ulps of |x|
        assertClose(cs + " forward", out, out64, 1e-6, 1e-5);
        if (pad > 0) KernelFixture.assertPaddingUntouched(cs + " out", out, pad);
        Tensor dout = fx.padded(DType.F32, n, c, pad, () -> fx.random.nextGaussian());
        Tensor dx = fx.padded(DType.F32, n, c, pad, () -> 1), dx64 = fx.zeros(DType.F64, n, c).fill(1);
        Gelu.backward(dx, dout, x);
        Gelu.backward(dx64, fx.f64(dout), fx.f64(x));
        assertClose(cs + " backward", dx, dx64, 2e-6, 1e-5);
        // backwardInto overwrites (NaN in dx must not leak) and gives the bits backward gives into zeros
        Tensor into = fx.padded(DType.F32, n, c, pad, () -> Double.NaN), zeros = fx.padded(DType.F32, n, c, pad, () -> 0);
        Gelu.backwardInto(into, dout, x);
        Gelu.backward(zeros, dout, x);
        assertArrayEquals(fx.copy(zeros, DType.F32).toFloatArray(), fx.copy(into, DType.F32).toFloatArray(), cs + " backwardInto");
        if (pad > 0) KernelFixture.assertPaddingUntouched(cs + " backwardInto dx", into, pad);
        Tensor into64 = fx.zeros(DType.F64, n, c).fill(Double.NaN), zeros64 = fx.zeros(DType.F64, n, c);
        Gelu.backwardInto(into64, fx.f64(dout), fx.f64(x));
        Gelu.backward(zeros64, fx.f64(dout), fx.f64(x));
        assertClose(cs + " backwardInto f64", into64, zeros64, 0, 0);
    }

    @ParameterizedTest(name = "N={0} H={1}")
    @CsvSource({"1, 1", "3, 7", "7, 33", "33, 129", "4, 1000"})
    void swiGluMatchesFloat64ReferenceOnHalvesOfAFusedProjection(int n, int h) {
        String cs = "swiglu N=" + n + " H=" + h;
        // gate and up as the two halves of one [N, 2H] tensor: row stride 2H
        Tensor fused = fx.randn(DType.F32, 2.5, n, 2 * h);
        Tensor gate = fused.slice(1, 0, h), up = fused.slice(1, h, h);
        Tensor out = fx.zeros(DType.F32, n, h), out64 = fx.zeros(DType.F64, n, h);
        Tensor gate64 = fx.f64(gate), up64 = fx.f64(up);
        SwiGlu.forward(out, gate, up);
        SwiGlu.forward(out64, gate64, up64);
        assertClose(cs + " forward", out, out64, 1e-6, 1e-5);
        Tensor dout = fx.randn(DType.F32, 1, n, h);
        Tensor dfused = fx.zeros(DType.F32, n, 2 * h).fill(0.5);
        Tensor dgate = dfused.slice(1, 0, h), dup = dfused.slice(1, h, h);
        Tensor dgate64 = fx.zeros(DType.F64, n, h).fill(0.5), dup64 = fx.zeros(DType.F64, n, h).fill(0.5);
        SwiGlu.backward(dgate, dup, dout, gate, up);
        SwiGlu.backward(dgate64, dup64, fx.f64(dout), gate64, up64);
        assertClose(cs + " dgate", dgate, dgate64, 2e-6, 1e-5);
        assertClose(cs + " dup", dup, dup64, 2e-6, 1e-5);
        // backwardInto overwrites (NaN must not leak), with dgate over dout itself: the bits backward gives into zeros
        Tensor zerosGate = fx.zeros(DType.F32, n, h), zerosUp = fx.zeros(DType.F32, n, h);
        SwiGlu.backward(zerosGate, zerosUp, dout, gate, up);
        Tensor inPlace = fx.copy(dout, DType.F32), intoUp = fx.zeros(DType.F32, n, h).fill(Double.NaN);
        SwiGlu.backwardInto(inPlace, intoUp, inPlace, gate, up);
        assertArrayEquals(zerosGate.toFloatArray(), inPlace.toFloatArray(), cs + " backwardInto dgate over dout");
        assertArrayEquals(zerosUp.toFloatArray(), intoUp.toFloatArray(), cs + " backwardInto dup");
        Tensor inPlace64 = fx.f64(dout), intoUp64 = fx.zeros(DType.F64, n, h).fill(Double.NaN);
        Tensor zerosGate64 = fx.zeros(DType.F64, n, h), zerosUp64 = fx.zeros(DType.F64, n, h);
        SwiGlu.backward(zerosGate64, zerosUp64, fx.f64(dout), gate64, up64);
        SwiGlu.backwardInto(inPlace64, intoUp64, inPlace64, gate64, up64);
        assertClose(cs + " backwardInto f64 dgate", inPlace64, zerosGate64, 0, 0);
        assertClose(cs + " backwardInto f64 dup", intoUp64, zerosUp64, 0, 0);
    }

    @Test
    void geluReferenceBackwardMatchesFiniteDifferencesInFloat64() {
        Tensor x = fx.randn(DType.F64, 2, 3, 5), r = fx.randn(DType.F64, 1, 3, 5), dx = fx.zeros(DType.F64, 3, 5);
        Gelu.backward(dx, r, x);
        NormTest.checkGradient("gelu dx", x, dx, () -> {
            Tensor o = fx.zeros(DType.F64, 3, 5);
            Gelu.forward(o, x);
            return KernelFixture.dot(o, r);
        });
    }

    @Test
    void swiGluReferenceBackwardMatchesFiniteDifferencesInFloat64() {
        Tensor g = fx.randn(DType.F64, 2, 3, 4), u = fx.randn(DType.F64, 2, 3, 4), r = fx.randn(DType.F64, 1, 3, 4);
        Tensor dg = fx.zeros(DType.F64, 3, 4), du = fx.zeros(DType.F64, 3, 4);
        SwiGlu.backward(dg, du, r, g, u);
        java.util.function.DoubleSupplier f = () -> {
            Tensor o = fx.zeros(DType.F64, 3, 4);
            SwiGlu.forward(o, g, u);
            return KernelFixture.dot(o, r);
        };
        NormTest.checkGradient("swiglu dgate", g, dg, f);
        NormTest.checkGradient("swiglu dup", u, du, f);
    }

    @Test
    void geluOfZeroIsZeroAndOfLargeXIsX() {
        Tensor x = fx.zeros(DType.F32, 3).copyFrom(new double[]{0, 20, -20});
        Tensor out = fx.zeros(DType.F32, 3);
        Gelu.forward(out, x);
        assertArrayEquals(new float[]{0, 20, -0f}, out.toFloatArray(), 1e-6f, "gelu(0), gelu(20), gelu(-20)");
    }
}
