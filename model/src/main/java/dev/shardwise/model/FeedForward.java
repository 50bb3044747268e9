package dev.shardwise.model;

/**
 * The feed-forward block of a transformer layer, x [N, C] -> y [N, C]: GELU MLP or SwiGLU, or a mixture of such
 * experts ({@link MoeFeedForward}) in the blocks {@link ModelConfig#isMoeLayer} names. Row-wise: it reads nothing of
 * {@link Layer.Rows}. Its backward takes the {@link Layer.Saved} of its own forward (a cast to the implementation's
 * record).
 */
interface FeedForward extends Layer<Layer.Saved> {

    static void declare(ParameterSet.Builder builder, String name, ModelConfig config, TensorParallel tp) {
        switch (config.mlp()) {
            case GELU -> GeluMlp.declare(builder, name, config, tp);
            case SWIGLU -> SwiGluMlp.declare(builder, name, config, tp);
        }
    }

    /** As {@link #declare(ParameterSet.Builder, String, ModelConfig, TensorParallel)} for block {@code layer} (-1: dense). */
    static void declare(ParameterSet.Builder builder, String name, ModelConfig config, TensorParallel tp, int layer) {
        declare(builder, name, config, tp, layer, ExpertParallel.NONE);
    }

    /** As above; an MoE block declares rank {@code ep.epRank()}'s experts only. */
    static void declare(ParameterSet.Builder builder, String name, ModelConfig config, TensorParallel tp, int layer,
                        ExpertParallel ep) {
        if (layer >= 0 && config.isMoeLayer(layer)) {
            MoeFeedForward.declare(builder, name, config, tp, ep);
        } else {
            declare(builder, name, config, tp);
        }
    }

    /** The feed-forward block of block {@code layer} (-1: dense); an MoE block shares {@code moe} with its part. */
    static FeedForward create(ParameterSet params, String name, ModelConfig config, TensorParallel tp, int layer, MoeRun moe) {
        if (layer >= 0 && config.isMoeLayer(layer)) {
            return new MoeFeedForward(params, name, config, tp, moe);
        }
        return create(params, name, config, tp);
    }

    static FeedForward create(ParameterSet params, String name, ModelConfig config, TensorParallel tp) {
        return switch (config.mlp()) {
            case GELU -> new GeluMlp(params, name, config, tp);
            case SWIGLU -> new SwiGluMlp(params, name, config, tp);
        };
    }
}
