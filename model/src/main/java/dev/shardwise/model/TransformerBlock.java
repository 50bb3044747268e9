package dev.shardwise.model;

import dev.shardwise.core.kernels.Vectors;
import dev.shardwise.core.memory.StepArena;
import dev.shardwise.core.tensor.Tensor;

import java.util.Objects;

/**
 * A transformer block: an attention branch and a feed-forward branch, each around a residual connection, with
 * the norms placed as {@link ModelConfig.Residual} says:
 * <pre>
 *   PRE_LN    x1 = x + A(N1(x))          y = x1 + F(N2(x1))            (GPT-2, LLaMA)
 *   POST_LN   x1 = N1(x + A(x))          y = N2(x1 + F(x1))            (Transformer, BERT)
 *   DEEPNORM  x1 = N1(α·x + A(x))        y = N2(α·x1 + F(x1))          (DeepNet, α = (2L)^(1/4))
 * </pre>
 *
 * <p>Its {@link Recompute} policy says what forward keeps in the arena for backward: {@code NONE} everything
 * backward reads ({@link Kept}); {@code SELECTIVE} the same less the attention core's output and log-sum-exp,
 * which backward recomputes from the saved q, k and v (Korthikanti et al. 2022); {@code FULL} only the output y
 * ({@link Dropped}): backward runs the whole forward again from x into a scratch arena, then the usual backward
 * there, and closes it (Chen et al. 2016). Every policy gives bit-identical dx and parameter gradients: the
 * recompute runs the same kernels on the same inputs. {@link ActivationMemory#blockBytes} counts what each keeps.
 */
final class TransformerBlock implements Layer<TransformerBlock.Saved> {
    private final Norm norm1;
    private final CausalSelfAttention attention;
    private final Norm norm2;
    private final FeedForward feedForward;
    private final boolean preNorm;
    private final double alpha;
    private final Recompute policy;
    private final ParameterSet params;   // whose precision keeps the branches' matmul inputs
    private final int layer;             // the block's index in the model (-1: a block built on its own)
    private FeedForwardSubstitute substitute;   // null: the block's own feed-forward

    /** What a block's forward leaves for its backward: everything ({@link Kept}) or the output alone ({@link Dropped}). */
    sealed interface Saved extends Layer.Saved permits Kept, Dropped { }

    /**
     * Everything backward reads (x, the block input, is kept by the caller). Pre-LN: n1 = N1(x), sum1 = x1,
     * n2 = N2(x1), sum2 = y. Post-LN and DeepNorm: sum1 = α·x + A(x), n1 = N1(sum1) = x1, sum2 = α·x1 + F(x1),
     * n2 = N2(sum2) = y.
     *
     * @param x1  residual stream between the two branches [N, C] (pre-LN under bf16: its bf16 rounding, N2's backward
     *            being its only reader here)
     * @param out block output y [N, C]
     */
    record Kept(Norm.Saved n1, CausalSelfAttention.Saved attention, Tensor sum1, Tensor x1,
                Norm.Saved n2, Layer.Saved feedForward, Tensor sum2, Tensor out) implements Saved { }

    /**
     * Under {@link Recompute#FULL}: the block output alone; backward recomputes the rest from x.
     *
     * @param out block output y [N, C]
     */
    record Dropped(Tensor out) implements Saved { }

    /**
     * What a {@link FeedForwardSubstitute} leaves: its output alone (it runs forward only).
     *
     * @param out the branch's output y [N, C]
     */
    record Substituted(Tensor out) implements Layer.Saved { }

    static void declare(ParameterSet.Builder builder, String name, ModelConfig config) {
        declare(builder, name, config, TensorParallel.NONE);
    }

    /** Declares rank {@code tp.tpRank()}'s slices of the block (norms whole, replicated over tp). */
    static void declare(ParameterSet.Builder builder, String name, ModelConfig config, TensorParallel tp) {
        declare(builder, name, config, tp, -1, ExpertParallel.NONE);
    }

    /**
     * As above for block {@code layer} of the model, whose feed-forward is a mixture of experts if the config says so
     * (then holding rank {@code ep.epRank()}'s experts).
     */
    static void declare(ParameterSet.Builder builder, String name, ModelConfig config, TensorParallel tp, int layer,
                        ExpertParallel ep) {
        Norm.declare(builder, name + ".ln1", config, tp);
        CausalSelfAttention.declare(builder, name + ".attn", config, tp);
        Norm.declare(builder, name + ".ln2", config, tp);
        FeedForward.declare(builder, name + ".mlp", config, tp, layer, ep);
    }

    /** The block over the parameters declared under {@code name}, keeping what {@code policy} says. */
    TransformerBlock(ParameterSet params, String name, ModelConfig config, Recompute policy) {
        this(params, name, config, policy, TensorParallel.NONE);
    }

    /**
     * As above, tensor-parallel over {@code tp} (Shoeybi et al. 2019): attention heads and MLP features split, norms
     * and the residual stream replicated; two all-reduces of [B·T, C] forward and two backward per block. Under
     * sequence parallelism ({@link TensorParallel#sequenceParallel}, Korthikanti et al. 2022) the block's input,
     * output, norms and residual sums are this rank's sequence shard [B·T/tp, C] instead, and each branch all-gathers
     * its input and reduce-scatters its output: per block two all-gathers and two reduce-scatters of [B·T, C] forward,
     * and (with the gathers repeated for the dW's) four all-gathers and two reduce-scatters backward.
     */
    TransformerBlock(ParameterSet params, String name, ModelConfig config, Recompute policy, TensorParallel tp) {
        this(params, name, config, policy, tp, -1, null);
    }

    /** As above for block {@code layer} of the model; an MoE feed-forward shares {@code moe} with the part. */
    TransformerBlock(ParameterSet params, String name, ModelConfig config, Recompute policy, TensorParallel tp, int layer,
                     MoeRun moe) {
        this.policy = Objects.requireNonNull(policy, "policy");
        this.norm1 = Norm.create(params, name + ".ln1", config);
        this.attention = new CausalSelfAttention(params, name + ".attn", config, policy == Recompute.SELECTIVE, tp);
        this.norm2 = Norm.create(params, name + ".ln2", config);
        this.feedForward = FeedForward.create(params, name + ".mlp", config, tp, layer, moe);
        this.preNorm = config.residual() == ModelConfig.Residual.PRE_LN;
        this.alpha = GptInit.residualAlpha(config);
        this.params = params;
        this.layer = layer;
    }

    /** Makes later forwards run {@code substitute} instead of the block's feed-forward (null: its own again). */
    void substituteFeedForward(FeedForwardSubstitute substitute) {
        this.substitute = substitute;
    }

    /** The feed-forward branch on its input x [N, C]: the block's own, or the substitute when one is installed. */
    private Layer.Saved feedForward(StepArena arena, Tensor x, Rows rows) {
        if (substitute == null) return feedForward.forward(arena, x, rows);
        return new Substituted(substitute.forward(arena, layer, x));
    }

    /** x [B·T, C] -> y [B·T, C]: {@link #forward(StepArena, Tensor, Rows)} over B·T rows. */
    Saved forward(StepArena arena, Tensor x, int b, int t) {
        return forward(arena, x, Rows.of(b, t));
    }

    /**
     * x [B·T, C] -> y [B·T, C], returned inside what backward needs. Under {@link Recompute#FULL} only y is
     * allocated in {@code arena}; the block's other activations live in a scratch arena closed before returning.
     */
    @Override
    public Saved forward(StepArena arena, Tensor x, Rows rows) {
        if (policy != Recompute.FULL) return run(arena, arena, x, rows, attention::forward);
        try (StepArena scratch = new StepArena(arena.pool())) {
            return new Dropped(run(scratch, arena, x, rows, attention::forward).out());
        }
    }

    /** The attention branch of a block's forward: x [N, C] (its normed input under pre-LN) -> what it keeps and y. */
    private interface AttentionBranch {
        CausalSelfAttention.Saved run(StepArena arena, Tensor x, Rows rows);
    }

    /**
     * Decoding with a key/value cache (inference): x [T, C], the new rows of one sequence at positions offset ..
     * offset+T-1, -> y [T, C] in {@code arena}. The block's forward with its attention reading and extending
     * {@code cache} ({@link CausalSelfAttention#decode}); norms, residuals and the feed-forward branch (MLP, SwiGLU,
     * mixture of experts, or a substitute) run the training code on the new rows.
     */
    Tensor decode(StepArena arena, Tensor x, KvCache cache, int offset) {
        return run(arena, arena, x, Rows.of(1, x.dim(0)), (a, n, r) -> attention.decode(a, n, cache, layer, offset)).out();
    }

    /**
     * The block's forward with {@code attend} as its attention branch (the layer's forward, or its cached decode): every
     * activation in {@code arena} except y, which goes in {@code outArena}.
     */
    private Kept run(StepArena arena, StepArena outArena, Tensor x, Rows rows, AttentionBranch attend) {
        if (preNorm) {
            MatmulPrecision precision = params.precision();
            Norm.Saved n1 = normForMatmul(arena, norm1, x, 0);
            CausalSelfAttention.Saved a = attend.run(arena, n1.out(), rows);
            // x1 = x + A(·) in fp32 (in the arena, or under bf16 in staging slot 2, read again for y below); N2's only
            // other reader, its backward, gets x1 as the precision keeps it (bf16 under bf16, as Megatron's bf16 recipe
            // keeps a norm's input), and N2's forward reads those same values, so its statistics are of what backward reads
            Tensor x1 = residual(precision.staging(arena, 2, x.dtype(), x.shape()), x, a.out());
            Tensor keptX1 = precision.keep(arena, x1);
            Norm.Saved n2 = normForMatmul(arena, norm2, precision.widen(0, keptX1), 1);
            Layer.Saved f = feedForward(arena, n2.out(), rows);
            Tensor y = residual(outArena.allocateForOverwrite(x1.dtype(), x1.shape()), x1, f.out());
            return new Kept(n1, a, keptX1, keptX1, n2, f, y, y);
        }
        CausalSelfAttention.Saved a = attend.run(arena, x, rows);
        Tensor sum1 = residual(arena.allocateForOverwrite(x.dtype(), x.shape()), x, a.out());
        Norm.Saved n1 = norm1.forward(arena, sum1);
        Layer.Saved f = feedForward(arena, n1.out(), rows);
        Tensor sum2 = residual(arena.allocateForOverwrite(x.dtype(), x.shape()), n1.out(), f.out());
        Norm.Saved n2 = norm2.forwardInto(arena, sum2, outArena.allocateForOverwrite(sum2.dtype(), sum2.shape()));
        return new Kept(n1, a, sum1, n1.out(), n2, f, sum2, n2.out());
    }

    /**
     * N(x) for a pre-LN branch, whose only reader of N(x) is the branch's first product: computed in x's dtype (into
     * staging slot {@code slot}, which x must not be in), kept as the set's precision keeps a matmul input (bf16 under
     * bf16; the norm's backward reads x and its statistics, never its output).
     */
    private Norm.Saved normForMatmul(StepArena arena, Norm norm, Tensor x, int slot) {
        MatmulPrecision precision = params.precision();
        Norm.Saved s = norm.forwardInto(arena, x, precision.staging(arena, slot, x.dtype(), x.shape()));
        Tensor kept = precision.keep(arena, s.out());
        return kept == s.out() ? s : new Norm.Saved(kept, s.mean(), s.rstd());
    }

    /** out = α·stream + branch (out is not read); returns out. */
    private Tensor residual(Tensor out, Tensor stream, Tensor branch) {
        if (alpha == 1.0) {
            Vectors.add(out, stream, branch);
        } else {
            Vectors.copy(out, branch);
            Vectors.axpy(out, stream, alpha);
        }
        return out;
    }

    /** {@link #backward(StepArena, Tensor, Tensor, Tensor, Rows, Saved, WeightGradients)} over B·T rows. */
    void backward(StepArena arena, Tensor dx, Tensor dy, Tensor x, int b, int t, Saved saved, WeightGradients weights) {
        backward(arena, dx, dy, x, Rows.of(b, t), saved, weights);
    }

    /**
     * Writes dx [B·T, C] (the gradient of the block's input; dx is not read) and accumulates every parameter
     * gradient of the block, from dy [B·T, C]. From {@link Dropped}, first runs forward again from x into a
     * scratch arena, which also takes this backward's temporaries and is closed before returning.
     *
     * <p>Split ({@code weights} not null): the linears' dW and db are queued on {@code weights}, reading tensors
     * left in {@code arena}; the norms' dγ and dβ are accumulated now. From {@link Dropped} (full recompute) the
     * block instead does its own weight-gradient work at once, inside the scratch arena, and queues nothing: keeping
     * the recomputed block alive from B until W would hold a whole block's activations per micro-batch in flight,
     * the memory full recompute is there to save.
     */
    @Override
    public void backward(StepArena arena, Tensor dx, Tensor dy, Tensor x, Rows rows, Saved saved, WeightGradients weights) {
        switch (saved) {
            case Kept kept -> backward(arena, dx, dy, x, rows, kept, weights);
            case Dropped ignored -> {
                try (StepArena scratch = new StepArena(arena.pool())) {
                    backward(scratch, dx, dy, x, rows, run(scratch, scratch, x, rows, attention::forward), null);
                }
            }
        }
    }

    private void backward(StepArena arena, Tensor dx, Tensor dy, Tensor x, Rows rows, Kept saved, WeightGradients weights) {
        if (saved.feedForward instanceof Substituted) {
            throw new IllegalStateException("block h." + layer + " ran a substituted feed-forward, which has no backward; "
                    + "remove the substitute (Gpt.substituteFeedForward(null)) before training");
        }
        // Each branch's backward runs inside an arena scope (whole backward only: a split one's queued dW's read the
        // branches' temporaries later), so the two branches' temporaries share memory.
        if (preNorm) {
            // y = x1 + F(N2(x1)): dx1 = dy + N2ᵀ(Fᵀ(dy))
            Tensor dx1 = arena.allocateForOverwrite(dy.dtype(), dy.shape());
            try (StepArena.Scope temporaries = branchScope(arena, weights)) {   // dn2 too
                Tensor dn2 = arena.allocateForOverwrite(dy.dtype(), dy.shape());
                feedForward.backward(arena, dn2, dy, saved.n2.out(), rows, saved.feedForward, weights);
                norm2.backwardOnto(dx1, dy, dn2, params.precision().widen(0, saved.x1), saved.n2);   // staging under bf16
            }
            // x1 = x + A(N1(x)): dx = dx1 + N1ᵀ(Aᵀ(dx1))
            try (StepArena.Scope temporaries = branchScope(arena, weights)) {   // dn1 too
                Tensor dn1 = arena.allocateForOverwrite(dy.dtype(), dy.shape());
                attention.backward(arena, dn1, dx1, saved.n1.out(), rows, saved.attention, weights);
                norm1.backwardOnto(dx, dx1, dn1, x, saved.n1);
            }
            return;
        }
        // y = N2(sum2), sum2 = α·x1 + F(x1): dsum2 = N2ᵀ(dy); dx1 = Fᵀ(dsum2) + α·dsum2
        Tensor dsum2 = arena.allocateForOverwrite(dy.dtype(), dy.shape());
        norm2.backward(dsum2, dy, saved.sum2, saved.n2);
        Tensor dx1 = arena.allocateForOverwrite(dy.dtype(), dy.shape());
        try (StepArena.Scope temporaries = branchScope(arena, weights)) {
            feedForward.backward(arena, dx1, dsum2, saved.x1, rows, saved.feedForward, weights);
        }
        addScaled(arena, dx1, dsum2, weights);
        // x1 = N1(sum1), sum1 = α·x + A(x): dsum1 = N1ᵀ(dx1); dx = Aᵀ(dsum1) + α·dsum1
        Tensor dsum1 = arena.allocateForOverwrite(dy.dtype(), dy.shape());
        norm1.backward(dsum1, dx1, saved.sum1, saved.n1);
        try (StepArena.Scope temporaries = branchScope(arena, weights)) {
            attention.backward(arena, dx, dsum1, x, rows, saved.attention, weights);
        }
        addScaled(arena, dx, dsum1, weights);
    }

    /** A scope for one branch's backward temporaries, or null (no scope) when {@code weights} queues dW's that read them. */
    private static StepArena.Scope branchScope(StepArena arena, WeightGradients weights) {
        return weights == null ? arena.scope() : null;
    }

    /**
     * dx += α·d, as round(α·d) added on (the bits of the former α·d-then-accumulate order). The whole backward
     * scales {@code d}, a temporary nothing reads afterwards, in place; a split one (queued dW's read d as their
     * dy) scales a copy of it, allocated in {@code arena}.
     */
    private void addScaled(StepArena arena, Tensor dx, Tensor d, WeightGradients weights) {
        if (alpha != 1.0) {
            if (weights != null) {
                Tensor copy = arena.allocateForOverwrite(d.dtype(), d.shape());
                Vectors.copy(copy, d);
                d = copy;
            }
            Vectors.scale(d, alpha);
        }
        Vectors.accumulate(dx, d);
    }
}
