package dev.shardwise.model;

import dev.shardwise.core.kernels.Vectors;
import dev.shardwise.core.memory.StepArena;
import dev.shardwise.core.tensor.Tensor;

/**
 * A pre-LayerNorm transformer block (GPT-2; Xiong et al. 2020 on why pre-LN trains stably):
 * x1 = x + Attention(LN1(x)); y = x1 + MLP(LN2(x1)).
 */
final class TransformerBlock {
    private final LayerNormLayer ln1;
    private final CausalSelfAttention attention;
    private final LayerNormLayer ln2;
    private final GeluMlp mlp;

    /**
     * What backward reads (x, the block input, is kept by the caller).
     *
     * @param x1  residual stream after attention [N, C]
     * @param out block output y [N, C]
     */
    record Saved(LayerNormLayer.Saved ln1, CausalSelfAttention.Saved attention, Tensor x1,
                 LayerNormLayer.Saved ln2, GeluMlp.Saved mlp, Tensor out) { }

    static void declare(ParameterSet.Builder builder, String name, ModelConfig config) {
        LayerNormLayer.declare(builder, name + ".ln1", config.hidden());
        CausalSelfAttention.declare(builder, name + ".attn", config);
        LayerNormLayer.declare(builder, name + ".ln2", config.hidden());
        GeluMlp.declare(builder, name + ".mlp", config);
    }

    TransformerBlock(ParameterSet params, String name, ModelConfig config) {
        this.ln1 = new LayerNormLayer(params, name + ".ln1", config.normEps());
        this.attention = new CausalSelfAttention(params, name + ".attn", config);
        this.ln2 = new LayerNormLayer(params, name + ".ln2", config.normEps());
        this.mlp = new GeluMlp(params, name + ".mlp", config);
    }

    /** x [B·T, C] -> y [B·T, C], returned inside what backward needs. */
    Saved forward(StepArena arena, Tensor x, int b, int t) {
        LayerNormLayer.Saved n1 = ln1.forward(arena, x);
        CausalSelfAttention.Saved a = attention.forward(arena, n1.out(), b, t);
        Tensor x1 = arena.allocate(x.dtype(), x.shape());
        Vectors.add(x1, x, a.out());
        LayerNormLayer.Saved n2 = ln2.forward(arena, x1);
        GeluMlp.Saved m = mlp.forward(arena, n2.out());
        Tensor out = arena.allocate(x.dtype(), x.shape());
        Vectors.add(out, x1, m.out());
        return new Saved(n1, a, x1, n2, m, out);
    }

    /** Accumulates dx [B·T, C] and every parameter gradient of the block from dy [B·T, C]. */
    void backward(StepArena arena, Tensor dx, Tensor dy, Tensor x, int b, int t, Saved saved) {
        // y = x1 + mlp(ln2(x1)): dx1 = dy + ln2ᵀ(mlpᵀ(dy))
        Tensor dx1 = arena.allocate(dy.dtype(), dy.shape());
        Vectors.accumulate(dx1, dy);
        Tensor dn2 = arena.allocate(dy.dtype(), dy.shape());
        mlp.backward(arena, dn2, dy, saved.ln2.out(), saved.mlp);
        ln2.backward(dx1, dn2, saved.x1, saved.ln2);
        // x1 = x + attention(ln1(x)): dx += dx1 + ln1ᵀ(attentionᵀ(dx1))
        Vectors.accumulate(dx, dx1);
        Tensor dn1 = arena.allocate(dy.dtype(), dy.shape());
        attention.backward(arena, dn1, dx1, saved.ln1.out(), b, t, saved.attention);
        ln1.backward(dx, dn1, x, saved.ln1);
    }
}
