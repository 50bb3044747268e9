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
 *
 * <p>Sequence parallelism (Korthikanti et al. 2022): forward reduce-scatters the partial products along the sequence
 * instead ({@link TensorParallel#reduceScatterToSequenceRegionForward}, (tp-1)/tp·N·OUT elements per rank), so y is
 * this rank's T/tp positions of each sequence [N/tp, OUT] and the bias is added to those rows; backward all-gathers dy
 * [N/tp, OUT] into the whole [N, OUT] first ({@link TensorParallel#reduceScatterToSequenceRegionBackward}), from
 * which dx_r, dW_r and db come as above (db whole and complete on every rank: no sum over tp needed).
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

    /**
     * x [N, IN/tp] -> y [N, OUT] = Σ_r x_r·W_rᵀ + b, in {@code arena}; all-reduces over the tp group. Under sequence
     * parallelism y is this rank's sequence shard [N/tp, OUT] of it, reduce-scattered over the {@code sequences}
     * sequences of the N rows (the partial products live in a scratch arena closed before returning).
     */
    Tensor forward(StepArena arena, Tensor x, int sequences) {
        int out = weight.value().dim(0);
        if (tp.size() == 1 || !tp.sequenceParallel()) {
            return forwardInto(arena.allocateForOverwrite(Linear.outputType(x), x.dim(0), out), x);
        }
        Tensor y = arena.allocateForOverwrite(Linear.outputType(x), x.dim(0) / tp.size(), out);
        try (StepArena scratch = new StepArena(arena.pool())) {
            Tensor partial = scratch.allocateForOverwrite(Linear.outputType(x), x.dim(0), out);
            MatmulPrecision precision = params.precision();
            precision.matmul(partial, x, precision.operand(weight), false, true, 1f, 0f);
            tp.reduceScatterToSequenceRegionForward(y, partial, sequences);
        }
        if (bias != null) Bias.forward(y, bias.value());
        return y;
    }

    /** As {@link #forward} without sequence parallelism, into {@code y} [N, OUT] (not read); returns it. */
    Tensor forwardInto(Tensor y, Tensor x) {
        if (tp.size() == 1) return local.forwardInto(y, x);
        MatmulPrecision precision = params.precision();
        precision.matmul(y, x, precision.operand(weight), false, true, 1f, 0f);
        tp.reduceFromRegionForward(y);
        if (bias != null) Bias.forward(y, bias.value());
        return y;
    }

    /**
     * Writes dx_r = dy·W_r [N, IN/tp]; dW_r += dyᵀ·x_r, db += Σ dy (queued on {@code weights} if not null). Under
     * sequence parallelism dy is the shard [N/tp, OUT], all-gathered first into a tensor in {@code arena} (which
     * the queued dW reads).
     */
    void backward(StepArena arena, Tensor dx, Tensor dy, Tensor x, int sequences, WeightGradients weights) {
        if (tp.sequenceParallel()) {
            Tensor whole = arena.allocateForOverwrite(dy.dtype(), dy.dim(0) * tp.size(), dy.dim(1));
            tp.reduceScatterToSequenceRegionBackward(whole, dy, sequences);
            dy = whole;
        }
        local.backward(dx, dy, x, weights);
    }
}
