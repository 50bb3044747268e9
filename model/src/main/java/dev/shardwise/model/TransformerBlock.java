package dev.shardwise.model;

import dev.shardwise.core.kernels.Vectors;
import dev.shardwise.core.memory.StepArena;
import dev.shardwise.core.tensor.Tensor;

/**
 * A transformer block: an attention branch and a feed-forward branch, each around a residual connection, with
 * the norms placed as {@link ModelConfig.Residual} says:
 * <pre>
 *   PRE_LN    x1 = x + A(N1(x))          y = x1 + F(N2(x1))            (GPT-2, LLaMA)
 *   POST_LN   x1 = N1(x + A(x))          y = N2(x1 + F(x1))            (Transformer, BERT)
 *   DEEPNORM  x1 = N1(α·x + A(x))        y = N2(α·x1 + F(x1))          (DeepNet, α = (2L)^(1/4))
 * </pre>
 */
final class TransformerBlock {
    private final Norm norm1;
    private final CausalSelfAttention attention;
    private final Norm norm2;
    private final FeedForward feedForward;
    private final boolean preNorm;
    private final double alpha;

    /**
     * What backward reads (x, the block input, is kept by the caller). Pre-LN: n1 = N1(x), sum1 = x1,
     * n2 = N2(x1), sum2 = y. Post-LN and DeepNorm: sum1 = α·x + A(x), n1 = N1(sum1) = x1, sum2 = α·x1 + F(x1),
     * n2 = N2(sum2) = y.
     *
     * @param x1  residual stream between the two branches [N, C]
     * @param out block output y [N, C]
     */
    record Saved(Norm.Saved n1, CausalSelfAttention.Saved attention, Tensor sum1, Tensor x1,
                 Norm.Saved n2, FeedForward.Saved feedForward, Tensor sum2, Tensor out) { }

    static void declare(ParameterSet.Builder builder, String name, ModelConfig config) {
        Norm.declare(builder, name + ".ln1", config);
        CausalSelfAttention.declare(builder, name + ".attn", config);
        Norm.declare(builder, name + ".ln2", config);
        FeedForward.declare(builder, name + ".mlp", config);
    }

    TransformerBlock(ParameterSet params, String name, ModelConfig config) {
        this.norm1 = Norm.create(params, name + ".ln1", config);
        this.attention = new CausalSelfAttention(params, name + ".attn", config);
        this.norm2 = Norm.create(params, name + ".ln2", config);
        this.feedForward = FeedForward.create(params, name + ".mlp", config);
        this.preNorm = config.residual() == ModelConfig.Residual.PRE_LN;
        this.alpha = GptInit.residualAlpha(config);
    }

    /** x [B·T, C] -> y [B·T, C], returned inside what backward needs. */
    Saved forward(StepArena arena, Tensor x, int b, int t) {
        if (preNorm) {
            Norm.Saved n1 = norm1.forward(arena, x);
            CausalSelfAttention.Saved a = attention.forward(arena, n1.out(), b, t);
            Tensor x1 = residual(arena, x, a.out());
            Norm.Saved n2 = norm2.forward(arena, x1);
            FeedForward.Saved f = feedForward.forward(arena, n2.out());
            Tensor y = residual(arena, x1, f.out());
            return new Saved(n1, a, x1, x1, n2, f, y, y);
        }
        CausalSelfAttention.Saved a = attention.forward(arena, x, b, t);
        Tensor sum1 = residual(arena, x, a.out());
        Norm.Saved n1 = norm1.forward(arena, sum1);
        FeedForward.Saved f = feedForward.forward(arena, n1.out());
        Tensor sum2 = residual(arena, n1.out(), f.out());
        Norm.Saved n2 = norm2.forward(arena, sum2);
        return new Saved(n1, a, sum1, n1.out(), n2, f, sum2, n2.out());
    }

    /** α·stream + branch, in a new tensor. */
    private Tensor residual(StepArena arena, Tensor stream, Tensor branch) {
        Tensor out = arena.allocateForOverwrite(stream.dtype(), stream.shape());
        if (alpha == 1.0) {
            Vectors.add(out, stream, branch);
        } else {
            Vectors.copy(out, branch);
            Vectors.axpy(out, stream, alpha);
        }
        return out;
    }

    /**
     * Writes dx [B·T, C] (the gradient of the block's input; dx is not read) and accumulates every parameter
     * gradient of the block, from dy [B·T, C].
     */
    void backward(StepArena arena, Tensor dx, Tensor dy, Tensor x, int b, int t, Saved saved) {
        if (preNorm) {
            // y = x1 + F(N2(x1)): dx1 = dy + N2ᵀ(Fᵀ(dy))
            Tensor dn2 = arena.allocate(dy.dtype(), dy.shape());
            feedForward.backward(arena, dn2, dy, saved.n2.out(), saved.feedForward);
            Tensor dx1 = arena.allocateForOverwrite(dy.dtype(), dy.shape());
            norm2.backwardOnto(dx1, dy, dn2, saved.x1, saved.n2);
            // x1 = x + A(N1(x)): dx = dx1 + N1ᵀ(Aᵀ(dx1))
            Tensor dn1 = arena.allocate(dy.dtype(), dy.shape());
            attention.backward(arena, dn1, dx1, saved.n1.out(), b, t, saved.attention);
            norm1.backwardOnto(dx, dx1, dn1, x, saved.n1);
            return;
        }
        // y = N2(sum2), sum2 = α·x1 + F(x1): dsum2 = N2ᵀ(dy); dx1 = α·dsum2 + Fᵀ(dsum2)
        Tensor dsum2 = arena.allocate(dy.dtype(), dy.shape());
        norm2.backward(dsum2, dy, saved.sum2, saved.n2);
        Tensor dx1 = arena.allocate(dy.dtype(), dy.shape());
        Vectors.axpy(dx1, dsum2, alpha);
        feedForward.backward(arena, dx1, dsum2, saved.x1, saved.feedForward);
        // x1 = N1(sum1), sum1 = α·x + A(x): dsum1 = N1ᵀ(dx1); dx = α·dsum1 + Aᵀ(dsum1)
        Tensor dsum1 = arena.allocate(dy.dtype(), dy.shape());
        norm1.backward(dsum1, dx1, saved.sum1, saved.n1);
        Vectors.copy(dx, dsum1);
        if (alpha != 1.0) Vectors.scale(dx, alpha);   // the bits of α·dsum1 + 0
        attention.backward(arena, dx, dsum1, x, b, t, saved.attention);
    }
}
