package dev.shardwise.core.kernels;

import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;

/**
 * Root-mean-square layer normalization (Zhang and Sennrich 2019), as in LLaMA: no mean subtraction and no
 * bias, {@code out = x · rstd · weight} with {@code rstd = 1 / sqrt(mean(x²) + eps)}.
 *
 * <p>Shapes: {@code x, out [N, C]} (leading dimensions flattened into N; rows may be padded), {@code rstd [N]}
 * saved by forward for backward, {@code weight [C]}. F32 tensors take the Vector API path, F64 tensors a
 * float64 reference. Bit-identical for any thread count (the weight gradient is summed over fixed row
 * chunks, added in chunk order).
 */
public final class RmsNorm {
    private RmsNorm() { }

    /**
     * {@code out[n, :] = x[n, :] · rstd[n] · weight}, writing {@code rstd} for backward. {@code out} may be {@code x}.
     *
     * @throws IllegalArgumentException if shapes or dtypes disagree
     */
    public static void forward(Tensor out, Tensor rstd, Tensor x, Tensor weight, double eps) {
        String op = "RmsNorm.forward";
        DType dt = Kernels.floatType(op, new String[]{"out", "rstd", "x", "weight"}, out, rstd, x, weight);
        Kernels.sameShape(op, "out", out, "x", x);
        Rows xr = Rows.of(op, "x", x), or = Rows.of(op, "out", out);
        Rows r = Kernels.vector(op, "rstd", rstd, xr.rows(), "one per row of x");
        Rows w = Kernels.vector(op, "weight", weight, xr.cols(), "one per column of x");
        if (dt == DType.F32) RmsNormF32.forward(or, r, xr, w, (float) eps);
        else RmsNormReference.forward(or, r, xr, w, eps);
    }

    /**
     * Accumulates the gradients of {@link #forward}: with {@code norm = x · rstd} and {@code g = dout · weight},
     * {@code dx += rstd · (g - norm · mean(g · norm))} and {@code dweight += sum over rows of dout · norm}.
     *
     * @throws IllegalArgumentException if shapes or dtypes disagree
     */
    public static void backward(Tensor dx, Tensor dweight, Tensor dout, Tensor x, Tensor rstd, Tensor weight) {
        String op = "RmsNorm.backward";
        DType dt = Kernels.floatType(op, new String[]{"dx", "dweight", "dout", "x", "rstd", "weight"},
                dx, dweight, dout, x, rstd, weight);
        Kernels.sameShape(op, "dx", dx, "x", x);
        Kernels.sameShape(op, "dout", dout, "x", x);
        Rows xr = Rows.of(op, "x", x), dxr = Rows.of(op, "dx", dx), dor = Rows.of(op, "dout", dout);
        Rows r = Kernels.vector(op, "rstd", rstd, xr.rows(), "one per row of x");
        Rows w = Kernels.vector(op, "weight", weight, xr.cols(), "one per column of x");
        Rows dw = Kernels.vector(op, "dweight", dweight, xr.cols(), "one per column of x");
        if (dt == DType.F32) RmsNormF32.backward(dxr, dw, dor, xr, r, w);
        else RmsNormReference.backward(dxr, dw, dor, xr, r, w);
    }
}
