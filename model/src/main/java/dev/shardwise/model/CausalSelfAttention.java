package dev.shardwise.model;

import dev.shardwise.core.kernels.Attention;
import dev.shardwise.core.memory.StepArena;
import dev.shardwise.core.tensor.Tensor;

/**
 * Causal multi-head self-attention (Vaswani et al. 2017) with grouped-query heads (Ainslie et al. 2023):
 * qkv = x·W_qkvᵀ, o = softmax(q·kᵀ/√HS + causal mask)·v per head, y = o·W_oᵀ. The attention kernel never
 * materialises the T×T scores (FlashAttention); backward recomputes them from the saved log-sum-exp.
 */
final class CausalSelfAttention {
    private final Linear qkv;    // C -> (NH + 2·NKV)·HS
    private final Linear proj;   // C -> C
    private final int heads;
    private final int kvHeads;
    private final int headSize;

    /**
     * What backward reads.
     *
     * @param qkv fused projections [B, T, (NH + 2·NKV)·HS]
     * @param att attention output before the projection [B, T, NH·HS]
     * @param lse log-sum-exp of each query's scores [B, NH, T]
     * @param out the layer's output y [B·T, C]
     */
    record Saved(Tensor qkv, Tensor att, Tensor lse, Tensor out) { }

    static void declare(ParameterSet.Builder builder, String name, ModelConfig config) {
        int c = config.hidden(), hs = config.headSize();
        double std = 0.02;
        Linear.declare(builder, name + ".qkv", c, (config.heads() + 2 * config.kvHeads()) * hs, config.bias(), std);
        // GPT-2 scales the residual projections by 1/sqrt(2L): each block adds two of them to the stream.
        Linear.declare(builder, name + ".proj", c, c, config.bias(), std / Math.sqrt(2.0 * config.layers()));
    }

    CausalSelfAttention(ParameterSet params, String name, ModelConfig config) {
        this.qkv = new Linear(params, name + ".qkv", config.bias());
        this.proj = new Linear(params, name + ".proj", config.bias());
        this.heads = config.heads();
        this.kvHeads = config.kvHeads();
        this.headSize = config.headSize();
    }

    /** x [B·T, C] -> y [B·T, C], returned inside what backward needs. */
    Saved forward(StepArena arena, Tensor x, int b, int t) {
        Tensor fused = qkv.forward(arena, x);                                        // [B·T, (NH+2NKV)·HS]
        Tensor att = arena.allocate(x.dtype(), b * t, heads * headSize);              // [B·T, C]
        Tensor lse = arena.allocate(x.dtype(), b, heads, t);                          // [B, NH, T]
        Attention.forward(att.view(b, t, heads, headSize), lse, q(fused, b, t), k(fused, b, t), v(fused, b, t), scale());
        return new Saved(fused, att, lse, proj.forward(arena, att));
    }

    /** Accumulates dx [B·T, C] and the parameter gradients from dy [B·T, C]. */
    void backward(StepArena arena, Tensor dx, Tensor dy, Tensor x, int b, int t, Saved saved) {
        Tensor datt = arena.allocate(dy.dtype(), b * t, heads * headSize);
        proj.backward(datt, dy, saved.att);
        Tensor dfused = arena.allocate(dy.dtype(), saved.qkv.shape());
        Attention.backward(q(dfused, b, t), k(dfused, b, t), v(dfused, b, t), datt.view(b, t, heads, headSize),
                saved.att.view(b, t, heads, headSize), saved.lse, q(saved.qkv, b, t), k(saved.qkv, b, t),
                v(saved.qkv, b, t), scale());
        qkv.backward(dx, dfused, x);
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
