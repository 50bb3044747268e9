package dev.shardwise.core.kernels;

import dev.shardwise.core.exec.ComputePool;
import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;
import org.junit.jupiter.api.Test;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.*;

class AttentionTest {
    private final MemoryPool pool = MemoryPool.unlimited("rank 0");

    /*
     * Tolerances for f32 vs the f64 reference. Inputs are uniform in [-1, 1), scale = 1/sqrt(HS), so scores are
     * O(1) and each output is a convex combination of v rows; fp32 rounding (2^-24 ≈ 6e-8 per operation) over dot
     * products of HS <= 64 terms and sums over T <= 200 keys, with exp's own ~1 ulp error, stays below ~1e-5
     * relative. Gradients sum T terms of products of such values (dk and dv over T queries and the heads of a group),
     * so they get a looser bound, relative to the largest reference magnitude.
     */
    private static final double OUT_TOL = 2e-5;
    private static final double GRAD_TOL = 1e-4;

    /** One problem: q, k, v as strided views into one fused qkv tensor [B, T, NH + 2·NKV, HS] of each dtype. */
    private final class Problem implements AutoCloseable {
        final int b, t, nh, nkv, hs;
        final float scale;
        final Tensor qkv32, qkv64, out32, out64, lse32, lse64, dout32, dout64;
        final Tensor dq32, dk32, dv32, dq64, dk64, dv64;
        final List<Tensor> owned = new ArrayList<>();

        Problem(int b, int t, int nh, int nkv, int hs, long seed) {
            this.b = b; this.t = t; this.nh = nh; this.nkv = nkv; this.hs = hs;
            this.scale = (float) (1 / Math.sqrt(hs));
            SplittableRandom rnd = new SplittableRandom(seed);
            qkv32 = random(rnd, b, t, nh + 2 * nkv, hs);
            qkv64 = copy64(qkv32);
            dout32 = random(rnd, b, t, nh, hs);
            dout64 = copy64(dout32);
            out32 = alloc(DType.F32, b, t, nh, hs);
            out64 = alloc(DType.F64, b, t, nh, hs);
            lse32 = alloc(DType.F32, b, nh, t);
            lse64 = alloc(DType.F64, b, nh, t);
            // Gradients start non-zero (the same values in both dtypes): backward must add to them.
            dq32 = random(rnd, b, t, nh, hs);
            dk32 = random(rnd, b, t, nkv, hs);
            dv32 = random(rnd, b, t, nkv, hs);
            dq64 = copy64(dq32);
            dk64 = copy64(dk32);
            dv64 = copy64(dv32);
        }

        Tensor q(Tensor qkv) { return qkv.slice(2, 0, nh); }
        Tensor k(Tensor qkv) { return qkv.slice(2, nh, nkv); }
        Tensor v(Tensor qkv) { return qkv.slice(2, nh + nkv, nkv); }

        void forward32() { Attention.forward(out32, lse32, q(qkv32), k(qkv32), v(qkv32), scale); }
        void forward64() { Attention.forward(out64, lse64, q(qkv64), k(qkv64), v(qkv64), scale); }
        void backward32() {
            Attention.backward(dq32, dk32, dv32, dout32, out32, lse32, q(qkv32), k(qkv32), v(qkv32), scale);
        }
        void backward64() {
            Attention.backward(dq64, dk64, dv64, dout64, out64, lse64, q(qkv64), k(qkv64), v(qkv64), scale);
        }

        Tensor random(SplittableRandom rnd, int... shape) {
            Tensor x = alloc(DType.F32, shape);
            double[] values = new double[Math.toIntExact(x.numel())];
            for (int i = 0; i < values.length; i++) values[i] = rnd.nextDouble(-1, 1);
            return x.copyFrom(values);
        }

        Tensor copy64(Tensor x) {
            return alloc(DType.F64, x.shape()).copyFrom(x.toDoubleArray());
        }

        Tensor alloc(DType dtype, int... shape) {
            Tensor x = Tensor.allocate(pool, MemoryCategory.ACTIVATIONS, dtype, shape);
            owned.add(x);
            return x;
        }

        String label() {
            return String.format(Locale.ROOT, "B=%d T=%d NH=%d NKV=%d HS=%d", b, t, nh, nkv, hs);
        }

        @Override
        public void close() {
            owned.forEach(Tensor::close);
        }
    }

    private static void assertClose(String what, Tensor expected, Tensor actual, double tol) {
        double[] e = expected.toDoubleArray(), a = actual.toDoubleArray();
        double maxRef = 0, maxDiff = 0;
        for (int i = 0; i < e.length; i++) {
            maxRef = Math.max(maxRef, Math.abs(e[i]));
            double diff = Math.abs(e[i] - a[i]);
            if (!(diff <= maxDiff)) maxDiff = diff;   // NaN propagates
        }
        double bound = tol * Math.max(1, maxRef);
        assertTrue(maxDiff <= bound, String.format(Locale.ROOT,
                "%s: max abs diff %.3g vs tolerance %.3g (max |ref| %.3g)", what, maxDiff, bound, maxRef));
    }

    @Test
    void f32MatchesFloat64ReferenceOnOddShapesWithFusedQkvViews() {
        int[][] heads = {{1, 1}, {3, 3}, {4, 2}, {4, 1}};
        int cases = 0;
        long seed = 1;
        for (int b : new int[]{1, 2}) {
            for (int t : new int[]{1, 3, 7, 33, 129, 200}) {
                for (int[] nhkv : heads) {
                    for (int hs : new int[]{1, 7, 16, 64}) {
                        // Keep the suite fast: the largest shapes only with B = 1 for the big head counts.
                        if (b == 2 && t == 200 && nhkv[0] == 4 && hs == 64) continue;
                        try (Problem p = new Problem(b, t, nhkv[0], nhkv[1], hs, seed++)) {
                            assertF32MatchesFloat64(p);
                            cases++;
                        }
                    }
                }
            }
        }
        assertTrue(cases > 150, "only " + cases + " cases ran");
    }

    /**
     * Long sequences: forward splits a head's query blocks over several tasks (chunks of up to 8 blocks) and
     * backward takes the key blocks in several chunks of 4, so dq sums over chunks; NKV = 1 < NH = 2 makes dk and dv
     * sum over the heads of a group within each chunk.
     */
    @Test
    void f32MatchesFloat64ReferenceAcrossQueryAndKeyChunks() {
        for (int t : new int[]{1025, 1100}) {
            try (Problem p = new Problem(1, t, 2, 1, 64, 40 + t)) {
                assertF32MatchesFloat64(p);
            }
        }
    }

    /** Runs forward and backward in f32 and in the float64 reference and compares out, lse, dq, dk and dv. */
    private static void assertF32MatchesFloat64(Problem p) {
        p.forward32();
        p.forward64();
        assertClose("forward out " + p.label(), p.out64, p.out32, OUT_TOL);
        assertClose("forward lse " + p.label(), p.lse64, p.lse32, OUT_TOL);
        p.backward32();
        p.backward64();
        assertClose("backward dq " + p.label(), p.dq64, p.dq32, GRAD_TOL);
        assertClose("backward dk " + p.label(), p.dk64, p.dk32, GRAD_TOL);
        assertClose("backward dv " + p.label(), p.dv64, p.dv32, GRAD_TOL);
    }

    @Test
    void backwardAccumulatesIntoExistingGradients() {
        for (boolean f64 : new boolean[]{false, true}) {
            try (Problem p = new Problem(2, 70, 4, 2, 16, 7)) {
                Tensor dq = f64 ? p.dq64 : p.dq32, dk = f64 ? p.dk64 : p.dk32, dv = f64 ? p.dv64 : p.dv32;
                double[][] before = {dq.toDoubleArray(), dk.toDoubleArray(), dv.toDoubleArray()};
                if (f64) { p.forward64(); p.backward64(); } else { p.forward32(); p.backward32(); }
                double[][] once = {dq.toDoubleArray(), dk.toDoubleArray(), dv.toDoubleArray()};
                if (f64) p.backward64(); else p.backward32();
                double[][] twice = {dq.toDoubleArray(), dk.toDoubleArray(), dv.toDoubleArray()};
                String[] names = {"dq", "dk", "dv"};
                for (int g = 0; g < 3; g++) {
                    double maxDiff = 0, maxInc = 0;
                    for (int i = 0; i < before[g].length; i++) {
                        double inc1 = once[g][i] - before[g][i], inc2 = twice[g][i] - once[g][i];
                        maxInc = Math.max(maxInc, Math.abs(inc1));
                        maxDiff = Math.max(maxDiff, Math.abs(inc1 - inc2));
                    }
                    String what = (f64 ? "f64 " : "f32 ") + names[g] + " " + p.label();
                    assertTrue(maxInc > 1e-3, what + ": backward added nothing (max increment " + maxInc + ")");
                    assertTrue(maxDiff <= 1e-5, what + ": the second backward added a different amount: max abs diff "
                            + maxDiff + " vs tolerance 1e-5");
                }
            }
        }
    }

    @Test
    void f32IsBitIdenticalAcrossRunsAndThreadCounts() {
        try (Problem p = new Problem(2, 150, 4, 2, 64, 11);
             ComputePool one = new ComputePool("test-1", 1);
             ComputePool three = new ComputePool("test-3", 3)) {
            double[][] first = null;
            for (ComputePool cp : new ComputePool[]{ComputePool.current(), ComputePool.current(), one, three}) {
                p.dq32.fill(0); p.dk32.fill(0); p.dv32.fill(0);
                ComputePool.runWith(cp, () -> { p.forward32(); p.backward32(); });
                double[][] got = {p.out32.toDoubleArray(), p.lse32.toDoubleArray(),
                        p.dq32.toDoubleArray(), p.dk32.toDoubleArray(), p.dv32.toDoubleArray()};
                if (first == null) {
                    first = got;
                } else {
                    String[] names = {"out", "lse", "dq", "dk", "dv"};
                    for (int i = 0; i < got.length; i++) {
                        assertArrayEquals(first[i], got[i], 0.0, names[i] + " differs on " + cp + " for " + p.label());
                    }
                }
            }
        }
    }

    @Test
    void futureKeysAndValuesDoNotChangeEarlierOutputs() {
        for (int t = 0; t < 2; t++) {
            DType dtype = t == 0 ? DType.F32 : DType.F64;
            try (Problem p = new Problem(1, 100, 3, 3, 16, 5)) {
                Tensor qkv = dtype == DType.F32 ? p.qkv32 : p.qkv64, out = dtype == DType.F32 ? p.out32 : p.out64;
                Runnable fwd = dtype == DType.F32 ? p::forward32 : p::forward64;
                fwd.run();
                double[] before = out.toDoubleArray();
                int changed = 70;                            // perturb k and v at position 70, every kv head
                for (int h = 0; h < p.nkv; h++) {
                    for (int d = 0; d < p.hs; d++) {
                        qkv.set(5.0, 0, changed, p.nh + h, d);
                        qkv.set(-3.0, 0, changed, p.nh + p.nkv + h, d);
                    }
                }
                fwd.run();
                double[] after = out.toDoubleArray();
                int rowLen = p.nh * p.hs;
                assertArrayEquals(Arrays.copyOf(before, changed * rowLen), Arrays.copyOf(after, changed * rowLen), 0.0,
                        dtype.label() + ": outputs before position " + changed + " changed");
                assertFalse(Arrays.equals(before, after), dtype.label() + ": the perturbation changed nothing at all");
            }
        }
    }

    @Test
    void float64ReferenceBackwardMatchesCentralFiniteDifferences() {
        // loss = sum(out ∘ R) with R = dout; its gradient is exactly what backward accumulates.
        try (Problem p = new Problem(2, 5, 4, 2, 3, 3)) {
            p.dq64.fill(0); p.dk64.fill(0); p.dv64.fill(0);
            p.forward64();
            p.backward64();
            double eps = 1e-6;
            double[] r = p.dout64.toDoubleArray();
            String[] names = {"dq", "dk", "dv"};
            Tensor[] grads = {p.dq64, p.dk64, p.dv64};
            int[] headStart = {0, p.nh, p.nh + p.nkv}, headCount = {p.nh, p.nkv, p.nkv};
            int checked = 0;
            for (int g = 0; g < 3; g++) {
                double maxDiff = 0;
                for (int b = 0; b < p.b; b++) for (int t = 0; t < p.t; t++)
                    for (int h = 0; h < headCount[g]; h++) for (int d = 0; d < p.hs; d++) {
                        double x = p.qkv64.getDouble(b, t, headStart[g] + h, d);
                        p.qkv64.set(x + eps, b, t, headStart[g] + h, d);
                        double up = loss(p, r);
                        p.qkv64.set(x - eps, b, t, headStart[g] + h, d);
                        double down = loss(p, r);
                        p.qkv64.set(x, b, t, headStart[g] + h, d);
                        double numeric = (up - down) / (2 * eps);
                        maxDiff = Math.max(maxDiff, Math.abs(numeric - grads[g].getDouble(b, t, h, d)));
                        checked++;
                    }
                assertTrue(maxDiff <= 1e-7, "f64 reference " + names[g] + " " + p.label()
                        + ": max abs diff vs central differences " + maxDiff + " vs tolerance 1e-7");
            }
            assertEquals(p.b * p.t * (p.nh + 2 * p.nkv) * p.hs, checked);
        }
    }

    private static double loss(Problem p, double[] r) {
        p.forward64();
        double[] out = p.out64.toDoubleArray();
        double sum = 0;
        for (int i = 0; i < out.length; i++) sum += out[i] * r[i];
        return sum;
    }

    @Test
    void mismatchedShapesAndDtypesAreRejectedWithTheArgumentName() {
        try (Problem p = new Problem(1, 4, 4, 2, 8, 1)) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> Attention.forward(p.out32, p.lse64, p.q(p.qkv32), p.k(p.qkv32), p.v(p.qkv32), p.scale));
            assertTrue(e.getMessage().contains("lse"), e.getMessage());
            Tensor badKv = p.qkv32.slice(2, 0, 3);
            e = assertThrows(IllegalArgumentException.class,
                    () -> Attention.forward(p.out32, p.lse32, p.q(p.qkv32), badKv, badKv, p.scale));
            assertTrue(e.getMessage().contains("NKV=3"), e.getMessage());
            Tensor strided = p.qkv32.transpose(2, 3).slice(2, 0, 4);   // [1, 4, 4, 8] with last stride 8
            e = assertThrows(IllegalArgumentException.class,
                    () -> Attention.forward(p.out32, p.lse32, strided, p.k(p.qkv32), p.v(p.qkv32), p.scale));
            assertTrue(e.getMessage().contains("stride"), e.getMessage());
        }
    }

    @Test
    void vectorExpIsWithinThreeTenthsPpmAndZeroBelowItsRange() {
        int lanes = AttentionF32.SPECIES.length();
        float[] x = new float[lanes], y = new float[lanes];
        double maxRel = 0;
        float worst = 0;
        for (float start = AttentionF32.EXP_MIN; start <= AttentionF32.EXP_MAX; start += 0.00113f * lanes) {
            for (int i = 0; i < lanes; i++) x[i] = start + 0.00113f * i;
            AttentionF32.exp(jdk.incubator.vector.FloatVector.fromArray(AttentionF32.SPECIES, x, 0)).intoArray(y, 0);
            for (int i = 0; i < lanes; i++) {
                if (x[i] > AttentionF32.EXP_MAX) continue;
                double rel = Math.abs(y[i] / Math.exp(x[i]) - 1);
                if (rel > maxRel) { maxRel = rel; worst = x[i]; }
            }
        }
        assertTrue(maxRel <= 3e-7, "exp: max relative error " + maxRel + " at x = " + worst + " vs tolerance 3e-7");
        float[] special = new float[lanes];
        Arrays.fill(special, 0f);
        special[0] = Float.NEGATIVE_INFINITY;
        special[1 % lanes] = -100f;
        AttentionF32.exp(jdk.incubator.vector.FloatVector.fromArray(AttentionF32.SPECIES, special, 0)).intoArray(y, 0);
        assertEquals(0f, y[0], "exp(-inf)");
        if (lanes > 2) {
            assertEquals(0f, y[1], "exp(-100) is flushed to 0");
            assertEquals(1f, y[2], "exp(0)");
        }
    }
}
