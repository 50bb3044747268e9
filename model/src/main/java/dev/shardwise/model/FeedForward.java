package dev.shardwise.model;

/**
 * The feed-forward block of a transformer layer, x [N, C] -> y [N, C]: GELU MLP or SwiGLU. Row-wise: it reads
 * nothing of {@link Layer.Rows}. Its backward takes the {@link Layer.Saved} of its own forward (a cast to the
 * implementation's record).
 */
interface FeedForward extends Layer<Layer.Saved> {

    static void declare(ParameterSet.Builder builder, String name, ModelConfig config, TensorParallel tp) {
        switch (config.mlp()) {
            case GELU -> GeluMlp.declare(builder, name, config, tp);
            case SWIGLU -> SwiGluMlp.declare(builder, name, config, tp);
        }
    }

    static FeedForward create(ParameterSet params, String name, ModelConfig config, TensorParallel tp) {
        return switch (config.mlp()) {
            case GELU -> new GeluMlp(params, name, config, tp);
            case SWIGLU -> new SwiGluMlp(params, name, config, tp);
        };
    }
}
