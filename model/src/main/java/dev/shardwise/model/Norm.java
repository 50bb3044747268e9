package dev.shardwise.model;

import dev.shardwise.core.memory.StepArena;
import dev.shardwise.core.tensor.Tensor;

/**
 * A normalisation layer over the last dimension, x [N, C] -> y [N, C]: LayerNorm or RMSNorm. Row-wise, so it
 * reads nothing of {@link Layer.Rows} and its backward needs no arena; {@link #forward(StepArena, Tensor)} and
 * {@link #backward(Tensor, Tensor, Tensor, Saved)} are the same operations without them.
 */
interface Norm extends Layer<Norm.Saved> {

    /**
     * What backward reads.
     *
     * @param out  y [N, C]
     * @param mean [N] (LayerNorm only; null for RMSNorm)
     * @param rstd 1/sqrt(var + eps) or 1/sqrt(mean(x²) + eps) [N]
     */
    record Saved(Tensor out, Tensor mean, Tensor rstd) implements Layer.Saved { }

    /**
     * x [N, C] -> y written into {@code out} [N, C] (allocated by the caller, possibly in another arena than the
     * statistics), saving the statistics [N] in {@code arena}.
     */
    Saved forwardInto(StepArena arena, Tensor x, Tensor out);

    /** x [N, C] -> y [N, C], everything allocated in {@code arena}. */
    default Saved forward(StepArena arena, Tensor x) {
        return forwardInto(arena, x, arena.allocateForOverwrite(x.dtype(), x.shape()));
    }

    @Override
    default Saved forward(StepArena arena, Tensor x, Layer.Rows rows) {
        return forward(arena, x);
    }

    /**
     * Writes dx [N, C] (not read) and accumulates the norm's parameter gradients from dy [N, C]; reads x and
     * what forward saved. The kernels accumulate into dx, so this zeroes dx first: on the pre-LN residual path
     * use {@link #backwardOnto}, which does not.
     */
    void backward(Tensor dx, Tensor dy, Tensor x, Saved saved);

    /**
     * The norm's dγ and dβ are accumulated at once even when backward is split: the kernel computes them in the
     * same pass over the rows as dx, so {@code weights} gets nothing.
     */
    @Override
    default void backward(StepArena arena, Tensor dx, Tensor dy, Tensor x, Layer.Rows rows, Saved saved,
                          WeightGradients weights) {
        backward(dx, dy, x, saved);
    }

    /**
     * As {@link #backward}, onto a residual stream's gradient: writes dx = residual + Nᵀ(dy) (dx [N, C] is not
     * read; residual [N, C] must not overlap it) and accumulates the parameter gradients.
     */
    void backwardOnto(Tensor dx, Tensor residual, Tensor dy, Tensor x, Saved saved);

    /** Declares the parameters of the norm {@code config} asks for under {@code name}. */
    static void declare(ParameterSet.Builder builder, String name, ModelConfig config) {
        declare(builder, name, config, TensorParallel.NONE);
    }

    /**
     * As {@link #declare(ParameterSet.Builder, String, ModelConfig)}, whole on every tp rank; under sequence
     * parallelism the norm runs on each rank's sequence shard, so its γ and β are declared
     * {@linkplain ParameterSet.Builder#declareSequenceParallel sequence-parallel} (partial gradients, summed over tp).
     */
    static void declare(ParameterSet.Builder builder, String name, ModelConfig config, TensorParallel tp) {
        ParameterSet.Init one = new ParameterSet.Init.Constant(1), zero = new ParameterSet.Init.Constant(0);
        boolean sequence = tp.sequenceParallel();
        if (sequence) builder.declareSequenceParallel(name + ".weight", one, false, config.hidden());
        else builder.declare(name + ".weight", one, false, config.hidden());
        if (config.norm() == ModelConfig.Norm.LAYER_NORM) {
            if (sequence) builder.declareSequenceParallel(name + ".bias", zero, false, config.hidden());
            else builder.declare(name + ".bias", zero, false, config.hidden());
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
