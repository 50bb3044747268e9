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
 * xs [M, C], and each expert's GEMMs run over its contiguous rows only, so no token is padded or dropped. The work
 * is a list of {@link ExpertTiles}: forward and input-gradient tiles of up to {@value #ROW_TILE} rows of one expert,
 * weight-gradient tiles of up to {@value #WEIGHT_TILE} rows of one dW, each run whole on one thread, rather than each
 * small GEMM split over every thread with a barrier after it.
 * Each expert is a GELU MLP (fc C -> F_e, proj F_e -> C) or a SwiGLU (gate, up C -> F_e, down F_e -> C), named
 * {@code name.e.fc} and so on, ordinary parameters of the block's unit.
 *
 * <p>Under tensor parallelism (Shoeybi et al. 2019, applied to each expert as Megatron's expert tensor parallelism)
 * every expert keeps the tp split of its linears: fc (gate, up) column-parallel, proj (down) row-parallel, F_e/tp
 * hidden features per rank, the row-parallel bias whole. The rows are the same on every tp rank (the tokens are
 * replicated over tp), so forward all-reduces the experts' outputs [M, C] over the tp group before the bias and the
 * combine (which needs whole outputs for the gates' gradient), and backward all-reduces the input gradients [M, C]
 * (each rank's is a partial sum over its hidden features): two all-reduces of M·C elements per block and pass.
 * Under sequence parallelism (Korthikanti et al. 2022; {@link TensorParallel#sequenceParallel}) neither all-reduce
 * runs: out and dxs stay each rank's partial sums, tp rank 0's out holding the row-parallel bias, and
 * {@link MoeFeedForward} reduces them after its combine and scatter-add, by one reduce-scatter of [N, C] each way
 * (combine and scatter-add are linear in them; the gates' gradient, a dot product with out, is all-reduced there).
 */
final class GroupedExperts {
    private final boolean swiGlu;
    private final boolean bias;
    private final Parameter[][] weights;   // [E][3 (GELU: fc, proj) or 3 (SwiGLU: gate, up, down)]
    private final Parameter[][] biases;    // same, null entries without biases
    private final int hidden;              // F_e/tp: this rank's hidden features of each expert
    private final TensorParallel tp;
    private final boolean partial;         // sequence parallelism: out and dxs left as tp-partial sums

    /**
     * Most rows of one expert in a forward or input-gradient tile; an expert with more is cut into equal parts. Whole
     * experts run best: cutting moe-tiny's experts (~512 rows) into tiles of 256 rows cost ~6% of the block's
     * single-thread time (smaller GEMMs, the weights packed once per tile), while 1024 still cuts the shared
     * experts' 2048 rows in two, so the tiles stay small enough to balance two threads.
     */
    static final int ROW_TILE = 1024;
    /** Most rows of one weight gradient per tile (whole matrices of moe-tiny's sizes, which ran best). */
    static final int WEIGHT_TILE = 512;

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
        this.partial = tp.size() > 1 && tp.sequenceParallel();
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
        ExpertTiles tiles = new ExpertTiles();
        Saved saved = forwardTiles(arena, xs, offsets, tiles, null);
        tiles.run();
        finishForward(saved, offsets);
        return saved;
    }

    /**
     * Work a tile does on its own rows before its products, on its thread: filling its rows of the input (a fused
     * dispatch or combine backward), so the rows are in cache when the first product reads them and no separate pass
     * over the pool is needed.
     */
    interface RowPrologue {
        /** Prepares rows [at, at + rows). */
        void prepare(int at, int rows);
    }

    /**
     * The first half of {@link #forward}: allocates what forward saves and adds its tiles (an expert's block of at
     * most {@value #ROW_TILE} rows through the whole MLP) to {@code tiles}, each first running {@code prologue} (when not
     * null) over its rows of xs. Run the tiles, then {@link #finishForward}.
     */
    Saved forwardTiles(StepArena arena, Tensor xs, int[] offsets, ExpertTiles tiles, RowPrologue prologue) {
        int m = xs.dim(0), c = xs.dim(1);
        // row blocks: under expert parallelism M is the rows routed to this rank, which change from step to step
        Tensor first = arena.allocateRowsForOverwrite(xs.dtype(), m, hidden);
        Tensor second = arena.allocateRowsForOverwrite(xs.dtype(), m, hidden);
        Tensor third = swiGlu ? arena.allocateRowsForOverwrite(xs.dtype(), m, hidden) : null;
        Tensor out = arena.allocateRowsForOverwrite(xs.dtype(), m, c);
        Saved saved = new Saved(first, second, third, out);
        addRowTiles(offsets, (long) hidden * c * weights[0].length, tiles, (expert, at, rows) -> () -> {
            if (prologue != null) prologue.prepare(at, rows);
            forwardRows(expert, at, rows, xs, saved);
        });
        return saved;
    }

    /** Rows [from, from + rows) of expert e's forward, on this thread. */
    private void forwardRows(int e, int from, int rows, Tensor xs, Saved saved) {
        Tensor x = xs.slice(0, from, rows), f = saved.first.slice(0, from, rows), s = saved.second.slice(0, from, rows);
        Tensor y = saved.out.slice(0, from, rows);
        if (swiGlu) {
            Tensor h = saved.third.slice(0, from, rows);
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

    /**
     * The second half of {@link #forward}, after its tiles ran: under tp, the all-reduce of out and the last bias;
     * under sequence parallelism no all-reduce, and the bias on tp rank 0 only (so the ranks' partial outs sum to it once).
     */
    void finishForward(Saved saved, int[] offsets) {
        if (partial && tp.tpRank() != 0) return;
        if (tp.size() > 1) {   // g of the row-parallel linear: sum the partial outputs, then add the whole bias once
            int used = offsets[count()];
            if (used > 0 && !partial) tp.allReduceSum(saved.out.slice(0, 0, used));
            int last = weights[0].length - 1;
            for (int e = 0; bias && e < count(); e++) {
                int from = offsets[e], rows = offsets[e + 1] - from;
                if (rows > 0) Bias.forward(saved.out.slice(0, from, rows), biases[e][last].value());
            }
        }
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
     * The gradients of the hidden features that the weight-gradient tiles read, over M rows: GELU: d(pre-activation)
     * [M, F_e] in {@code first}, {@code second} null; SwiGLU: d(gate) and d(up) [M, F_e].
     */
    record Hidden(Tensor first, Tensor second) { }

    /**
     * Writes dxs [M, C] (rows of experts with no tokens stay as they were: none) and accumulates every expert's
     * gradients (queued on {@code weightQueue} when not null), from dys [M, C]; reads xs and {@code saved}.
     */
    void backward(StepArena arena, Tensor dxs, Tensor dys, Tensor xs, int[] offsets, Saved saved, WeightGradients weightQueue) {
        ExpertTiles tiles = new ExpertTiles();
        Hidden hidden = backwardTiles(arena, dxs, dys, xs, offsets, saved, tiles, null);
        tiles.run();
        finishBackward(dxs, offsets);
        WeightGradients.defer(weightQueue, () -> {
            ExpertTiles weightTiles = new ExpertTiles();
            weightTiles(weightTiles, hidden, dys, xs, offsets, saved);
            weightTiles.run();
        });
    }

    /**
     * The input-gradient half of {@link #backward}: adds its tiles (an expert's block of at most {@value #ROW_TILE}
     * rows back through the MLP, dys -> dxs) to {@code tiles}, each first running {@code prologue} (when not null) over
     * its rows of dys, and returns the buffers they fill for {@link #weightTiles}. Run the tiles, then
     * {@link #finishBackward}.
     */
    Hidden backwardTiles(StepArena arena, Tensor dxs, Tensor dys, Tensor xs, int[] offsets, Saved saved, ExpertTiles tiles,
                         RowPrologue prologue) {
        int m = xs.dim(0), c = xs.dim(1);
        // GELU: dy·W_proj, then GELU's backward in place; SwiGLU: dh = dy·W_down, and d(gate), d(up) zeroed (its kernel
        // accumulates)
        Tensor dFirst = swiGlu ? arena.allocateRows(xs.dtype(), m, hidden) : arena.allocateRowsForOverwrite(xs.dtype(), m, hidden);
        Tensor dSecond = swiGlu ? arena.allocateRows(xs.dtype(), m, hidden) : null;
        Tensor dHidden = swiGlu ? arena.allocateRowsForOverwrite(xs.dtype(), m, hidden) : null;
        addRowTiles(offsets, (long) hidden * c * weights[0].length, tiles, (expert, at, rows) -> () -> {
            if (prologue != null) prologue.prepare(at, rows);
            Tensor dx = dxs.slice(0, at, rows), dy = dys.slice(0, at, rows), f = saved.first.slice(0, at, rows);
            Tensor df = dFirst.slice(0, at, rows);
            if (swiGlu) {
                // y = h·W_downᵀ, h = silu(f) ∘ s, f = x·W_gateᵀ, s = x·W_upᵀ
                Tensor ds = dSecond.slice(0, at, rows), dh = dHidden.slice(0, at, rows);
                Gemm.matmul(dh, dy, weights[expert][2].value(), false, false, 1f, 0f);
                SwiGlu.backward(df, ds, dh, f, saved.second.slice(0, at, rows));
                Gemm.matmul(dx, df, weights[expert][0].value(), false, false, 1f, 0f);
                Gemm.matmul(dx, ds, weights[expert][1].value(), false, false, 1f, 1f);
            } else {
                // y = GELU(f)·W_projᵀ, f = x·W_fcᵀ
                Gemm.matmul(df, dy, weights[expert][1].value(), false, false, 1f, 0f);
                Gelu.backwardInto(df, df, f);
                Gemm.matmul(dx, df, weights[expert][0].value(), false, false, 1f, 0f);
            }
        });
        return new Hidden(dFirst, dSecond);
    }

    /** The work of rows [at, at + rows) of expert {@code expert}. */
    private interface RowBlock {
        Runnable of(int expert, int at, int rows);
    }

    /** Adds to {@code tiles} each expert's rows of {@code offsets} in equal blocks of at most {@value #ROW_TILE}, each costing rows·perRow. */
    private void addRowTiles(int[] offsets, long perRow, ExpertTiles tiles, RowBlock block) {
        for (int e = 0; e < count(); e++) {
            int all = offsets[e + 1] - offsets[e], parts = (all + ROW_TILE - 1) / ROW_TILE;
            for (int part = 0; part < parts; part++) {
                int at = offsets[e] + (int) ((long) all * part / parts), rows = offsets[e] + (int) ((long) all * (part + 1) / parts) - at;
                tiles.add(rows * perRow, block.of(e, at, rows));
            }
        }
    }

    /**
     * After {@link #backwardTiles}' tiles ran: f of the column-parallel linears, under tp (not under sequence
     * parallelism, whose caller reduces the partial dxs after its scatter-add).
     */
    void finishBackward(Tensor dxs, int[] offsets) {
        // each rank's dx is the partial sum over its hidden features
        if (tp.size() > 1 && !partial && offsets[count()] > 0) tp.allReduceSum(dxs.slice(0, 0, offsets[count()]));
    }

    /**
     * The weight-gradient half of {@link #backward}: adds tiles that accumulate dW += dyᵀ·x (and db += Σ dy) of
     * every expert's linears, {@value #WEIGHT_TILE} rows of one dW per tile, over all of the expert's rows; reads
     * dys, xs, {@code saved} and what {@link #backwardTiles}' tiles wrote to {@code hidden}.
     */
    void weightTiles(ExpertTiles tiles, Hidden hidden, Tensor dys, Tensor xs, int[] offsets, Saved saved) {
        for (int e = 0; e < count(); e++) {
            int from = offsets[e], rows = offsets[e + 1] - from;
            if (rows == 0) continue;
            Tensor x = xs.slice(0, from, rows), dy = dys.slice(0, from, rows);
            Tensor df = hidden.first.slice(0, from, rows);
            if (swiGlu) {
                weightTiles(tiles, e, 0, df, x);
                weightTiles(tiles, e, 1, hidden.second.slice(0, from, rows), x);
                weightTiles(tiles, e, 2, dy, saved.third.slice(0, from, rows));
            } else {
                weightTiles(tiles, e, 0, df, x);
                weightTiles(tiles, e, 1, dy, saved.second.slice(0, from, rows));
            }
        }
    }

    /** dW_{e,i} += dyᵀ·x in blocks of {@value #WEIGHT_TILE} rows of W; db_{e,i} += Σ dy with the first block. */
    private void weightTiles(ExpertTiles tiles, int e, int i, Tensor dy, Tensor x) {
        Parameter w = weights[e][i], b = biases[e][i];
        int out = dy.dim(1), rows = dy.dim(0), in = x.dim(1);
        for (int lo = 0; lo < out; lo += WEIGHT_TILE) {
            int at = lo, len = Math.min(WEIGHT_TILE, out - lo);
            tiles.add((long) rows * len * in, () -> {
                Gemm.matmul(w.grad().slice(0, at, len), dy.slice(1, at, len), x, true, false, 1f, 1f);
                if (b != null && at == 0) Bias.backward(b.grad(), dy);
            });
        }
    }
}
