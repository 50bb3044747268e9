package dev.shardwise.model;

import dev.shardwise.core.kernels.Vectors;
import dev.shardwise.core.memory.StepArena;
import dev.shardwise.core.tensor.Tensor;

/** A normalisation layer over the last dimension, x [N, C] -> y [N, C]: LayerNorm or RMSNorm. */
interface Norm {

    /**
     * What backward reads.
     *
     * @param out  y [N, C]
     * @param mean [N] (LayerNorm only; null for RMSNorm)
     * @param rstd 1/sqrt(var + eps) or 1/sqrt(mean(x²) + eps) [N]
     */
    record Saved(Tensor out, Tensor mean, Tensor rstd) { }

    Saved forward(StepArena arena, Tensor x);

    /** Accumulates dx [N, C] and the norm's parameter gradients from dy [N, C]; reads x and what forward saved. */
    void backward(Tensor dx, Tensor dy, Tensor x, Saved saved);

    /**
     * As {@link #backward}, onto a residual stream's gradient: writes dx = residual + Nᵀ(dy) (dx [N, C] is not
     * read; residual [N, C] must not overlap it) and accumulates the parameter gradients.
     */
    default void backwardOnto(Tensor dx, Tensor residual, Tensor dy, Tensor x, Saved saved) {
        Vectors.copy(dx, residual);
        backward(dx, dy, x, saved);
    }

    /** Declares the parameters of the norm {@code config} asks for under {@code name}. */
    static void declare(ParameterSet.Builder builder, String name, ModelConfig config) {
        builder.declare(name + ".weight", new ParameterSet.Init.Constant(1), false, config.hidden());
        if (config.norm() == ModelConfig.Norm.LAYER_NORM) {
            builder.declare(name + ".bias", new ParameterSet.Init.Constant(0), false, config.hidden());
        }
    }

    /** The norm {@code config} asks for, over the parameters declared under {@code name}. */
    static Norm create(ParameterSet params, String name, ModelConfig config) {
        return switch (config.norm()) {
            case LAYER_NORM -> new LayerNormLayer(params, name, config.normEps());
            case RMS_NORM -> new RmsNormLayer(params, name, config.normEps());
        };
    }
}
