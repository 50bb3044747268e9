package dev.shardwise.core.kernels;

import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;

/**
 * Row-wise softmax, {@code y[n, :] = exp(x[n, :] - max) / sum(exp(x[n, :] - max))}, and its backward
 * {@code dx += y ∘ (dy - rowsum(dy ∘ y))}.
 *
 * <p>Shapes: {@code x [N, C]} with any leading dimensions flattened into N and rows possibly padded (row
 * stride larger than C); every [N, C] argument may have its own row stride. F32 tensors take the Vector API
 * path, F64 tensors a float64 reference. Results are bit-identical for any thread count (one thread reduces
 * each row, in a fixed order). {@code out} may be {@code x} (in place).
 */
public final class Softmax {
    private Softmax() { }

    /**
     * {@code out [N, C] = softmax(x [N, C])} over the last dimension.
     *
     * @throws IllegalArgumentException if shapes or dtypes disagree or a tensor is not row-major with unit inner stride
     */
    public static void forward(Tensor out, Tensor x) {
        String op = "Softmax.forward";
        DType dt = Kernels.floatType(op, new String[]{"out", "x"}, out, x);
        Kernels.sameShape(op, "out", out, "x", x);
        Rows o = Rows.of(op, "out", out), r = Rows.of(op, "x", x);
        if (dt == DType.F32) SoftmaxF32.forward(o, r);
        else SoftmaxReference.forward(o, r);
    }

    /**
     * {@code dx [N, C] += y ∘ (dy - rowsum(dy ∘ y))}, where {@code y} is the forward output. Accumulates.
     *
     * @throws IllegalArgumentException if shapes or dtypes disagree
     */
    public static void backward(Tensor dx, Tensor dy, Tensor y) {
        String op = "Softmax.backward";
        DType dt = Kernels.floatType(op, new String[]{"dx", "dy", "y"}, dx, dy, y);
        Kernels.sameShape(op, "dx", dx, "y", y);
        Kernels.sameShape(op, "dy", dy, "y", y);
        Rows a = Rows.of(op, "dx", dx), b = Rows.of(op, "dy", dy), c = Rows.of(op, "y", y);
        if (dt == DType.F32) SoftmaxF32.backward(a, b, c);
        else SoftmaxReference.backward(a, b, c);
    }
}
