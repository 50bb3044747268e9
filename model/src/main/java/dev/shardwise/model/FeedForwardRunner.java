package dev.shardwise.model;

import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.memory.StepArena;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;

/**
 * One feed-forward block on its own, forward and backward, for benchmarks beside each other: the dense MLP of a
 * config (GELU or SwiGLU) or its mixture of experts (Fedus et al. 2021; dispatch, grouped expert products, combine),
 * with freshly initialised parameters. {@link #trainingFlops} counts what a token uses (the k experts' and the
 * router's products), as MFU does. Owns its parameters and activations: {@link #close()} frees them. One thread.
 */
public final class FeedForwardRunner implements AutoCloseable {
    private final ModelConfig config;
    private final boolean moe;
    private final ParameterSet params;
    private final FeedForward layer;
    private final MoeRun run = new MoeRun();
    private final StepArena arena;

    /**
     * The feed-forward block of {@code config}: its MoE block when {@code moe} (config.moe() must be set), else the
     * dense MLP; parameters in {@code dtype}, initialised from {@code seed}, charged to {@code pool}.
     *
     * @throws IllegalArgumentException if {@code moe} and the config has no MoE section
     */
    public FeedForwardRunner(ModelConfig config, boolean moe, MemoryPool pool, DType dtype, long seed) {
        if (moe && config.moe() == null) throw new IllegalArgumentException("the config has no model.moe section to run");
        this.config = config;
        this.moe = moe;
        ParameterSet.Builder builder = ParameterSet.builder();
        if (moe) MoeFeedForward.declare(builder, "ffn", config);
        else FeedForward.declare(builder, "ffn", config, TensorParallel.NONE);
        this.params = builder.allocate(pool, dtype);
        params.initialize(seed);
        this.layer = moe ? new MoeFeedForward(params, "ffn", config, run) : FeedForward.create(params, "ffn", config, TensorParallel.NONE);
        this.arena = new StepArena(pool);
    }

    /** One training forward over x [N, C], then backward from dy [N, C]; the activations are freed afterwards. */
    public void forwardBackward(Tensor x, Tensor dy) {
        try {
            run.begin(true, 1);
            Layer.Saved saved = layer.forward(arena, x, Layer.Rows.of(1, x.dim(0)));
            run.end();
            Tensor dx = arena.allocateForOverwrite(x.dtype(), x.shape());
            layer.backward(arena, dx, dy, x, Layer.Rows.of(1, x.dim(0)), saved);
        } finally {
            arena.reset();
        }
    }

    /**
     * Matrix-product FLOPs of one forward and backward over {@code n} tokens: 6 per weight a token uses (the dense
     * MLP's, or the router's and k routed and the shared experts' weights), biases left out.
     */
    public double trainingFlops(int n) {
        long c = config.hidden(), matrices = config.mlp() == ModelConfig.Mlp.GELU ? 2 : 3;
        if (!moe) return 6.0 * n * matrices * c * config.ffnHidden();
        MoeConfig m = config.moe();
        long perToken = c * m.experts() + (long) m.topK() * matrices * c * m.expertHidden()
                + (long) m.sharedExperts() * matrices * c * m.expertHidden();
        return 6.0 * n * perToken;
    }

    /** Starts the MoE block's per-phase timers and returns them (MoE only; see {@link MoePhases}). */
    public MoePhases timePhases() {
        return run.timePhases();
    }

    /** The expert load of the runs so far, per expert (MoE only). */
    public MoeStats stats() {
        return run.stats();
    }

    @Override
    public void close() {
        arena.close();
        params.close();
    }
}
