package dev.shardwise.core.kernels;

import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;
import jdk.incubator.vector.FloatVector;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

import static dev.shardwise.core.kernels.Kernels.F;
import static dev.shardwise.core.kernels.Kernels.L;
import static dev.shardwise.core.kernels.Kernels.LE;
import static dev.shardwise.core.kernels.VecOps.get;
import static dev.shardwise.core.kernels.VecOps.load;
import static dev.shardwise.core.kernels.VecOps.put;

/**
 * Rotary position embedding (RoPE, Su et al. 2021) of queries or keys, in the LLaMA / Hugging Face
 * "rotate_half" convention: the head vector is split into halves {@code x1 = x[:HS/2]}, {@code x2 = x[HS/2:]}
 * and dimension pair {@code (i, i + HS/2)} is rotated by the angle {@code pos · θ^(-2i/HS)}:
 * <pre>
 *   out[i]        = x[i]        · cos - x[i + HS/2] · sin
 *   out[i + HS/2] = x[i + HS/2] · cos + x[i]        · sin
 * </pre>
 * with {@code pos = positionOffset + t} (the offset places a chunk after the tokens already in a KV cache).
 * θ defaults to {@value #LLAMA_THETA}. (Interleaved pairs (2i, 2i+1), as in the paper and Meta's original
 * code, are the same rotation applied to a permuted head dimension; weights converted from HF use rotate_half.)
 *
 * <p>Shapes: {@code x, out [B, T, NH, HS]} with HS even and a unit-stride last dimension; other strides are
 * free, so q and k can be views into a fused qkv tensor. {@code out} may be {@code x}. F32 uses the Vector API
 * with angles computed in float64 once per call; F64 a float64 reference. Elementwise per pair, so
 * bit-identical for any thread count.
 */
public final class Rotary {
    /** The RoPE base used by LLaMA (and the RoPE paper). */
    public static final double LLAMA_THETA = 10000.0;

    private Rotary() { }

    /** {@code out = rope(x)} with θ = {@value #LLAMA_THETA}; see the class comment. */
    public static void forward(Tensor out, Tensor x, int positionOffset) {
        forward(out, x, positionOffset, LLAMA_THETA);
    }

    /**
     * {@code out = rope(x)} with base {@code theta}.
     *
     * @throws IllegalArgumentException if shapes or dtypes disagree, HS is odd, or positionOffset is negative
     */
    public static void forward(Tensor out, Tensor x, int positionOffset, double theta) {
        apply("Rotary.forward", out, x, positionOffset, theta, false, new String[]{"out", "x"});
    }

    /** Accumulates {@code dx += rope⁻¹(dout)} with θ = {@value #LLAMA_THETA}. */
    public static void backward(Tensor dx, Tensor dout, int positionOffset) {
        backward(dx, dout, positionOffset, LLAMA_THETA);
    }

    /**
     * Accumulates {@code dx += rope⁻¹(dout)}: the rotation is orthogonal, so its transpose is the rotation by
     * the opposite angle. {@code dx} must not alias {@code dout}.
     *
     * @throws IllegalArgumentException as {@link #forward(Tensor, Tensor, int, double)}
     */
    public static void backward(Tensor dx, Tensor dout, int positionOffset, double theta) {
        apply("Rotary.backward", dx, dout, positionOffset, theta, true, new String[]{"dx", "dout"});
    }

    private static void apply(String op, Tensor out, Tensor x, int offset, double theta, boolean backward, String[] names) {
        DType dt = Kernels.floatType(op, names, out, x);
        Kernels.sameShape(op, names[0], out, names[1], x);
        if (x.rank() != 4) {
            throw new IllegalArgumentException(op + ": " + names[1] + " is " + x.describe() + " but must be [B, T, NH, HS]");
        }
        int b = x.dim(0), t = x.dim(1), nh = x.dim(2), hs = x.dim(3);
        if (hs % 2 != 0) throw new IllegalArgumentException(op + ": head size HS = " + hs + " in " + x.describe() + " must be even");
        if (offset < 0) throw new IllegalArgumentException(op + ": positionOffset = " + offset + " must be >= 0");
        for (Tensor z : new Tensor[]{out, x}) {
            if (!z.hasUnitInnerStride()) {
                throw new IllegalArgumentException(op + ": " + z.describe() + " needs a unit-stride head dimension");
            }
        }
        int half = hs / 2;
        double[] cos = new double[t * half], sin = new double[t * half];
        for (int p = 0; p < t; p++) {
            for (int i = 0; i < half; i++) {
                double angle = (offset + p) * Math.pow(theta, -2.0 * i / hs);
                cos[p * half + i] = Math.cos(angle);
                sin[p * half + i] = backward ? -Math.sin(angle) : Math.sin(angle);
            }
        }
        int es = x.dtype().byteSize();
        MemorySegment os = out.segment(), xs = x.segment();
        if (dt == DType.F32) {
            float[] fc = new float[cos.length], fs = new float[sin.length];
            for (int i = 0; i < cos.length; i++) {
                fc[i] = (float) cos[i];
                fs[i] = (float) sin[i];
            }
            Kernels.forRows(b * t, (long) nh * hs, (from, to) -> {
                for (int bt = from; bt < to; bt++) {
                    int bi = bt / t, p = bt % t;
                    for (int h = 0; h < nh; h++) {
                        long xo = es * (x.offset() + bi * x.stride(0) + p * x.stride(1) + h * x.stride(2));
                        long oo = es * (out.offset() + bi * out.stride(0) + p * out.stride(1) + h * out.stride(2));
                        rotateF32(os, oo, xs, xo, fc, fs, p * half, half, backward);
                    }
                }
            });
        } else {
            ValueLayout.OfDouble D = ValueLayout.JAVA_DOUBLE_UNALIGNED;
            for (int bi = 0; bi < b; bi++) {
                for (int p = 0; p < t; p++) {
                    for (int h = 0; h < nh; h++) {
                        long xo = es * (x.offset() + bi * x.stride(0) + p * x.stride(1) + h * x.stride(2));
                        long oo = es * (out.offset() + bi * out.stride(0) + p * out.stride(1) + h * out.stride(2));
                        for (int i = 0; i < half; i++) {
                            double c = cos[p * half + i], s = sin[p * half + i];
                            double x1 = xs.get(D, xo + 8L * i), x2 = xs.get(D, xo + 8L * (i + half));
                            double y1 = x1 * c - x2 * s, y2 = x2 * c + x1 * s;
                            if (backward) {
                                y1 += os.get(D, oo + 8L * i);
                                y2 += os.get(D, oo + 8L * (i + half));
                            }
                            os.set(D, oo + 8L * i, y1);
                            os.set(D, oo + 8L * (i + half), y2);
                        }
                    }
                }
            }
        }
    }

    private static void rotateF32(MemorySegment os, long oo, MemorySegment xs, long xo, float[] cos, float[] sin, int at,
                                  int half, boolean accumulate) {
        long h2 = 4L * half;
        int i = 0;
        for (; i <= half - L; i += L) {
            FloatVector c = FloatVector.fromArray(F, cos, at + i), s = FloatVector.fromArray(F, sin, at + i);
            FloatVector x1 = load(xs, xo + 4L * i), x2 = load(xs, xo + h2 + 4L * i);
            FloatVector y1 = x1.mul(c).sub(x2.mul(s)), y2 = x2.mul(c).add(x1.mul(s));
            if (accumulate) {
                y1 = y1.add(load(os, oo + 4L * i));
                y2 = y2.add(load(os, oo + h2 + 4L * i));
            }
            y1.intoMemorySegment(os, oo + 4L * i, LE);
            y2.intoMemorySegment(os, oo + h2 + 4L * i, LE);
        }
        for (; i < half; i++) {
            float c = cos[at + i], s = sin[at + i];
            float x1 = get(xs, xo + 4L * i), x2 = get(xs, xo + h2 + 4L * i);
            float y1 = x1 * c - x2 * s, y2 = x2 * c + x1 * s;
            if (accumulate) {
                y1 += get(os, oo + 4L * i);
                y2 += get(os, oo + h2 + 4L * i);
            }
            put(os, oo + 4L * i, y1);
            put(os, oo + h2 + 4L * i, y2);
        }
    }
}
