package dev.shardwise.model;

import dev.shardwise.core.kernels.LayerNorm;
import dev.shardwise.core.kernels.Vectors;
import dev.shardwise.core.memory.StepArena;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;

/** Layer normalisation (Ba et al. 2016): y = (x − mean)·rstd·γ + β over the last dimension. */
final class LayerNormLayer implements Norm {
    private final Parameter weight;   // γ [C]
    private final Parameter bias;     // β [C]
    private final double eps;

    LayerNormLayer(ParameterSet params, String name, double eps) {
        this.weight = params.get(name + ".weight");
        this.bias = params.get(name + ".bias");
        this.eps = eps;
    }

    /** x [N, C] -> y [N, C] into {@code out}, saving mean and rstd [N]. */
    @Override
    public Saved forwardInto(StepArena arena, Tensor x, Tensor out) {
        int n = x.dim(0);
        DType dtype = x.dtype();
        Saved saved = new Saved(out, arena.allocateForOverwrite(dtype, n), arena.allocateForOverwrite(dtype, n));
        LayerNorm.forward(saved.out(), saved.mean(), saved.rstd(), x, weight.value(), bias.value(), eps);
        return saved;
    }

    /** Writes dx [N, C] and accumulates dγ and dβ from dy [N, C]; reads x and the saved mean and rstd. */
    @Override
    public void backward(Tensor dx, Tensor dy, Tensor x, Saved saved) {
        Vectors.zero(dx);   // the kernel accumulates
        LayerNorm.backward(dx, weight.grad(), bias.grad(), dy, x, saved.mean(), saved.rstd(), weight.value());
    }

    /** Writes dx = residual + LNᵀ(dy) [N, C] in the kernel's one pass; accumulates dγ and dβ. */
    @Override
    public void backwardOnto(Tensor dx, Tensor residual, Tensor dy, Tensor x, Saved saved) {
        LayerNorm.backwardOnto(dx, residual, weight.grad(), bias.grad(), dy, x, saved.mean(), saved.rstd(), weight.value());
    }
}
