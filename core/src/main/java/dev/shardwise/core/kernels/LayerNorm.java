package dev.shardwise.core.kernels;

import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;

/**
 * Layer normalization (Ba, Kiros and Hinton 2016) over the last dimension, with a learned scale and shift:
 * {@code out = (x - mean) · rstd · weight + bias}, {@code rstd = 1 / sqrt(var + eps)} (biased variance), as in
 * GPT-2, whose eps is {@value #GPT2_EPS}.
 *
 * <p>Shapes: {@code x, out [N, C]} (leading dimensions flattened into N; rows may be padded), {@code mean,
 * rstd [N]} saved by forward for backward, {@code weight, bias [C]}. F32 tensors take the Vector API path,
 * F64 tensors a float64 reference. Forward is bit-identical for any thread count; backward too: the
 * weight and bias gradients are summed over fixed row chunks whose partials are added in chunk order.
 */
public final class LayerNorm {
    /** GPT-2's layer-norm epsilon. */
    public static final double GPT2_EPS = 1e-5;

    private LayerNorm() { }

    /**
     * {@code out[n, :] = (x[n, :] - mean[n]) · rstd[n] · weight + bias}, writing {@code mean} and {@code rstd}
     * for backward. {@code out} may be {@code x}.
     *
     * @throws IllegalArgumentException if shapes or dtypes disagree
     */
    public static void forward(Tensor out, Tensor mean, Tensor rstd, Tensor x, Tensor weight, Tensor bias, double eps) {
        String op = "LayerNorm.forward";
        DType dt = Kernels.floatType(op, new String[]{"out", "mean", "rstd", "x", "weight", "bias"}, out, mean, rstd, x, weight, bias);
        Kernels.sameShape(op, "out", out, "x", x);
        Rows xr = Rows.of(op, "x", x), or = Rows.of(op, "out", out);
        int n = xr.rows(), c = xr.cols();
        Rows m = Kernels.vector(op, "mean", mean, n, "one per row of x");
        Rows r = Kernels.vector(op, "rstd", rstd, n, "one per row of x");
        Rows w = Kernels.vector(op, "weight", weight, c, "one per column of x");
        Rows b = Kernels.vector(op, "bias", bias, c, "one per column of x");
        if (dt == DType.F32) LayerNormF32.forward(or, m, r, xr, w, b, (float) eps);
        else LayerNormReference.forward(or, m, r, xr, w, b, eps);
    }

    /**
     * Accumulates the gradients of {@link #forward}: with {@code norm = (x - mean) · rstd} and
     * {@code g = dout · weight}, {@code dx += rstd · (g - mean(g) - norm · mean(g · norm))},
     * {@code dweight += sum over rows of dout · norm}, {@code dbias += sum over rows of dout}.
     * Reads {@code mean} and {@code rstd} as forward saved them.
     *
     * @throws IllegalArgumentException if shapes or dtypes disagree
     */
    public static void backward(Tensor dx, Tensor dweight, Tensor dbias, Tensor dout, Tensor x, Tensor mean, Tensor rstd,
                                Tensor weight) {
        backward("LayerNorm.backward", dx, dx, dweight, dbias, dout, x, mean, rstd, weight);
    }

    /**
     * {@link #backward} onto a residual gradient: {@code dx = residual + rstd · (g - mean(g) - norm · mean(g · norm))}
     * (dx is written, not read), for a norm on a residual branch whose input gradient is the stream's gradient
     * plus the norm's: one pass instead of copying the stream's gradient into dx first. The same bits as
     * {@link #backward} into a copy of {@code residual}; dweight and dbias accumulate as there. {@code residual}
     * may be {@code dx}; it must not otherwise overlap it.
     *
     * @throws IllegalArgumentException if shapes or dtypes disagree
     */
    public static void backwardOnto(Tensor dx, Tensor residual, Tensor dweight, Tensor dbias, Tensor dout, Tensor x,
                                    Tensor mean, Tensor rstd, Tensor weight) {
        backward("LayerNorm.backwardOnto", dx, residual, dweight, dbias, dout, x, mean, rstd, weight);
    }

    private static void backward(String op, Tensor dx, Tensor residual, Tensor dweight, Tensor dbias, Tensor dout, Tensor x,
                                 Tensor mean, Tensor rstd, Tensor weight) {
        DType dt = Kernels.floatType(op, new String[]{"dx", "residual", "dweight", "dbias", "dout", "x", "mean", "rstd", "weight"},
                dx, residual, dweight, dbias, dout, x, mean, rstd, weight);
        Kernels.sameShape(op, "dx", dx, "x", x);
        Kernels.sameShape(op, "residual", residual, "x", x);
        Kernels.sameShape(op, "dout", dout, "x", x);
        Rows xr = Rows.of(op, "x", x), dxr = Rows.of(op, "dx", dx), dor = Rows.of(op, "dout", dout);
        Rows base = residual == dx ? dxr : Rows.of(op, "residual", residual);
        int n = xr.rows(), c = xr.cols();
        Rows m = Kernels.vector(op, "mean", mean, n, "one per row of x");
        Rows r = Kernels.vector(op, "rstd", rstd, n, "one per row of x");
        Rows w = Kernels.vector(op, "weight", weight, c, "one per column of x");
        Rows dw = Kernels.vector(op, "dweight", dweight, c, "one per column of x");
        Rows db = Kernels.vector(op, "dbias", dbias, c, "one per column of x");
        if (dt == DType.F32) LayerNormF32.backward(dxr, base, dw, db, dor, xr, m, r, w);
        else LayerNormReference.backward(dxr, base, dw, db, dor, xr, m, r, w);
    }
}
