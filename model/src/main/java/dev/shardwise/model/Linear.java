package dev.shardwise.model;

import dev.shardwise.core.kernels.Bias;
import dev.shardwise.core.memory.StepArena;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;

/**
 * Fully connected layer, y = x·Wᵀ + b (PyTorch's nn.Linear layout: W is [out, in]).
 * Forward is one NT GEMM; backward is an NN GEMM for dx and a TN GEMM for dW, the latter queued for the
 * weight-gradient half when backward is split ({@link WeightGradients}). The products run in the set's
 * {@link ParameterSet#precision() precision} (fp32, or bf16 operands with fp32 accumulation). A helper inside layers, not a
 * {@link Layer}: its backward writes dx as a layer's does, and {@link #backwardAdd} adds onto it instead.
 */
final class Linear {
    private final Parameter weight;   // [OUT, IN]
    private final Parameter bias;     // [OUT], or null
    private final ParameterSet params; // whose precision runs the products

    /** Declares {@code name.weight} [out, in] ~ N(0, std²) and, if {@code bias}, {@code name.bias} [out] = 0. */
    static void declare(ParameterSet.Builder builder, String name, int in, int out, boolean bias, double std) {
        builder.declare(name + ".weight", new ParameterSet.Init.Normal(std), true, out, in);
        if (bias) builder.declare(name + ".bias", new ParameterSet.Init.Constant(0), false, out);
    }

    Linear(ParameterSet params, String name, boolean bias) {
        this.weight = params.get(name + ".weight");
        this.bias = bias ? params.get(name + ".bias") : null;
        this.params = params;
    }

    int inFeatures() { return weight.value().dim(1); }
    int outFeatures() { return weight.value().dim(0); }

    /**
     * x [N, IN] -> y [N, OUT], allocated in {@code arena}. Under bf16 {@link MatmulPrecision} x may be bf16 (a
     * {@linkplain MatmulPrecision#keep kept} input); y is f32 either way.
     */
    Tensor forward(StepArena arena, Tensor x) {
        return forwardInto(arena.allocateForOverwrite(outputType(x), x.dim(0), outFeatures()), x);
    }

    /** As {@link #forward}, writing y [N, OUT] (not read) into {@code y}; returns it. */
    Tensor forwardInto(Tensor y, Tensor x) {
        MatmulPrecision precision = params.precision();
        if (bias != null) {
            // y = b, then y += x·Wᵀ: the GEMM adds onto the bias rows (no separate zeroing and bias passes over y)
            Bias.broadcast(y, bias.value());
            precision.matmul(y, x, precision.operand(weight), false, true, 1f, 1f);
        } else {
            precision.matmul(y, x, precision.operand(weight), false, true, 1f, 0f);
        }
        return y;
    }

    /** The dtype of outputs and input gradients: x's, or f32 when x is a bf16 kept input. */
    static DType outputType(Tensor x) {
        return x.dtype() == DType.BF16 ? DType.F32 : x.dtype();
    }

    /**
     * Writes dx = dy·W (GEMM with beta 0; dx is not read) when {@code dx} is not null, and accumulates
     * dW += dyᵀ·x and db += Σ_rows dy. Shapes: dx [N, IN] or null, dy [N, OUT], x [N, IN] (forward's input).
     */
    void backward(Tensor dx, Tensor dy, Tensor x) {
        backward(dx, dy, x, null);
    }

    /**
     * As {@link #backward(Tensor, Tensor, Tensor)}, with dW and db queued on {@code weights} (null: accumulated
     * now); dy and x must then stay unchanged until the queue runs.
     */
    void backward(Tensor dx, Tensor dy, Tensor x, WeightGradients weights) {
        WeightGradients.defer(weights, () -> parameterGradients(dy, x));
        if (dx != null) params.precision().matmul(dx, dy, params.precision().operand(weight), false, false, 1f, 0f);
    }

    /**
     * As {@link #backward(Tensor, Tensor, Tensor)}, but adds onto dx: dx += dy·W (GEMM with beta 1), for a layer
     * whose input feeds several linears (SwiGLU's gate and up). Shapes as there; dx is not null.
     */
    void backwardAdd(Tensor dx, Tensor dy, Tensor x) {
        backwardAdd(dx, dy, x, null);
    }

    /** As {@link #backwardAdd(Tensor, Tensor, Tensor)}, with dW and db queued on {@code weights} (null: now). */
    void backwardAdd(Tensor dx, Tensor dy, Tensor x, WeightGradients weights) {
        WeightGradients.defer(weights, () -> parameterGradients(dy, x));
        params.precision().matmul(dx, dy, params.precision().operand(weight), false, false, 1f, 1f);
    }

    /** dW += dyᵀ·x, db += Σ_rows dy. */
    private void parameterGradients(Tensor dy, Tensor x) {
        params.precision().matmul(weight.grad(), dy, x, true, false, 1f, 1f);   // fp32 accumulation either way
        if (bias != null) Bias.backward(bias.grad(), dy);
    }
}
