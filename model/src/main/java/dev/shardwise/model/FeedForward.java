package dev.shardwise.model;

import dev.shardwise.core.memory.StepArena;
import dev.shardwise.core.tensor.Tensor;

/** The feed-forward block of a transformer layer, x [N, C] -> y [N, C]: GELU MLP or SwiGLU. */
interface FeedForward {

    /** What backward reads; {@link #out()} is the block's output y [N, C]. */
    interface Saved {
        Tensor out();
    }

    Saved forward(StepArena arena, Tensor x);

    /** Accumulates dx [N, C] and the parameter gradients from dy [N, C]; {@code saved} comes from this layer. */
    void backward(StepArena arena, Tensor dx, Tensor dy, Tensor x, Saved saved);

    static void declare(ParameterSet.Builder builder, String name, ModelConfig config) {
        switch (config.mlp()) {
            case GELU -> GeluMlp.declare(builder, name, config);
            case SWIGLU -> SwiGluMlp.declare(builder, name, config);
        }
    }

    static FeedForward create(ParameterSet params, String name, ModelConfig config) {
        return switch (config.mlp()) {
            case GELU -> new GeluMlp(params, name, config);
            case SWIGLU -> new SwiGluMlp(params, name, config);
        };
    }
}
