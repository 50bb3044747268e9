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
}
