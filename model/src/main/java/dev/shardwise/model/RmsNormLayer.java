package dev.shardwise.model;

import dev.shardwise.core.kernels.RmsNorm;
import dev.shardwise.core.memory.StepArena;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;

/** Root-mean-square normalisation (Zhang and Sennrich 2019): y = x·rstd·γ, rstd = 1/sqrt(mean(x²) + eps). */
final class RmsNormLayer implements Norm {
    private final Parameter weight;   // γ [C]
    private final double eps;

    RmsNormLayer(ParameterSet params, String name, double eps) {
        this.weight = params.get(name + ".weight");
        this.eps = eps;
    }

    /** x [N, C] -> y [N, C], saving rstd [N]. */
    @Override
    public Saved forward(StepArena arena, Tensor x) {
        int n = x.dim(0), c = x.dim(1);
        DType dtype = x.dtype();
        Saved saved = new Saved(arena.allocateForOverwrite(dtype, n, c), null, arena.allocateForOverwrite(dtype, n));
        RmsNorm.forward(saved.out(), saved.rstd(), x, weight.value(), eps);
        return saved;
    }

    /** Accumulates dx [N, C] and dγ from dy [N, C]; reads x and the saved rstd. */
    @Override
    public void backward(Tensor dx, Tensor dy, Tensor x, Saved saved) {
        RmsNorm.backward(dx, weight.grad(), dy, x, saved.rstd(), weight.value());
    }
}
