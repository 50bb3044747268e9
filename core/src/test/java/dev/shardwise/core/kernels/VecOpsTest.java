package dev.shardwise.core.kernels;

import jdk.incubator.vector.FloatVector;
import org.junit.jupiter.api.Test;

import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.*;

class VecOpsTest {

    /** The pairwise order written out in scalar code: lane i += lane i + half, halving until one lane is left. */
    private static float pairwise(float[] lanes) {
        float[] v = lanes.clone();
        for (int half = v.length / 2; half >= 1; half /= 2) {
            for (int i = 0; i < half; i++) v[i] += v[i + half];
        }
        return v[0];
    }

    @Test
    void sumLanesAddsInTheDocumentedPairwiseOrderEveryTime() {
        SplittableRandom random = new SplittableRandom(5);
        float[] lanes = new float[Kernels.L];
        for (int trial = 0; trial < 20_000; trial++) {   // enough calls for the JIT to compile sumLanes midway
            for (int i = 0; i < lanes.length; i++) lanes[i] = (float) (random.nextGaussian() * Math.pow(10, random.nextInt(-6, 7)));
            float expected = pairwise(lanes);
            float got = VecOps.sumLanes(FloatVector.fromArray(Kernels.F, lanes, 0));
            assertEquals(Float.floatToIntBits(expected), Float.floatToIntBits(got), "trial " + trial + ": " + got + " vs " + expected);
        }
    }

    @Test
    void expIsWithinItsDocumentedErrorAndFlushesOrClampsOutsideItsRange() {
        SplittableRandom random = new SplittableRandom(6);
        float[] x = new float[Kernels.L];
        double worst = 0;
        float worstX = 0;
        for (int trial = 0; trial < 20_000; trial++) {
            double range = trial % 2 == 0 ? 10 : 88;   // the documented bound grows with |x|: test small x apart
            for (int i = 0; i < x.length; i++) x[i] = (float) Math.max(-87.6, Math.min(88.3, random.nextDouble(-range, range)));
            FloatVector e = VecOps.exp(FloatVector.fromArray(Kernels.F, x, 0));
            for (int i = 0; i < x.length; i++) {
                double relativeToBound = Math.abs(e.lane(i) / Math.exp(x[i]) - 1) / (1.2e-7 + 1.4e-8 * Math.abs(x[i]));
                if (relativeToBound > worst) {
                    worst = relativeToBound;
                    worstX = x[i];
                }
            }
        }
        assertTrue(worst < 1, "exp(" + worstX + "): relative error " + worst + " x the bound 1.2e-7 + |x|·1.4e-8");

        float[] special = {Float.NEGATIVE_INFINITY, -1e30f, -200f, -88.5f, Float.POSITIVE_INFINITY, 1e30f, 100f, Float.NaN};
        float[] expected = {0f, 0f, 0f, 0f, (float) Math.exp(88.3f), (float) Math.exp(88.3f), (float) Math.exp(88.3f), Float.NaN};
        for (int i = 0; i < special.length; i++) {
            float got = VecOps.exp(FloatVector.broadcast(Kernels.F, special[i])).lane(0);
            assertEquals(expected[i], got, Float.isNaN(expected[i]) ? 0 : expected[i] * 2e-6, "exp(" + special[i] + ")");
        }
    }

    @Test
    void expGivesTheSameBitsInterpretedAndCompiled() {
        // the first calls run in the interpreter (lane by lane, Math.fma), later ones compiled (vector fma)
        SplittableRandom random = new SplittableRandom(7);
        float[] x = new float[Kernels.L];
        for (int i = 0; i < x.length; i++) x[i] = (float) random.nextDouble(-90, 90);
        float[] first = VecOps.exp(FloatVector.fromArray(Kernels.F, x, 0)).toArray();
        for (int trial = 0; trial < 20_000; trial++) {
            float[] again = VecOps.exp(FloatVector.fromArray(Kernels.F, x, 0)).toArray();
            for (int i = 0; i < x.length; i++) {
                assertEquals(Float.floatToIntBits(first[i]), Float.floatToIntBits(again[i]), "trial " + trial + ": exp(" + x[i] + ")");
            }
        }
    }
}
