package dev.shardwise.core.kernels;

import dev.shardwise.core.exec.ComputePool;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

import static dev.shardwise.core.kernels.KernelFixture.assertClose;
import static org.junit.jupiter.api.Assertions.*;

class SoftmaxTest {
    private final KernelFixture fx = new KernelFixture(7);

    @AfterEach
    void close() { fx.close(); }

    @ParameterizedTest(name = "N={0} C={1} pad={2}")
    @CsvSource({"1, 1, 0", "3, 7, 0", "7, 33, 3", "33, 129, 0", "2, 1000, 5", "5, 16, 16"})
    void forwardAndBackwardMatchFloat64Reference(int n, int c, int pad) {
        String cs = "softmax N=" + n + " C=" + c + " pad=" + pad;
        Tensor x = fx.padded(DType.F32, n, c, pad, () -> 4 * fx.random.nextGaussian());
        Tensor y = fx.padded(DType.F32, n, c, pad, () -> 0);
        Tensor y64 = fx.zeros(DType.F64, n, c);
        Softmax.forward(y, x);
        Softmax.forward(y64, fx.f64(x));
        // each output is one f32 exp and one division: relative error a few ulps
        assertClose(cs + " forward", y, y64, 1e-9, 2e-6);
        if (pad > 0) KernelFixture.assertPaddingUntouched(cs + " y", y, pad);

        Tensor dy = fx.padded(DType.F32, n, c, pad, () -> fx.random.nextGaussian());
        Tensor dx = fx.padded(DType.F32, n, c, pad, () -> 0.5);   // accumulates onto 0.5
        Tensor dx64 = fx.zeros(DType.F64, n, c).fill(0.5);
        Softmax.backward(dx, dy, y);
        Softmax.backward(dx64, fx.f64(dy), y64);
        // dot product over C in f32: error ~ C · eps · |dy|
        assertClose(cs + " backward", dx, dx64, 2e-6 * Math.sqrt(c), 1e-5);
    }

    @Test
    void inPlaceForwardEqualsSeparateOutput() {
        Tensor x = fx.randn(DType.F32, 3, 9, 1000);
        Tensor y = fx.zeros(DType.F32, 9, 1000);
        Softmax.forward(y, x);
        Softmax.forward(x, x);
        assertArrayEquals(y.toFloatArray(), x.toFloatArray(), "softmax in place vs separate");
    }

    @Test
    void referenceBackwardMatchesFiniteDifferencesInFloat64() {
        int n = 2, c = 5;
        Tensor x = fx.randn(DType.F64, 1, n, c), r = fx.randn(DType.F64, 1, n, c);
        Tensor y = fx.zeros(DType.F64, n, c), dx = fx.zeros(DType.F64, n, c);
        Softmax.forward(y, x);
        Softmax.backward(dx, r, y);
        Tensor tmp = fx.zeros(DType.F64, n, c);
        double[] g = dx.toDoubleArray();
        for (int i = 0; i < n * c; i++) {
            double fd = KernelFixture.centralDifference(x, i, 1e-5, () -> {
                Softmax.forward(tmp, x);
                return KernelFixture.dot(tmp, r);
            });
            assertEquals(fd, g[i], 1e-9, "softmax reference dx[" + i + "] vs central difference");
        }
    }

    @Test
    void forwardIsBitIdenticalForOneAndTwoThreads() {
        Tensor x = fx.randn(DType.F32, 3, 100, 1000);
        float[][] out = new float[2][];
        for (int threads = 1; threads <= 2; threads++) {
            Tensor y = fx.zeros(DType.F32, 100, 1000);
            try (ComputePool pool = new ComputePool("t" + threads, threads)) {
                ComputePool.runWith(pool, () -> Softmax.forward(y, x));
            }
            out[threads - 1] = y.toFloatArray();
        }
        assertArrayEquals(out[0], out[1], "softmax with 1 vs 2 threads");
    }
}
