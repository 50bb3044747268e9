package dev.shardwise.model;

import dev.shardwise.core.kernels.Gelu;
import dev.shardwise.core.memory.StepArena;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;

/**
 * The GPT-2 feed-forward block: y = GELU(x·W_fcᵀ + b_fc)·W_projᵀ + b_proj, hidden size F (Hendrycks and Gimpel's tanh GELU).
 *
 * <p>Tensor parallelism (Shoeybi et al. 2019): fc is {@linkplain ColumnParallelLinear column-parallel} and proj
 * {@linkplain RowParallelLinear row-parallel}, so GELU runs on each rank's F/tp hidden features with no communication
 * between them: forward one all-reduce of y [N, C] (g), backward one of dx [N, C] (f's backward), 2·(tp-1)/tp·N·C
 * elements per rank each. Shapes below are local: F stands for F/tp. Under sequence parallelism (Korthikanti et al.
 * 2022) x and y are this rank's sequence shard [N/tp, C]: x is all-gathered before fc (again in backward, for dW_fc)
 * and y reduce-scattered after proj ({@link ColumnParallelInput}, {@link RowParallelLinear}).
 */
final class GeluMlp implements FeedForward {
    private final ColumnParallelLinear fc;   // C -> F/tp
    private final RowParallelLinear proj;    // F/tp -> C
    private final ColumnParallelInput input;
    private final TensorParallel tp;
    private final ParameterSet params;   // whose precision keeps proj's input
    private final int features;          // F/tp

    /**
     * What backward reads.
     *
     * @param hidden pre-activation x·W_fcᵀ + b_fc [N, F] (bf16 under bf16 precision)
     * @param gelu   GELU(hidden) [N, F] (bf16 under bf16 precision)
     * @param out    the block's output y [N, C] (under bf16 in a staging buffer: read it before the next layer runs)
     */
    record Saved(Tensor hidden, Tensor gelu, Tensor out) implements Layer.Saved { }

    static void declare(ParameterSet.Builder builder, String name, ModelConfig config, TensorParallel tp) {
        ColumnParallelLinear.declare(builder, name + ".fc", config.hidden(), new int[]{config.ffnHidden()},
                new ParameterSet.Init.Normal(GptInit.branchInput(config)), config.bias(), tp, "ffnHidden", "model.ffnHidden, the MLP's hidden size");
        RowParallelLinear.declare(builder, name + ".proj", config.ffnHidden(), config.hidden(), config.bias(),
                GptInit.residualProjection(config), tp, "ffnHidden", "model.ffnHidden, the MLP's hidden size");
    }

    GeluMlp(ParameterSet params, String name, ModelConfig config, TensorParallel tp) {
        this.fc = new ColumnParallelLinear(params, name + ".fc", config.bias());
        this.proj = new RowParallelLinear(params, name + ".proj", config.bias(), tp);
        this.input = new ColumnParallelInput(tp);
        this.tp = tp;
        this.params = params;
        this.features = tp.divide(config.ffnHidden(), "ffnHidden", "model.ffnHidden, the MLP's hidden size");
    }

    /** x [N, C] -> y [N, C]. */
    @Override
    public Saved forward(StepArena arena, Tensor x, Layer.Rows rows) {
        // Under bf16 the pre-activation and GELU are kept in bf16 (GELU runs on the rounded pre-activation, the values
        // its backward reads), their fp32 forms and the output live in the precision's staging buffers. Under sequence
        // parallelism the input is gathered whole first and the output is this rank's sequence shard.
        MatmulPrecision precision = params.precision();
        DType dtype = Linear.outputType(x);
        Tensor staged;
        try (StepArena scratch = new StepArena(arena.pool())) {   // the gathered input, under sequence parallelism
            Tensor whole = input.whole(scratch, x, rows.b());
            staged = fc.forwardInto(precision.staging(arena, 0, dtype, whole.dim(0), features), whole);   // [N, F]
        }
        int n = staged.dim(0);
        Tensor hidden = precision.keep(arena, staged);
        Tensor gelu = precision.staging(arena, 1, dtype, n, features);
        Gelu.forward(gelu, precision.asKept(staged, hidden));
        Tensor kept = precision.keep(arena, gelu);   // proj's input
        Tensor y = tp.sequenceParallel() ? proj.forward(arena, kept, rows.b())
                : proj.forwardInto(precision.staging(arena, 0, dtype, n, x.dim(1)), kept);
        return new Saved(hidden, kept, y);
    }

    /**
     * Writes dx [N, C] and accumulates dW_fc, db_fc, dW_proj, db_proj from dy [N, C] (queued on {@code weights}
     * when not null; they read dy, gelu, dhidden and x); reads hidden and gelu.
     */
    @Override
    public void backward(StepArena arena, Tensor dx, Tensor dy, Tensor x, Layer.Rows rows, Layer.Saved s,
                         WeightGradients weights) {
        Saved saved = (Saved) s;
        Tensor dgelu = arena.allocateForOverwrite(dy.dtype(), saved.gelu.shape());
        proj.backward(arena, dgelu, dy, saved.gelu, rows.b(), weights);
        Tensor dhidden = dgelu;   // in place: proj's dW reads dy and gelu, never dgelu
        Gelu.backwardInto(dhidden, dgelu, params.precision().widen(0, saved.hidden));
        Tensor dwhole = input.gradientBuffer(arena, dx);
        fc.backward(dwhole, dhidden, input.whole(arena, x, rows.b()), weights);
        input.reduceGradient(dx, dwhole, rows.b());
    }
}
