package dev.shardwise.core.kernels;

import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

import static dev.shardwise.core.kernels.KernelFixture.assertClose;
import static org.junit.jupiter.api.Assertions.*;

class RotaryTest {
    private final KernelFixture fx = new KernelFixture(9);

    @AfterEach
    void close() { fx.close(); }

    @ParameterizedTest(name = "B={0} T={1} NH={2} HS={3} offset={4}")
    @CsvSource({"1, 1, 1, 2, 0", "2, 3, 3, 6, 5", "1, 7, 2, 64, 0", "2, 5, 3, 128, 100", "1, 33, 1, 34, 7"})
    void forwardAndBackwardMatchFloat64ReferenceOnAQkvView(int b, int t, int nh, int hs, int offset) {
        String cs = "rope B=" + b + " T=" + t + " NH=" + nh + " HS=" + hs + " offset=" + offset;
        // q as a view of a fused qkv [B, T, 3, NH, HS]
        Tensor qkv = fx.randn(DType.F32, 1, b, t, 3, nh, hs);
        Tensor q = qkv.select(2, 0);
        Tensor out = fx.zeros(DType.F32, b, t, nh, hs), out64 = fx.zeros(DType.F64, b, t, nh, hs);
        Rotary.forward(out, q, offset);
        Rotary.forward(out64, fx.f64(q), offset);
        // angles are computed in f64 once; one f32 rotation per pair
        assertClose(cs + " forward", out, out64, 1e-6, 1e-6);
        Tensor dout = fx.randn(DType.F32, 1, b, t, nh, hs);
        Tensor dqkv = fx.zeros(DType.F32, b, t, 3, nh, hs).fill(0.5);
        Tensor dq = dqkv.select(2, 0);
        Tensor dq64 = fx.zeros(DType.F64, b, t, nh, hs).fill(0.5);
        Rotary.backward(dq, dout, offset);
        Rotary.backward(dq64, fx.f64(dout), offset);
        assertClose(cs + " backward", dq, dq64, 1e-6, 1e-6);
        assertEquals(0.5, dqkv.getDouble(0, 0, 1, 0, 0), cs + ": k part of the fused gradient must be untouched");
    }

    @Test
    void rotatesHalvesByPositionTimesFrequency() {
        // HS = 4: pairs (0, 2) at frequency 1 and (1, 3) at 10000^(-1/2) = 0.01; position 3 with offset 2 -> 5
        Tensor x = fx.zeros(DType.F64, 1, 4, 1, 4);
        for (int i = 0; i < 4; i++) x.set(i + 1, 0, 3, 0, i);
        Tensor out = fx.zeros(DType.F64, 1, 4, 1, 4);
        Rotary.forward(out, x, 2);
        double a0 = 5, a1 = 5 * 0.01;
        assertEquals(1 * Math.cos(a0) - 3 * Math.sin(a0), out.getDouble(0, 3, 0, 0), 1e-12);
        assertEquals(2 * Math.cos(a1) - 4 * Math.sin(a1), out.getDouble(0, 3, 0, 1), 1e-12);
        assertEquals(3 * Math.cos(a0) + 1 * Math.sin(a0), out.getDouble(0, 3, 0, 2), 1e-12);
        assertEquals(4 * Math.cos(a1) + 2 * Math.sin(a1), out.getDouble(0, 3, 0, 3), 1e-12);
    }

    @Test
    void referenceBackwardMatchesFiniteDifferencesInFloat64() {
        Tensor x = fx.randn(DType.F64, 1, 1, 3, 2, 4), r = fx.randn(DType.F64, 1, 1, 3, 2, 4);
        Tensor dx = fx.zeros(DType.F64, 1, 3, 2, 4);
        Rotary.backward(dx, r, 1);
        NormTest.checkGradient("rope dx", x, dx, () -> {
            Tensor o = fx.zeros(DType.F64, 1, 3, 2, 4);
            Rotary.forward(o, x, 1);
            return KernelFixture.dot(o, r);
        });
    }

    @Test
    void inPlaceForwardEqualsSeparateOutput() {
        Tensor x = fx.randn(DType.F32, 1, 2, 3, 2, 64);
        Tensor out = fx.zeros(DType.F32, 2, 3, 2, 64);
        Rotary.forward(out, x, 4);
        Rotary.forward(x, x, 4);
        assertArrayEquals(out.toFloatArray(), x.toFloatArray(), "rope in place vs separate");
    }

    @Test
    void oddHeadSizeIsRejected() {
        Tensor x = fx.zeros(DType.F32, 1, 2, 1, 5);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> Rotary.forward(x, x, 0));
        assertTrue(e.getMessage().contains("even"), e.getMessage());
    }
}
