package dev.shardwise.core.kernels;

import dev.shardwise.core.exec.ComputePool;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.junit.jupiter.api.Test;

import static dev.shardwise.core.kernels.KernelFixture.assertClose;
import static org.junit.jupiter.api.Assertions.*;

class CrossEntropyTest {
    private final KernelFixture fx = new KernelFixture(42);

    @AfterEach
    void close() { fx.close(); }

    private Tensor targets(int n, int v, boolean withIgnored) {
        Tensor t = fx.zeros(DType.I32, n);
        for (int i = 0; i < n; i++) t.set(withIgnored && i % 3 == 1 ? CrossEntropy.IGNORE_INDEX : fx.random.nextInt(v), i);
        return t;
    }

    @ParameterizedTest(name = "N={0} V={1} pad={2}")
    @CsvSource({"1, 1000, 0", "3, 7, 0", "7, 33, 5", "33, 129, 3", "4, 50257, 47", "2, 16, 0", "5, 1000, 24"})
    void forwardBackwardMatchesFloat64Reference(int n, int v, int pad) {
        // logits ~ N(0, 3): a peaked softmax, as after some training
        Tensor logits = fx.padded(DType.F32, n, v, pad, () -> 3 * fx.random.nextGaussian());
        Tensor tg = targets(n, v, true);
        Tensor logits64 = fx.f64(logits);
        Tensor losses = fx.zeros(DType.F32, n), losses64 = fx.zeros(DType.F64, n);
        Tensor dlogits = fx.padded(DType.F32, n, v, pad, () -> 5.0);
        Tensor dlogits64 = fx.zeros(DType.F64, n, v);
        double scale = 1.0 / n;
        CrossEntropy.forwardBackward(losses, dlogits, logits, tg, scale);
        CrossEntropy.forwardBackward(losses64, dlogits64, logits64, tg, scale);
        String c = "N=" + n + " V=" + v + " pad=" + pad;
        // loss = logsumexp - x_t: f32 rounding of ~|x|·V terms summed in f32 blocks then f64
        assertClose("losses " + c, losses, losses64, 2e-5, 2e-6);
        // each gradient entry is one f32 exp times a scale: relative error ~1e-6
        assertClose("dlogits " + c, dlogits, dlogits64, 1e-8, 5e-6);
        if (pad > 0) KernelFixture.assertPaddingUntouched("dlogits " + c, dlogits, pad);

        Tensor evalLosses = fx.zeros(DType.F32, n);
        CrossEntropy.loss(evalLosses, logits, tg);
        assertArrayEquals(losses.toFloatArray(), evalLosses.toFloatArray(), "loss() must equal forwardBackward's losses, " + c);
    }

    @Test
    void logitsFarAboveTheFirstBlockAndMinusInfinityStayFinite() {
        // the F32 pass takes its reference maximum from the first 16 logits and moves it only when a block's
        // sum of exponentials grows too large: jumps of 30 and 200 (beyond float exp's range) must be handled,
        // and -inf (a masked logit) must give probability 0
        int n = 3, v = 5000;
        Tensor logits = fx.randn(DType.F32, 1, n, v);
        logits.set(30, 0, 3000);
        logits.set(200, 1, 4500);
        logits.set(Double.NEGATIVE_INFINITY, 2, 17);
        logits.set(Double.NEGATIVE_INFINITY, 2, 4999);
        Tensor tg = fx.zeros(DType.I32, n).copyFrom(new double[]{3000, 12, 17});
        Tensor logits64 = fx.f64(logits);
        Tensor losses = fx.zeros(DType.F32, n), losses64 = fx.zeros(DType.F64, n);
        Tensor d = fx.zeros(DType.F32, n, v), d64 = fx.zeros(DType.F64, n, v);
        CrossEntropy.forwardBackward(losses, d, logits, tg, 1.0);
        CrossEntropy.forwardBackward(losses64, d64, logits64, tg, 1.0);
        assertClose("losses with large jumps", fx.copy(losses, DType.F64).view(1, n).slice(1, 0, 2),
                losses64.view(1, n).slice(1, 0, 2), 1e-4, 1e-6);
        assertEquals(Double.POSITIVE_INFINITY, losses.getDouble(2), "target at -inf has infinite loss");
        assertClose("dlogits with large jumps", d, d64, 1e-7, 1e-5);
    }

    @Test
    void inPlaceGradientEqualsSeparateOutput() {
        int n = 6, v = 50257;
        Tensor logits = fx.randn(DType.F32, 2, n, v);
        Tensor tg = targets(n, v, false);
        Tensor separate = fx.zeros(DType.F32, n, v), l1 = fx.zeros(DType.F32, n), l2 = fx.zeros(DType.F32, n);
        CrossEntropy.forwardBackward(l1, separate, logits, tg, 0.25);
        CrossEntropy.forwardBackward(l2, logits, logits, tg, 0.25);
        assertArrayEquals(l1.toFloatArray(), l2.toFloatArray(), "losses in place vs separate");
        assertArrayEquals(separate.toFloatArray(), logits.toFloatArray(), "dlogits in place vs separate");
    }

    @Test
    void ignoredRowsHaveZeroLossAndZeroGradient() {
        for (DType dt : new DType[]{DType.F32, DType.F64}) {
            int n = 4, v = 37;
            Tensor logits = fx.randn(dt, 1, n, v);
            Tensor tg = fx.zeros(DType.I32, n).copyFrom(new double[]{3, -1, 0, -1});
            Tensor losses = fx.zeros(dt, n).fill(9), d = fx.zeros(dt, n, v).fill(9);
            CrossEntropy.forwardBackward(losses, d, logits, tg, 1.0);
            for (int r : new int[]{1, 3}) {
                assertEquals(0.0, losses.getDouble(r), dt + " loss of ignored row " + r);
                for (int i = 0; i < v; i++) assertEquals(0.0, d.getDouble(r, i), dt + " gradient of ignored row " + r);
            }
            assertTrue(losses.getDouble(0) > 0, dt + " counted row has a positive loss");
        }
    }

    @Test
    void targetOutsideVocabularyThrowsNamingRowAndValueAndWritesNothing() {
        int n = 3, v = 10;
        Tensor logits = fx.randn(DType.F32, 1, n, v);
        Tensor tg = fx.zeros(DType.I32, n).copyFrom(new double[]{2, 5, 10});
        Tensor losses = fx.zeros(DType.F32, n).fill(9);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> CrossEntropy.forwardBackward(losses, logits, logits, tg, 1.0));
        assertTrue(e.getMessage().contains("targets[2] = 10"), e.getMessage());
        assertEquals(9.0, losses.getDouble(0), "nothing may be written before the check");
        Tensor neg = fx.zeros(DType.I32, n).copyFrom(new double[]{2, -2, 1});
        e = assertThrows(IllegalArgumentException.class, () -> CrossEntropy.loss(losses, logits, neg));
        assertTrue(e.getMessage().contains("targets[1] = -2"), e.getMessage());
    }

    @Test
    void mixedDtypesAndWrongShapesAreRejected() {
        Tensor logits = fx.randn(DType.F32, 1, 2, 5);
        Tensor tg = targets(2, 5, false);
        assertThrows(IllegalArgumentException.class, () -> CrossEntropy.loss(fx.zeros(DType.F64, 2), logits, tg));
        assertThrows(IllegalArgumentException.class, () -> CrossEntropy.loss(fx.zeros(DType.F32, 3), logits, tg));
        assertThrows(IllegalArgumentException.class, () -> CrossEntropy.loss(fx.zeros(DType.F32, 2), logits, fx.zeros(DType.F32, 2)));
    }

    @Test
    void referenceGradientMatchesFiniteDifferencesInFloat64() {
        int n = 3, v = 7;
        double scale = 0.37;
        Tensor logits = fx.randn(DType.F64, 1.5, n, v);
        Tensor tg = fx.zeros(DType.I32, n).copyFrom(new double[]{4, -1, 0});
        Tensor losses = fx.zeros(DType.F64, n), d = fx.zeros(DType.F64, n, v);
        CrossEntropy.forwardBackward(losses, d, logits, tg, scale);
        Tensor l2 = fx.zeros(DType.F64, n);
        double maxDiff = 0;
        for (int i = 0; i < n * v; i++) {
            double fd = KernelFixture.centralDifference(logits, i, 1e-5, () -> {
                CrossEntropy.loss(l2, logits, tg);
                double s = 0;
                for (double x : l2.toDoubleArray()) s += x;
                return s * scale;
            });
            maxDiff = Math.max(maxDiff, Math.abs(fd - d.toDoubleArray()[i]));
        }
        assertTrue(maxDiff < 1e-8, "cross-entropy reference dlogits vs central differences: max abs diff " + maxDiff + " > 1e-8");
    }

    @Test
    void resultsAreBitIdenticalForOneAndTwoThreads() {
        int n = 64, v = 1000;
        Tensor logits = fx.randn(DType.F32, 2, n, v);
        Tensor tg = targets(n, v, true);
        float[][] out = new float[2][];
        float[][] loss = new float[2][];
        for (int threads = 1; threads <= 2; threads++) {
            Tensor d = fx.zeros(DType.F32, n, v), l = fx.zeros(DType.F32, n);
            try (ComputePool pool = new ComputePool("test-" + threads, threads)) {
                ComputePool.runWith(pool, () -> CrossEntropy.forwardBackward(l, d, logits, tg, 1.0 / n));
            }
            out[threads - 1] = d.toFloatArray();
            loss[threads - 1] = l.toFloatArray();
        }
        assertArrayEquals(out[0], out[1], "dlogits with 1 vs 2 threads");
        assertArrayEquals(loss[0], loss[1], "losses with 1 vs 2 threads");
    }
}
