package dev.shardwise.model;

import dev.shardwise.core.kernels.Attention;
import dev.shardwise.core.kernels.Embedding;
import dev.shardwise.core.kernels.Vectors;
import dev.shardwise.core.memory.StepArena;
import dev.shardwise.core.tensor.Tensor;

/**
 * PanGu-α's top query layer (Zeng et al. 2021): one more transformer layer above the blocks whose attention
 * query is not computed from the hidden state but from a learned embedding of the position being predicted,
 * so the last layer asks "what comes at position t+1" of the whole causal context:
 * <pre>
 *   n = N1(x);  q = E_q[t]·W_qᵀ;  k, v = n·W_kvᵀ;  x1 = x + softmax(q·kᵀ/√HS + mask)·v·W_oᵀ
 *   y = x1 + F(N2(x1))
 * </pre>
 * Norms sit before each branch (pre-LN) whatever the blocks use; positions must be learned. It reads each row's
 * position from {@link Rows#positions()}.
 */
final class TopQueryLayer implements Layer<TopQueryLayer.Saved> {
    private final Parameter queryEmbedding;   // E_q [contextLength, C]
    private final Norm norm1;
    private final Linear query;              // C -> NH·HS
    private final Linear keyValue;           // C -> 2·NKV·HS
    private final Linear proj;               // NH·HS -> C
    private final Norm norm2;
    private final FeedForward feedForward;
    private final int heads, kvHeads, headSize;

    /**
     * What backward reads.
     *
     * @param n1   N1(x) [N, C]
     * @param qe   E_q rows of each position [N, C]
     * @param q    queries [N, NH·HS]
     * @param kv   keys and values [N, 2·NKV·HS]
     * @param att  attention output [N, NH·HS]
     * @param lse  log-sum-exp [B, NH, T]
     * @param x1   residual stream after attention [N, C]
     * @param out  y [N, C]
     */
    record Saved(Norm.Saved n1, Tensor qe, Tensor q, Tensor kv, Tensor att, Tensor lse, Tensor x1, Norm.Saved n2,
                 Layer.Saved feedForward, Tensor out) implements Layer.Saved { }

    static void declare(ParameterSet.Builder builder, String name, ModelConfig config) {
        int c = config.hidden(), hs = config.headSize();
        builder.declare(name + ".qe", new ParameterSet.Init.Normal(GptInit.STD), false, config.contextLength(), c);
        Norm.declare(builder, name + ".ln1", config);
        Linear.declare(builder, name + ".attn.q", c, config.heads() * hs, config.bias(), GptInit.STD);
        Linear.declare(builder, name + ".attn.kv", c, 2 * config.kvHeads() * hs, config.bias(), GptInit.STD);
        Linear.declare(builder, name + ".attn.proj", config.heads() * hs, c, config.bias(), GptInit.residualProjection(config));
        Norm.declare(builder, name + ".ln2", config);
        FeedForward.declare(builder, name + ".mlp", config, TensorParallel.NONE);
    }

    TopQueryLayer(ParameterSet params, String name, ModelConfig config) {
        if (config.positions() != ModelConfig.Positions.LEARNED) {
            throw new IllegalArgumentException("model.topQueryLayer needs learned positions (model.positions: learned), "
                    + "as in PanGu-α; got " + config.positions());
        }
        this.queryEmbedding = params.get(name + ".qe");
        this.norm1 = Norm.create(params, name + ".ln1", config);
        this.query = new Linear(params, name + ".attn.q", config.bias());
        this.keyValue = new Linear(params, name + ".attn.kv", config.bias());
        this.proj = new Linear(params, name + ".attn.proj", config.bias());
        this.norm2 = Norm.create(params, name + ".ln2", config);
        this.feedForward = FeedForward.create(params, name + ".mlp", config, TensorParallel.NONE);
        this.heads = config.heads();
        this.kvHeads = config.kvHeads();
        this.headSize = config.headSize();
    }

    /** {@link #forward(StepArena, Tensor, Rows)} over B·T rows at {@code positions} i32 [B·T]. */
    Saved forward(StepArena arena, Tensor x, Tensor positions, int b, int t) {
        return forward(arena, x, new Rows(b, t, positions));
    }

    /**
     * x [B·T, C] -> y [B·T, C], returned inside what backward needs.
     *
     * @throws IllegalArgumentException if {@code rows} carries no positions
     */
    @Override
    public Saved forward(StepArena arena, Tensor x, Rows rows) {
        int b = rows.b(), t = rows.t();
        Norm.Saved n1 = norm1.forward(arena, x);
        Tensor qe = arena.allocateForOverwrite(x.dtype(), x.shape());
        Embedding.forward(qe, positions(rows), queryEmbedding.value(), false);
        Tensor q = query.forward(arena, qe);
        Tensor kv = keyValue.forward(arena, n1.out());
        Tensor att = arena.allocateForOverwrite(x.dtype(), b * t, heads * headSize);
        Tensor lse = arena.allocateForOverwrite(x.dtype(), b, heads, t);
        Attention.forward(att.view(b, t, heads, headSize), lse, q.view(b, t, heads, headSize), k(kv, b, t), v(kv, b, t), scale());
        Tensor a = proj.forward(arena, att);
        Tensor x1 = arena.allocateForOverwrite(x.dtype(), x.shape());
        Vectors.add(x1, x, a);
        Norm.Saved n2 = norm2.forward(arena, x1);
        Layer.Saved f = feedForward.forward(arena, n2.out(), rows);
        Tensor y = arena.allocateForOverwrite(x.dtype(), x.shape());
        Vectors.add(y, x1, f.out());
        return new Saved(n1, qe, q, kv, att, lse, x1, n2, f, y);
    }

    /**
     * {@link #backward(StepArena, Tensor, Tensor, Tensor, Rows, Saved, WeightGradients)} over B·T rows at
     * {@code positions} i32 [B·T].
     */
    void backward(StepArena arena, Tensor dx, Tensor dy, Tensor x, Tensor positions, int b, int t, Saved s,
                  WeightGradients weights) {
        backward(arena, dx, dy, x, new Rows(b, t, positions), s, weights);
    }

    /**
     * Writes dx [B·T, C] and accumulates the layer's parameter gradients (E_q's included) from dy [B·T, C]. Split
     * ({@code weights} not null): the linears' dW and db and the whole query path (dqe = dq·W_q and E_q's
     * scatter-add, which no input gradient depends on) are queued, the norms' dγ and dβ accumulated now.
     */
    @Override
    public void backward(StepArena arena, Tensor dx, Tensor dy, Tensor x, Rows rows, Saved s, WeightGradients weights) {
        int b = rows.b(), t = rows.t();
        // y = x1 + F(N2(x1)): dx1 = dy + N2ᵀ(Fᵀ(dy))
        Tensor dn2 = arena.allocateForOverwrite(dy.dtype(), dy.shape());
        feedForward.backward(arena, dn2, dy, s.n2.out(), rows, s.feedForward, weights);
        Tensor dx1 = arena.allocateForOverwrite(dy.dtype(), dy.shape());
        norm2.backwardOnto(dx1, dy, dn2, s.x1, s.n2);
        // x1 = x + softmax(q·kᵀ)·v·W_oᵀ with q from E_q and k, v from N1(x): dx = dx1 + N1ᵀ(dn1)
        Tensor datt = arena.allocateForOverwrite(dy.dtype(), s.att.shape());
        proj.backward(datt, dx1, s.att, weights);
        Tensor dq = arena.allocate(dy.dtype(), s.q.shape());     // zeroed: the attention kernel accumulates
        Tensor dkv = arena.allocate(dy.dtype(), s.kv.shape());
        Attention.backward(dq.view(b, t, heads, headSize), k(dkv, b, t), v(dkv, b, t), datt.view(b, t, heads, headSize),
                s.att.view(b, t, heads, headSize), s.lse, s.q.view(b, t, heads, headSize), k(s.kv, b, t), v(s.kv, b, t), scale());
        // q = E_q[t]·W_qᵀ: dW_q += dqᵀ·qe, dE_q[t] += dq·W_q. No input gradient flows through q, so all of it is
        // weight-gradient work: queued whole when split (the dqe GEMM included).
        Tensor dqe = arena.allocateForOverwrite(dy.dtype(), dy.shape());
        Tensor positions = positions(rows);
        WeightGradients.defer(weights, () -> {
            query.backward(dqe, dq, s.qe);
            Embedding.backward(queryEmbedding.grad(), dqe, positions);
        });
        Tensor dn1 = arena.allocateForOverwrite(dy.dtype(), dy.shape());
        keyValue.backward(dn1, dkv, s.n1.out(), weights);
        norm1.backwardOnto(dx, dx1, dn1, x, s.n1);
    }

    private static Tensor positions(Rows rows) {
        if (rows.positions() == null) {
            throw new IllegalArgumentException("the top query layer reads each row's position: pass Rows with positions "
                    + "i32 [B·T] = [" + rows.n() + "]");
        }
        return rows.positions();
    }

    private double scale() {
        return 1.0 / Math.sqrt(headSize);
    }

    private Tensor k(Tensor kv, int b, int t) {
        return kv.view(b, t, 2 * kvHeads, headSize).slice(2, 0, kvHeads);
    }

    private Tensor v(Tensor kv, int b, int t) {
        return kv.view(b, t, 2 * kvHeads, headSize).slice(2, kvHeads, kvHeads);
    }
}
