package dev.shardwise.model;

import dev.shardwise.core.kernels.RmsNorm;
import dev.shardwise.core.kernels.Vectors;
import dev.shardwise.core.memory.StepArena;
import dev.shardwise.core.tensor.Tensor;

/** Root-mean-square normalisation (Zhang and Sennrich 2019): y = x·rstd·γ, rstd = 1/sqrt(mean(x²) + eps). */
final class RmsNormLayer implements Norm {
    private final Parameter weight;   // γ [C]
    private final double eps;

    RmsNormLayer(ParameterSet params, String name, double eps) {
        this.weight = params.get(name + ".weight");
        this.eps = eps;
    }

    /** x [N, C] -> y [N, C] into {@code out}, saving rstd [N]. */
    @Override
    public Saved forwardInto(StepArena arena, Tensor x, Tensor out) {
        Saved saved = new Saved(out, null, arena.allocateForOverwrite(x.dtype(), x.dim(0)));
        RmsNorm.forward(saved.out(), saved.rstd(), x, weight.value(), eps);
        return saved;
    }

    /** Writes dx [N, C] and accumulates dγ from dy [N, C]; reads x and the saved rstd. */
    @Override
    public void backward(Tensor dx, Tensor dy, Tensor x, Saved saved) {
        Vectors.zero(dx);   // the kernel accumulates
        RmsNorm.backward(dx, weight.grad(), dy, x, saved.rstd(), weight.value());
    }

    /** Writes dx = residual + RMSNormᵀ(dy) [N, C]; accumulates dγ. */
    @Override
    public void backwardOnto(Tensor dx, Tensor residual, Tensor dy, Tensor x, Saved saved) {
        Vectors.copy(dx, residual);
        RmsNorm.backward(dx, weight.grad(), dy, x, saved.rstd(), weight.value());
    }
}
