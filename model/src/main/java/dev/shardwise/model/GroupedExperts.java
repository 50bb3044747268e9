package dev.shardwise.model;

import dev.shardwise.core.kernels.Bias;
import dev.shardwise.core.kernels.Gelu;
import dev.shardwise.core.kernels.Gemm;
import dev.shardwise.core.kernels.SwiGlu;
import dev.shardwise.core.memory.StepArena;
import dev.shardwise.core.tensor.Tensor;

/**
 * E expert MLPs run as one grouped product over uneven token counts (the grouped GEMM of dropless MoE, Gale et al.
 * 2022's MegaBlocks): the tokens come sorted by expert, expert e owning rows [offsets[e], offsets[e+1]) of
 * xs [M, C], and each expert's GEMMs run over its contiguous rows only, so no token is padded or dropped.
 * Each expert is a GELU MLP (fc C -> F_e, proj F_e -> C) or a SwiGLU (gate, up C -> F_e, down F_e -> C), named
 * {@code name.e.fc} and so on, ordinary parameters of the block's unit.
 *
 * <p>Under tensor parallelism (Shoeybi et al. 2019, applied to each expert as Megatron's expert tensor parallelism)
 * every expert keeps the tp split of its linears: fc (gate, up) column-parallel, proj (down) row-parallel, F_e/tp
 * hidden features per rank, the row-parallel bias whole. The rows are the same on every tp rank (the tokens are
 * replicated over tp), so forward all-reduces the experts' outputs [M, C] over the tp group before the bias and the
 * combine (which needs whole outputs for the gates' gradient), and backward all-reduces the input gradients [M, C]
 * (each rank's is a partial sum over its hidden features): two all-reduces of M·C elements per block and pass.
 */
final class GroupedExperts {
    private final boolean swiGlu;
    private final boolean bias;
    private final Parameter[][] weights;   // [E][3 (GELU: fc, proj) or 3 (SwiGLU: gate, up, down)]
    private final Parameter[][] biases;    // same, null entries without biases
    private final int hidden;              // F_e/tp: this rank's hidden features of each expert
    private final TensorParallel tp;

    /**
     * What backward reads, over M routed rows.
     *
     * @param first  GELU: fc's pre-activation [M, F_e]; SwiGLU: x·W_gateᵀ [M, F_e]
     * @param second GELU: GELU(first) [M, F_e]; SwiGLU: x·W_upᵀ [M, F_e]
     * @param third  SwiGLU only: silu(gate) ∘ up [M, F_e]; null for GELU
     * @param out    the experts' outputs [M, C]
     */
    record Saved(Tensor first, Tensor second, Tensor third, Tensor out) { }

    /** Declares {@code count} experts of hidden size {@code hidden} under {@code name.0} ... */
    static void declare(ParameterSet.Builder builder, String name, ModelConfig config, int count, int hidden) {
        declare(builder, name, config, 0, count, hidden);
    }

    /** Declares experts {@code first} .. {@code first + count - 1} (their global numbers) under {@code name.first} ... */
    static void declare(ParameterSet.Builder builder, String name, ModelConfig config, int first, int count, int hidden) {
        declare(builder, name, config, first, count, hidden, TensorParallel.NONE);
    }

    /**
     * As above, rank {@code tp.tpRank()}'s tensor-parallel slice of each expert (F_e/tp of the hidden features).
     *
     * @throws IllegalArgumentException if tp does not divide {@code hidden}
     */
    static void declare(ParameterSet.Builder builder, String name, ModelConfig config, int first, int count, int hidden,
                        TensorParallel tp) {
        ParameterSet.Init in = new ParameterSet.Init.Normal(GptInit.branchInput(config));
        double out = GptInit.residualProjection(config);
        String field = "model.moe.expertHidden", what = "each expert's hidden features are split over the tp ranks";
        for (int e = first; e < first + count; e++) {
            String p = name + "." + e;
            if (config.mlp() == ModelConfig.Mlp.SWIGLU) {
                ColumnParallelLinear.declare(builder, p + ".gate", config.hidden(), new int[]{hidden}, in, config.bias(), tp, field, what);
                ColumnParallelLinear.declare(builder, p + ".up", config.hidden(), new int[]{hidden}, in, config.bias(), tp, field, what);
                RowParallelLinear.declare(builder, p + ".down", hidden, config.hidden(), config.bias(), out, tp, field, what);
            } else {
                ColumnParallelLinear.declare(builder, p + ".fc", config.hidden(), new int[]{hidden}, in, config.bias(), tp, field, what);
                RowParallelLinear.declare(builder, p + ".proj", hidden, config.hidden(), config.bias(), out, tp, field, what);
            }
        }
    }

    GroupedExperts(ParameterSet params, String name, ModelConfig config, int count, int hidden) {
        this(params, name, config, 0, count, hidden, TensorParallel.NONE);
    }

    /**
     * Experts {@code first} .. {@code first + count - 1}; local expert e of this group is global expert first + e; this
     * rank's tp slice of each (declared with the same tp).
     */
    GroupedExperts(ParameterSet params, String name, ModelConfig config, int first, int count, int hidden, TensorParallel tp) {
        this.swiGlu = config.mlp() == ModelConfig.Mlp.SWIGLU;
        this.bias = config.bias();
        this.tp = tp;
        this.hidden = tp.divide(hidden, "model.moe.expertHidden", "each expert's hidden features are split over the tp ranks");
        String[] parts = swiGlu ? new String[]{"gate", "up", "down"} : new String[]{"fc", "proj"};
        this.weights = new Parameter[count][parts.length];
        this.biases = new Parameter[count][parts.length];
        for (int e = 0; e < count; e++) {
            for (int i = 0; i < parts.length; i++) {
                weights[e][i] = params.get(name + "." + (first + e) + "." + parts[i] + ".weight");
                if (bias) biases[e][i] = params.get(name + "." + (first + e) + "." + parts[i] + ".bias");
            }
        }
    }

    int count() {
        return weights.length;
    }

    /** xs [M, C] sorted by expert, rows [offsets[e], offsets[e+1]) for expert e -> out [M, C]. */
    Saved forward(StepArena arena, Tensor xs, int[] offsets) {
        int m = xs.dim(0), c = xs.dim(1);
        Tensor first = arena.allocateForOverwrite(xs.dtype(), m, hidden);
        Tensor second = arena.allocateForOverwrite(xs.dtype(), m, hidden);
        Tensor third = swiGlu ? arena.allocateForOverwrite(xs.dtype(), m, hidden) : null;
        Tensor out = arena.allocateForOverwrite(xs.dtype(), m, c);
        for (int e = 0; e < count(); e++) {
            int from = offsets[e], rows = offsets[e + 1] - from;
            if (rows == 0) continue;
            Tensor x = xs.slice(0, from, rows), f = first.slice(0, from, rows), s = second.slice(0, from, rows), y = out.slice(0, from, rows);
            if (swiGlu) {
                Tensor h = third.slice(0, from, rows);
                linear(f, x, e, 0);
                linear(s, x, e, 1);
                SwiGlu.forward(h, f, s);
                linear(y, h, e, 2);
            } else {
                linear(f, x, e, 0);
                Gelu.forward(s, f);
                linear(y, s, e, 1);
            }
        }
        if (tp.size() > 1) {   // g of the row-parallel linear: sum the partial outputs, then add the whole bias once
            int used = offsets[count()];
            if (used > 0) tp.allReduceSum(out.slice(0, 0, used));
            int last = weights[0].length - 1;
            for (int e = 0; bias && e < count(); e++) {
                int from = offsets[e], rows = offsets[e + 1] - from;
                if (rows > 0) Bias.forward(out.slice(0, from, rows), biases[e][last].value());
            }
        }
        return new Saved(first, second, third, out);
    }

    /** y = x·Wᵀ + b for expert e's linear i (under tp, the row-parallel last linear's bias is added after the sum). */
    private void linear(Tensor y, Tensor x, int e, int i) {
        if (tp.size() > 1 && i == weights[e].length - 1) {
            Gemm.matmul(y, x, weights[e][i].value(), false, true, 1f, 0f);
        } else if (bias) {
            Bias.broadcast(y, biases[e][i].value());
            Gemm.matmul(y, x, weights[e][i].value(), false, true, 1f, 1f);
        } else {
            Gemm.matmul(y, x, weights[e][i].value(), false, true, 1f, 0f);
        }
    }

    /**
     * Writes dxs [M, C] (rows of experts with no tokens stay as they were: none) and accumulates every expert's
     * gradients (queued on {@code weightQueue} when not null), from dys [M, C]; reads xs and {@code saved}.
     */
    void backward(StepArena arena, Tensor dxs, Tensor dys, Tensor xs, int[] offsets, Saved saved, WeightGradients weightQueue) {
        int m = xs.dim(0);
        Tensor dFirst = arena.allocate(xs.dtype(), m, hidden);    // zeroed: SwiGLU's kernel accumulates
        Tensor dSecond = arena.allocate(xs.dtype(), m, hidden);
        // one buffer for every expert's slice (per-expert sizes change with the routing; an arena reuses same sizes only)
        Tensor dHidden = swiGlu ? arena.allocateForOverwrite(xs.dtype(), m, hidden) : null;
        for (int e = 0; e < count(); e++) {
            int from = offsets[e], rows = offsets[e + 1] - from;
            if (rows == 0) continue;
            Tensor x = xs.slice(0, from, rows), dx = dxs.slice(0, from, rows), dy = dys.slice(0, from, rows);
            Tensor f = saved.first.slice(0, from, rows), s = saved.second.slice(0, from, rows);
            Tensor df = dFirst.slice(0, from, rows), ds = dSecond.slice(0, from, rows);
            if (swiGlu) {
                // y = h·W_downᵀ, h = silu(f) ∘ s, f = x·W_gateᵀ, s = x·W_upᵀ
                Tensor h = saved.third.slice(0, from, rows);
                Tensor dh = dHidden.slice(0, from, rows);
                linearBackward(dh, dy, h, e, 2, false, weightQueue);
                SwiGlu.backward(df, ds, dh, f, s);
                linearBackward(dx, df, x, e, 0, false, weightQueue);
                linearBackward(dx, ds, x, e, 1, true, weightQueue);
            } else {
                // y = GELU(f)·W_projᵀ, f = x·W_fcᵀ
                linearBackward(ds, dy, s, e, 1, false, weightQueue);
                Gelu.backwardInto(df, ds, f);
                linearBackward(dx, df, x, e, 0, false, weightQueue);
            }
        }
        // f of the column-parallel linears: each rank's dx is the partial sum over its hidden features
        if (tp.size() > 1 && offsets[count()] > 0) tp.allReduceSum(dxs.slice(0, 0, offsets[count()]));
    }

    /** dx = dy·W (or += with {@code add}); dW += dyᵀ·x and db += Σ dy, queued on {@code weightQueue}. */
    private void linearBackward(Tensor dx, Tensor dy, Tensor x, int e, int i, boolean add, WeightGradients weightQueue) {
        Parameter w = weights[e][i], b = biases[e][i];
        WeightGradients.defer(weightQueue, () -> {
            Gemm.matmul(w.grad(), dy, x, true, false, 1f, 1f);
            if (b != null) Bias.backward(b.grad(), dy);
        });
        Gemm.matmul(dx, dy, w.value(), false, false, 1f, add ? 1f : 0f);
    }
}
