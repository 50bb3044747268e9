package dev.shardwise.model;

import dev.shardwise.core.kernels.Bias;
import dev.shardwise.core.memory.StepArena;
import dev.shardwise.core.tensor.Tensor;

/**
 * Row-parallel linear layer (Shoeybi et al. 2019): Y = X·A + b with A split by rows into A_1..A_tp and X by
 * columns into X_1..X_tp (in our [out, in] layout W = Aᵀ is split by input columns), so Y = Σ_r X_r·A_r + b: each
 * rank multiplies its input slice (a column-parallel layer's output) by its rows, the partial products are summed
 * over the tp group, and the bias, replicated on every rank, is added once after the sum.
 *
 * <p>Shapes: x [N, IN/tp] -> y [N, OUT] (whole, equal on every rank).
 *
 * <p>Communication: forward, g ({@link TensorParallel#reduceFromRegionForward}), an all-reduce of y [N, OUT] over
 * the tp group (2·(tp-1)/tp·N·OUT elements per rank, ring); backward, g's backward is the identity: dy is already
 * whole on every rank, dx_r = dy·W_r is this rank's slice, and db = Σ dy comes out equal on every rank (the bias is
 * {@linkplain Parameter#replicatedOverTensorParallel replicated}). With tp = 1 it is {@link Linear}, bit for bit.
 */
final class RowParallelLinear {
    private final Linear local;
    private final Parameter weight;   // [OUT, IN/tp]
    private final Parameter bias;     // [OUT], whole, or null
    private final TensorParallel tp;
    private final ParameterSet params;   // whose precision runs the product

    /**
     * Declares rank {@code tp.tpRank()}'s columns of {@code name.weight} [out, in] ~ N(0, std²) and, if {@code bias},
     * the whole {@code name.bias} [out] = 0 (replicated); with tp = 1 as {@link Linear#declare}.
     *
     * @throws IllegalArgumentException if tp does not divide {@code in}
     */
    static void declare(ParameterSet.Builder builder, String name, int in, int out, boolean bias, double std,
                        TensorParallel tp, String field, String what) {
        if (tp.size() == 1) {
            Linear.declare(builder, name, in, out, bias, std);
            return;
        }
        int local = tp.divide(in, field, what);
        builder.declareSlice(name + ".weight", new ParameterSet.Init.Normal(std), true,
                ParameterSet.Slice.of(1, tp.tpRank() * local, local, out, in));
        if (bias) builder.declare(name + ".bias", new ParameterSet.Init.Constant(0), false, out);
    }

    RowParallelLinear(ParameterSet params, String name, boolean bias, TensorParallel tp) {
        this.local = new Linear(params, name, bias);
        this.weight = params.get(name + ".weight");
        this.bias = bias ? params.get(name + ".bias") : null;
        this.tp = tp;
        this.params = params;
    }

    /** x [N, IN/tp] -> y [N, OUT] = Σ_r x_r·W_rᵀ + b, in {@code arena}; all-reduces over the tp group. */
    Tensor forward(StepArena arena, Tensor x) {
        return forwardInto(arena.allocateForOverwrite(Linear.outputType(x), x.dim(0), weight.value().dim(0)), x);
    }

    /** As {@link #forward}, into {@code y} [N, OUT] (not read); returns it. */
    Tensor forwardInto(Tensor y, Tensor x) {
        if (tp.size() == 1) return local.forwardInto(y, x);
        MatmulPrecision precision = params.precision();
        precision.matmul(y, x, precision.operand(weight), false, true, 1f, 0f);
        tp.reduceFromRegionForward(y);
        if (bias != null) Bias.forward(y, bias.value());
        return y;
    }

    /** Writes dx_r = dy·W_r [N, IN/tp]; dW_r += dyᵀ·x_r, db += Σ dy (queued on {@code weights} if not null). */
    void backward(Tensor dx, Tensor dy, Tensor x, WeightGradients weights) {
        local.backward(dx, dy, x, weights);
    }
}
