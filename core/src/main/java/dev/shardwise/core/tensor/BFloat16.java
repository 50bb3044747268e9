package dev.shardwise.core.tensor;

/**
 * Scalar bfloat16 conversion: the top 16 bits of an IEEE float32 (8 exponent bits, 7 mantissa bits).
 * Rounds to nearest, ties to even; NaN stays NaN (quiet). Bulk conversion lives in the kernels package.
 */
public final class BFloat16 {
    private BFloat16() { }

    /** Widens bf16 bits to float32 exactly. */
    public static float toFloat(short bits) {
        return Float.intBitsToFloat((bits & 0xffff) << 16);
    }

    /** Rounds a float32 to the nearest bf16 (ties to even) and returns its bits. */
    public static short fromFloat(float value) {
        int bits = Float.floatToRawIntBits(value);
        if ((bits & 0x7fffffff) > 0x7f800000) {           // NaN: keep sign, force a quiet mantissa bit
            return (short) ((bits >>> 16) | 0x0040);
        }
        int roundingBias = 0x7fff + ((bits >>> 16) & 1);  // ties to even
        return (short) ((bits + roundingBias) >>> 16);
    }
}
