package dev.shardwise.model;

import dev.shardwise.core.kernels.SwiGlu;
import dev.shardwise.core.memory.StepArena;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;

/**
 * The LLaMA feed-forward block (Shazeer 2020's SwiGLU): y = (silu(x·W_gateᵀ) ∘ x·W_upᵀ)·W_downᵀ, hidden size F.
 *
 * <p>Tensor parallelism (Shoeybi et al. 2019): gate and up are {@linkplain ColumnParallelLinear column-parallel}
 * over the same F/tp features on each rank, down {@linkplain RowParallelLinear row-parallel}: forward one all-reduce
 * of y [N, C] (g), backward one of dx [N, C] (f's backward, after gate's and up's parts are added), 2·(tp-1)/tp·N·C
 * elements per rank each. Shapes below are local: F stands for F/tp. Under sequence parallelism (Korthikanti et al.
 * 2022) x and y are this rank's sequence shard [N/tp, C]: x is all-gathered once for gate and up (again in backward,
 * for their dW) and y reduce-scattered after down ({@link ColumnParallelInput}, {@link RowParallelLinear}).
 */
final class SwiGluMlp implements FeedForward {
    private final ColumnParallelLinear gate;   // C -> F/tp
    private final ColumnParallelLinear up;     // C -> F/tp
    private final RowParallelLinear down;      // F/tp -> C
    private final ColumnParallelInput input;
    private final TensorParallel tp;
    private final ParameterSet params;   // whose precision keeps gate, up and down's input
    private final int features;          // F/tp

    /**
     * What backward reads.
     *
     * @param gate   x·W_gateᵀ [N, F] (bf16 under bf16 precision)
     * @param up     x·W_upᵀ [N, F] (bf16 under bf16 precision)
     * @param hidden silu(gate) ∘ up [N, F] (bf16 under bf16 precision)
     * @param out    the block's output y [N, C] (under bf16 in a staging buffer: read it before the next layer runs)
     */
    record Saved(Tensor gate, Tensor up, Tensor hidden, Tensor out) implements Layer.Saved { }

    static void declare(ParameterSet.Builder builder, String name, ModelConfig config, TensorParallel tp) {
        ParameterSet.Init in = new ParameterSet.Init.Normal(GptInit.branchInput(config));
        String field = "ffnHidden", what = "model.ffnHidden, the MLP's hidden size";
        ColumnParallelLinear.declare(builder, name + ".gate", config.hidden(), new int[]{config.ffnHidden()}, in, config.bias(), tp, field, what);
        ColumnParallelLinear.declare(builder, name + ".up", config.hidden(), new int[]{config.ffnHidden()}, in, config.bias(), tp, field, what);
        RowParallelLinear.declare(builder, name + ".down", config.ffnHidden(), config.hidden(), config.bias(),
                GptInit.residualProjection(config), tp, field, what);
    }

    SwiGluMlp(ParameterSet params, String name, ModelConfig config, TensorParallel tp) {
        this.gate = new ColumnParallelLinear(params, name + ".gate", config.bias());
        this.up = new ColumnParallelLinear(params, name + ".up", config.bias());
        this.down = new RowParallelLinear(params, name + ".down", config.bias(), tp);
        this.input = new ColumnParallelInput(tp);
        this.tp = tp;
        this.params = params;
        this.features = tp.divide(config.ffnHidden(), "ffnHidden", "model.ffnHidden, the MLP's hidden size");
    }

    /** x [N, C] -> y [N, C]. */
    @Override
    public Saved forward(StepArena arena, Tensor x, Layer.Rows rows) {
        // Under bf16 gate, up and hidden are kept in bf16 (hidden is computed from the rounded gate and up, the values
        // backward reads); their fp32 forms and the output live in the precision's staging buffers, hidden over gate's.
        MatmulPrecision precision = params.precision();
        DType dtype = Linear.outputType(x);
        Tensor g, u;
        try (StepArena scratch = new StepArena(arena.pool())) {   // the gathered input, under sequence parallelism
            Tensor whole = input.whole(scratch, x, rows.b());
            int n = whole.dim(0);
            g = gate.forwardInto(precision.staging(arena, 0, dtype, n, features), whole);   // [N, F]
            u = up.forwardInto(precision.staging(arena, 1, dtype, n, features), whole);     // [N, F]
        }
        Tensor keptGate = precision.keep(arena, g), keptUp = precision.keep(arena, u);
        Tensor gateWide = precision.asKept(g, keptGate), upWide = precision.asKept(u, keptUp);
        Tensor hidden = precision.staging(arena, 0, dtype, g.shape());   // under bf16 gate's own buffer: computed in place
        SwiGlu.forward(hidden, gateWide, upWide);
        Tensor kept = precision.keep(arena, hidden);   // down's input
        Tensor y = tp.sequenceParallel() ? down.forward(arena, kept, rows.b())
                : down.forwardInto(precision.staging(arena, 0, dtype, g.dim(0), x.dim(1)), kept);
        return new Saved(keptGate, keptUp, kept, y);
    }

    /**
     * Writes dx [N, C] and accumulates the gate, up and down gradients from dy [N, C] (queued on {@code weights}
     * when not null; they read dy, hidden, dgate, dup and x); reads gate, up and hidden.
     */
    @Override
    public void backward(StepArena arena, Tensor dx, Tensor dy, Tensor x, Layer.Rows rows, Layer.Saved s,
                         WeightGradients weights) {
        Saved saved = (Saved) s;
        Tensor dhidden = arena.allocateForOverwrite(dy.dtype(), saved.hidden.shape());
        down.backward(arena, dhidden, dy, saved.hidden, rows.b(), weights);
        Tensor dgate = dhidden;   // in place: down's dW reads dy and hidden, never dhidden
        Tensor dup = arena.allocateForOverwrite(dy.dtype(), saved.up.shape());
        MatmulPrecision precision = params.precision();
        SwiGlu.backwardInto(dgate, dup, dhidden, precision.widen(0, saved.gate), precision.widen(1, saved.up));
        Tensor whole = input.whole(arena, x, rows.b()), dwhole = input.gradientBuffer(arena, dx);
        gate.backward(dwhole, dgate, whole, weights);   // dx = dgate·W_gate
        up.backwardAdd(dwhole, dup, whole, weights);    // dx += dup·W_up
        input.reduceGradient(dx, dwhole, rows.b());     // f's (or g's) backward, once for both
    }
}
