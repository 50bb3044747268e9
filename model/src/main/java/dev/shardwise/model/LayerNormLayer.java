package dev.shardwise.model;

import dev.shardwise.core.kernels.LayerNorm;
import dev.shardwise.core.memory.StepArena;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;

/** Layer normalisation (Ba et al. 2016): y = (x − mean)·rstd·γ + β over the last dimension. */
final class LayerNormLayer {
    private final Parameter weight;   // γ [C]
    private final Parameter bias;     // β [C]
    private final double eps;

    /**
     * What backward reads.
     *
     * @param out  y [N, C]
     * @param mean [N]
     * @param rstd 1/sqrt(var + eps) [N]
     */
    record Saved(Tensor out, Tensor mean, Tensor rstd) { }

    /** Declares {@code name.weight} [c] = 1 and {@code name.bias} [c] = 0, neither decayed. */
    static void declare(ParameterSet.Builder builder, String name, int c) {
        builder.declare(name + ".weight", new ParameterSet.Init.Constant(1), false, c);
        builder.declare(name + ".bias", new ParameterSet.Init.Constant(0), false, c);
    }

    LayerNormLayer(ParameterSet params, String name, double eps) {
        this.weight = params.get(name + ".weight");
        this.bias = params.get(name + ".bias");
        this.eps = eps;
    }

    /** x [N, C] -> y [N, C]. */
    Saved forward(StepArena arena, Tensor x) {
        int n = x.dim(0), c = x.dim(1);
        DType dtype = x.dtype();
        Saved saved = new Saved(arena.allocate(dtype, n, c), arena.allocate(dtype, n), arena.allocate(dtype, n));
        LayerNorm.forward(saved.out, saved.mean, saved.rstd, x, weight.value(), bias.value(), eps);
        return saved;
    }

    /** Accumulates dx [N, C], dγ and dβ from dy [N, C]; reads x and the saved mean and rstd. */
    void backward(Tensor dx, Tensor dy, Tensor x, Saved saved) {
        LayerNorm.backward(dx, weight.grad(), bias.grad(), dy, x, saved.mean, saved.rstd, weight.value());
    }
}
