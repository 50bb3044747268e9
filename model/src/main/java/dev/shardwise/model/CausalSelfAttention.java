package dev.shardwise.model;

import dev.shardwise.core.kernels.Attention;
import dev.shardwise.core.kernels.CachedAttention;
import dev.shardwise.core.kernels.Rotary;
import dev.shardwise.core.memory.StepArena;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;

/**
 * Causal multi-head self-attention (Vaswani et al. 2017) with grouped-query heads (Ainslie et al. 2023) and
 * optional rotary positions (Su et al. 2021): qkv = x·W_qkvᵀ, q and k rotated by position when RoPE is on,
 * o = softmax(q·kᵀ/√HS + causal mask)·v per head, y = o·W_oᵀ. The attention kernel never materialises the
 * T×T scores (FlashAttention); backward recomputes them from the saved log-sum-exp. Under selective recompute
 * (Korthikanti et al. 2022) forward drops the core's output and log-sum-exp too, and backward runs the core's
 * forward once more from the saved q, k and v before its own work.
 *
 * <p>Tensor parallelism (Shoeybi et al. 2019, parallel attention heads): rank r of tp holds query heads
 * [r·NH/tp, (r+1)·NH/tp) and kv heads [r·NKV/tp, (r+1)·NKV/tp) (under GQA query head h reads kv head h/(NH/NKV),
 * so a rank's query heads read exactly its kv heads): the fused qkv is {@linkplain ColumnParallelLinear
 * column-parallel} (its q, k and v rows of those heads), the attention core runs on the local heads only, and the
 * output projection is {@linkplain RowParallelLinear row-parallel}. Communication per layer: forward one all-reduce
 * of y [N, C] (g, in the projection); backward one all-reduce of dx [N, C] (f's backward, after qkv's backward);
 * 2·(tp-1)/tp·N·C elements per rank each. Shapes below are local: NH and NKV stand for NH/tp and NKV/tp.
 *
 * <p>Fewer kv heads than ranks (kvHeads &lt; tp, tp a multiple of kvHeads; Megatron's replicated query groups): each
 * rank holds the one kv head its query heads read, kv head r / (tp/NKV), so tp/NKV consecutive ranks hold the same k
 * and v rows of W_qkv (the slice's {@linkplain ParameterSet.Slice#replicas replicas}) and compute the same k and v.
 * Each of them back-propagates only its own query heads' part of dk and dv: dx still comes out right (f's all-reduce
 * sums every rank's part), and the update sums the replicated rows' dW over the ranks sharing them
 * ({@code TensorParallelGradients}), so the copies stay equal.
 *
 * <p>Sequence parallelism (Korthikanti et al. 2022): x and y are this rank's sequence shard [B·T/tp, C]; x is
 * all-gathered along the sequence before qkv (and again in backward, for dW_qkv: only the shard is kept) and y is
 * reduce-scattered after the projection, in place of the two all-reduces ({@link ColumnParallelInput},
 * {@link RowParallelLinear}); the core between them runs on whole sequences as before.
 */
final class CausalSelfAttention implements Layer<CausalSelfAttention.Saved> {
    private final ColumnParallelLinear qkv;   // C -> (NH + 2·NKV)·HS/tp
    private final RowParallelLinear proj;     // NH·HS/tp -> C
    private final ColumnParallelInput input;
    private final int heads;                  // this rank's query heads, NH/tp
    private final int kvHeads;                // this rank's kv heads, NKV/tp
    private final int headSize;
    private final boolean rotary;
    private final boolean recomputeCore;
    private final ParameterSet params;        // whose precision keeps qkv and att

    /**
     * What backward reads.
     *
     * @param qkv     fused projections [B·T, (NH + 2·NKV)·HS], q and k rotated by RoPE when it is on (bf16 under bf16
     *                precision)
     * @param att     attention output before the projection [B·T, NH·HS] (bf16 under bf16), or null when recomputed
     * @param lse     log-sum-exp of each query's scores [B, NH, T], or null when it is recomputed
     * @param out     the layer's output y [B·T, C] (under bf16 in a staging buffer: read it before the next layer runs)
     */
    record Saved(Tensor qkv, Tensor att, Tensor lse, Tensor out) implements Layer.Saved { }

    static void declare(ParameterSet.Builder builder, String name, ModelConfig config, TensorParallel tp) {
        int c = config.hidden(), hs = config.headSize(), qk = (config.heads() + config.kvHeads()) * hs;
        tp.divide(config.heads(), "heads", "model.heads, the attention heads");
        int kvPieces = kvPieces(config, tp);
        // q and k rows at the standard scale; v rows at DeepNet's β when DeepNorm is on (global rows: the init
        // is generated for the whole tensor and sliced).
        ColumnParallelLinear.declare(builder, name + ".qkv", c,
                new int[]{config.heads() * hs, config.kvHeads() * hs, config.kvHeads() * hs}, new int[]{tp.size(), kvPieces, kvPieces},
                new ParameterSet.Init.SplitNormal(GptInit.STD, qk, GptInit.branchInput(config)), config.bias(), tp,
                "qkv rows", "the fused qkv projection's q, k and v sections");
        RowParallelLinear.declare(builder, name + ".proj", config.heads() * hs, c, config.bias(),
                GptInit.residualProjection(config), tp, "heads·headSize", "the attention projection's input features");
    }

    /**
     * Into how many pieces the kv heads are cut: tp when tp divides kvHeads (each rank its NKV/tp heads), kvHeads when
     * kvHeads divides tp (one kv head per rank, each held by tp/kvHeads ranks).
     *
     * @throws IllegalArgumentException naming tp, kvHeads and the tp values that work, if neither divides the other
     */
    static int kvPieces(ModelConfig config, TensorParallel tp) {
        int nkv = config.kvHeads(), size = tp.size();
        if (nkv % size == 0) return size;
        if (size % nkv == 0) return nkv;
        StringBuilder ok = new StringBuilder();
        for (int d = 1; d <= config.heads(); d++) {
            if (config.heads() % d == 0 && (nkv % d == 0 || d % nkv == 0)) ok.append(ok.isEmpty() ? "" : ", ").append(d);
        }
        throw new IllegalArgumentException("tp=" + size + " neither divides kvHeads=" + nkv + " (model.kvHeads, the key/value "
                + "heads) nor is a multiple of it, so the kv heads can be neither split nor replicated evenly over the tp ranks; "
                + "use tp in {" + ok + "}");
    }

    /**
     * @param recomputeCore whether forward drops the attention core's output att and log-sum-exp lse and
     *                      backward recomputes them from the saved q, k and v ({@link Recompute#SELECTIVE})
     */
    CausalSelfAttention(ParameterSet params, String name, ModelConfig config, boolean recomputeCore, TensorParallel tp) {
        this.input = new ColumnParallelInput(tp);
        this.qkv = new ColumnParallelLinear(params, name + ".qkv", config.bias());
        this.proj = new RowParallelLinear(params, name + ".proj", config.bias(), tp);
        this.heads = tp.divide(config.heads(), "heads", "model.heads, the attention heads");
        this.kvHeads = config.kvHeads() / kvPieces(config, tp);
        this.headSize = config.headSize();
        this.rotary = config.positions() == ModelConfig.Positions.ROTARY;
        this.recomputeCore = recomputeCore;
        this.params = params;
    }

    /**
     * x [B·T, C] -> y [B·T, C] (both [B·T/tp, C] under sequence parallelism), returned inside what backward needs.
     * When the core is recomputed, att and lse live in a scratch arena that is closed before forward returns.
     */
    @Override
    public Saved forward(StepArena arena, Tensor x, Rows rows) {
        // q and k are rotated in place before qkv is kept: backward reads only the rotated q and k. Under bf16 qkv and
        // att are kept in bf16 (the core runs on the rounded qkv, the values its backward reads); their fp32 forms and
        // the output live in the precision's staging buffers. Under sequence parallelism the input is gathered whole
        // first and the output is this rank's sequence shard.
        MatmulPrecision precision = params.precision();
        DType dtype = Linear.outputType(x);
        int b = rows.b(), t = rows.t(), width = (heads + 2 * kvHeads) * headSize;
        Tensor staged;                                                               // [B·T, (NH+2NKV)·HS]
        try (StepArena scratch = new StepArena(arena.pool())) {   // the gathered input, under sequence parallelism
            staged = qkv.forwardInto(precision.staging(arena, 0, dtype, b * t, width), input.whole(scratch, x, b));
        }
        rotate(staged, b, t, 0);
        Tensor fused = precision.keep(arena, staged);
        Tensor wide = precision.asKept(staged, fused);
        if (!recomputeCore) {
            Tensor att = precision.staging(arena, 1, dtype, b * t, heads * headSize);
            Core core = core(arena, att, wide, b, t);
            Tensor keptAtt = precision.keep(arena, core.att);   // proj's input and Attention.backward's out
            Tensor out = input.sharded() ? proj.forward(arena, keptAtt, b)
                    : proj.forwardInto(precision.staging(arena, 0, dtype, b * t, x.dim(1)), keptAtt);
            return new Saved(fused, keptAtt, core.lse, out);
        }
        try (StepArena scratch = new StepArena(arena.pool())) {
            Core core = core(scratch, scratch.allocateForOverwrite(dtype, b * t, heads * headSize), wide, b, t);
            return new Saved(fused, null, null, proj.forward(arena, core.att, b));
        }
    }

    /** Rotates q and k of the fused [B·T, (NH+2NKV)·HS] in place by RoPE at positions offset.. (when it is on). */
    private void rotate(Tensor fused, int b, int t, int offset) {
        if (!rotary) return;
        Rotary.forward(q(fused, b, t), q(fused, b, t), offset);
        Rotary.forward(k(fused, b, t), k(fused, b, t), offset);
    }

    /**
     * Decoding with a key/value cache (inference only): x [T, C], the new rows of one sequence at positions
     * offset .. offset+T-1, -> y [T, C]. Computes q, k and v of the new rows as forward does (the same qkv product,
     * RoPE at their absolute positions, the precision's rounding), writes k and v at those positions of block
     * {@code layer}'s cache, attends each new row over cache positions [0, offset + its index] ({@link CachedAttention},
     * query head h reading kv head h/(NH/NKV) as in training), then the output projection. Whole heads only (tp 1).
     * Returns what forward would, without the log-sum-exp: nothing runs backward from it.
     */
    Saved decode(StepArena arena, Tensor x, KvCache cache, int layer, int offset) {
        MatmulPrecision precision = params.precision();
        DType dtype = Linear.outputType(x);
        int t = x.dim(0), width = (heads + 2 * kvHeads) * headSize;
        Tensor staged = qkv.forwardInto(precision.staging(arena, 0, dtype, t, width), x);
        rotate(staged, 1, t, offset);
        Tensor fused = precision.keep(arena, staged);
        Tensor wide = precision.asKept(staged, fused);
        cache.write(layer, offset, k(wide, 1, t).select(0, 0), v(wide, 1, t).select(0, 0));
        Tensor att = precision.staging(arena, 1, dtype, t, heads * headSize);
        CachedAttention.forward(att.view(t, heads, headSize), q(wide, 1, t).select(0, 0), cache.keys(layer, offset + t),
                cache.values(layer, offset + t), offset, scale());
        Tensor keptAtt = precision.keep(arena, att);
        Tensor out = proj.forwardInto(precision.staging(arena, 0, dtype, t, x.dim(1)), keptAtt);
        return new Saved(fused, keptAtt, null, out);
    }

    /** The attention core's output: att [B·T, NH·HS] and lse [B, NH, T]. */
    private record Core(Tensor att, Tensor lse) { }

    /**
     * The attention core, o = softmax(q·kᵀ/√HS + causal mask)·v per head: writes att [B·T, NH·HS] (not read) and
     * lse [B, NH, T], allocated in {@code arena}, from the f32 fused projections (q and k rotated when RoPE is on).
     */
    private Core core(StepArena arena, Tensor att, Tensor fused, int b, int t) {
        Tensor lse = arena.allocateForOverwrite(fused.dtype(), b, heads, t);              // [B, NH, T]
        Attention.forward(att.view(b, t, heads, headSize), lse, q(fused, b, t), k(fused, b, t), v(fused, b, t), scale());
        return new Core(att, lse);
    }

    /**
     * Writes dx [B·T, C] and accumulates the parameter gradients from dy [B·T, C]; reads qkv, att and
     * lse (recomputing att and lse first when forward dropped them: in a scratch arena that also holds this
     * backward's temporaries and is closed before returning, or, when {@code weights} is not null, in
     * {@code arena}, since the queued dW_o and dW_qkv read att and dqkv).
     */
    @Override
    public void backward(StepArena arena, Tensor dx, Tensor dy, Tensor x, Rows rows, Saved saved, WeightGradients weights) {
        if (saved.att != null) {
            backward(arena, dx, dy, x, rows, saved, new Core(saved.att, saved.lse), weights);
            return;
        }
        if (weights != null) {
            backward(arena, dx, dy, x, rows, saved, recomputedCore(arena, saved, rows), weights);   // the same kernel on the same q, k, v
            return;
        }
        try (StepArena scratch = new StepArena(arena.pool())) {
            backward(scratch, dx, dy, x, rows, saved, recomputedCore(scratch, saved, rows), null);
        }
    }

    /** att and lse again, in {@code arena}, from the saved qkv (widened to f32 in staging slot 0 under bf16). */
    private Core recomputedCore(StepArena arena, Saved saved, Rows rows) {
        Tensor fused = params.precision().widen(0, saved.qkv);
        Tensor att = arena.allocateForOverwrite(fused.dtype(), rows.n(), heads * headSize);
        return core(arena, att, fused, rows.b(), rows.t());
    }

    private void backward(StepArena arena, Tensor dx, Tensor dy, Tensor x, Rows rows, Saved saved, Core core,
                          WeightGradients weights) {
        int b = rows.b(), t = rows.t();
        MatmulPrecision precision = params.precision();
        Tensor datt = arena.allocateForOverwrite(dy.dtype(), b * t, heads * headSize);
        proj.backward(arena, datt, dy, core.att, b, weights);   // dW_o reads att as kept (bf16 under bf16)
        Tensor att = precision.widen(1, core.att), fused = precision.widen(0, saved.qkv);   // staging under bf16
        Tensor dfused = arena.allocate(dy.dtype(), saved.qkv.shape());   // zeroed: the attention kernel accumulates
        Tensor dq = q(dfused, b, t), dk = k(dfused, b, t);
        if (rotary) {   // the kernel's dq and dk are the rotated q's and k's: a tensor of their own, rotated back below
            Tensor drotated = arena.allocate(dy.dtype(), b, t, heads + kvHeads, headSize);
            dq = drotated.slice(2, 0, heads);
            dk = drotated.slice(2, heads, kvHeads);
        }
        Attention.backward(dq, dk, v(dfused, b, t), datt.view(b, t, heads, headSize), att.view(b, t, heads, headSize),
                core.lse, q(fused, b, t), k(fused, b, t), v(fused, b, t), scale());
        if (rotary) {
            // q_rot = R·q: dq = Rᵀ·dq_rot (the rotation by the opposite angle)
            Rotary.backward(q(dfused, b, t), dq, 0);
            Rotary.backward(k(dfused, b, t), dk, 0);
        }
        Tensor dwhole = input.gradientBuffer(arena, dx);
        qkv.backward(dwhole, dfused, input.whole(arena, x, b), weights);
        input.reduceGradient(dx, dwhole, b);
    }

    private double scale() {
        return 1.0 / Math.sqrt(headSize);
    }

    // Views of the fused [B·T, (NH + 2·NKV)·HS] tensor as q [B, T, NH, HS], k and v [B, T, NKV, HS].
    private Tensor heads(Tensor fused, int b, int t) {
        return fused.view(b, t, heads + 2 * kvHeads, headSize);
    }

    private Tensor q(Tensor fused, int b, int t) {
        return heads(fused, b, t).slice(2, 0, heads);
    }

    private Tensor k(Tensor fused, int b, int t) {
        return heads(fused, b, t).slice(2, heads, kvHeads);
    }

    private Tensor v(Tensor fused, int b, int t) {
        return heads(fused, b, t).slice(2, heads + kvHeads, kvHeads);
    }
}
