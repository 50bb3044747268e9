package dev.shardwise.model;

import dev.shardwise.core.kernels.Attention;
import dev.shardwise.core.kernels.Embedding;
import dev.shardwise.core.kernels.Vectors;
import dev.shardwise.core.memory.StepArena;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;

import java.lang.foreign.ValueLayout;

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
 *
 * <p>Tensor parallelism (Shoeybi et al. 2019), as the blocks split theirs: q and kv are column-parallel over the heads
 * (kv heads split, or replicated when kvHeads &lt; tp, as in {@link CausalSelfAttention}), the output projection is
 * row-parallel and the MLP is split; the norms and E_q are whole on every rank. q's input, the E_q rows, is a
 * column-parallel input like N1(x) (f: its gradient dqe is all-reduced before E_q's scatter-add, so dE_q comes out
 * whole and equal on every rank). Under sequence parallelism (Korthikanti et al. 2022) x, y, the norms, the residual
 * sums and the E_q rows are this rank's sequence shard, both inputs are all-gathered before their linears and dqe and
 * dn1 reduce-scattered back; E_q, used on the shard's positions only, is then declared sequence-parallel (partial
 * gradients summed over tp by the update), like the norms. Shapes below are local: NH and NKV stand for this rank's.
 */
final class TopQueryLayer implements Layer<TopQueryLayer.Saved> {
    private final Parameter queryEmbedding;   // E_q [contextLength, C]
    private final Norm norm1;
    private final ColumnParallelLinear query;      // C -> NH·HS
    private final ColumnParallelLinear keyValue;   // C -> 2·NKV·HS
    private final RowParallelLinear proj;          // NH·HS -> C
    private final ColumnParallelInput queryInput, keyValueInput;
    private final TensorParallel tp;
    private final Norm norm2;
    private final FeedForward feedForward;
    private final int heads, kvHeads, headSize;

    /**
     * What backward reads.
     *
     * @param n1   N1(x) [N, C]
     * @param qe   E_q rows of each position [N, C] (the input's rows: the shard under sequence parallelism)
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
        declare(builder, name, config, TensorParallel.NONE);
    }

    /**
     * Declares rank {@code tp.tpRank()}'s slices of the layer (see the class comment); with tp = 1 the whole tensors.
     *
     * @throws IllegalArgumentException if tp does not divide the heads or the MLP hidden size, or neither divides nor
     *                                  multiplies the kv heads
     */
    static void declare(ParameterSet.Builder builder, String name, ModelConfig config, TensorParallel tp) {
        int c = config.hidden(), hs = config.headSize();
        ParameterSet.Init qeInit = new ParameterSet.Init.Normal(GptInit.STD), std = new ParameterSet.Init.Normal(GptInit.STD);
        if (tp.sequenceParallel()) builder.declareSequenceParallel(name + ".qe", qeInit, false, config.contextLength(), c);
        else builder.declare(name + ".qe", qeInit, false, config.contextLength(), c);
        Norm.declare(builder, name + ".ln1", config, tp);
        ColumnParallelLinear.declare(builder, name + ".attn.q", c, new int[]{config.heads() * hs}, std, config.bias(), tp,
                "heads", "model.heads, the top query layer's query heads");
        int kvPieces = CausalSelfAttention.kvPieces(config, tp);
        ColumnParallelLinear.declare(builder, name + ".attn.kv", c, new int[]{config.kvHeads() * hs, config.kvHeads() * hs},
                new int[]{kvPieces, kvPieces}, std, config.bias(), tp, "kv rows", "the top query layer's k and v sections");
        RowParallelLinear.declare(builder, name + ".attn.proj", config.heads() * hs, c, config.bias(),
                GptInit.residualProjection(config), tp, "heads·headSize", "the top query layer's projection input features");
        Norm.declare(builder, name + ".ln2", config, tp);
        FeedForward.declare(builder, name + ".mlp", config, tp);
    }

    TopQueryLayer(ParameterSet params, String name, ModelConfig config) {
        this(params, name, config, TensorParallel.NONE);
    }

    /** The layer over rank {@code tp.tpRank()}'s slices, declared with the same tp. */
    TopQueryLayer(ParameterSet params, String name, ModelConfig config, TensorParallel tp) {
        if (config.positions() != ModelConfig.Positions.LEARNED) {
            throw new IllegalArgumentException("model.topQueryLayer needs learned positions (model.positions: learned), "
                    + "as in PanGu-α; got " + config.positions());
        }
        this.queryEmbedding = params.get(name + ".qe");
        this.norm1 = Norm.create(params, name + ".ln1", config);
        this.query = new ColumnParallelLinear(params, name + ".attn.q", config.bias());
        this.keyValue = new ColumnParallelLinear(params, name + ".attn.kv", config.bias());
        this.proj = new RowParallelLinear(params, name + ".attn.proj", config.bias(), tp);
        this.queryInput = new ColumnParallelInput(tp);
        this.keyValueInput = new ColumnParallelInput(tp);
        this.tp = tp;
        this.norm2 = Norm.create(params, name + ".ln2", config);
        this.feedForward = FeedForward.create(params, name + ".mlp", config, tp);
        this.heads = tp.divide(config.heads(), "heads", "model.heads, the top query layer's query heads");
        this.kvHeads = config.kvHeads() / CausalSelfAttention.kvPieces(config, tp);
        this.headSize = config.headSize();
    }

    /** {@link #forward(StepArena, Tensor, Rows)} over B·T rows at {@code positions} i32 [B·T]. */
    Saved forward(StepArena arena, Tensor x, Tensor positions, int b, int t) {
        return forward(arena, x, new Rows(b, t, positions));
    }

    /**
     * x [B·T, C] -> y [B·T, C] (both [B·T/tp, C] under sequence parallelism), returned inside what backward needs.
     *
     * @throws IllegalArgumentException if {@code rows} carries no positions
     */
    @Override
    public Saved forward(StepArena arena, Tensor x, Rows rows) {
        int b = rows.b(), t = rows.t();
        Norm.Saved n1 = norm1.forward(arena, x);
        Tensor qe = arena.allocateForOverwrite(x.dtype(), x.shape());
        Embedding.forward(qe, localPositions(arena, rows), queryEmbedding.value(), false);
        Tensor q, kv;
        try (StepArena scratch = new StepArena(arena.pool())) {   // the gathered inputs, under sequence parallelism
            q = query.forward(arena, queryInput.whole(scratch, qe, b));
            kv = keyValue.forward(arena, keyValueInput.whole(scratch, n1.out(), b));
        }
        Tensor att = arena.allocateForOverwrite(x.dtype(), b * t, heads * headSize);
        Tensor lse = arena.allocateForOverwrite(x.dtype(), b, heads, t);
        Attention.forward(att.view(b, t, heads, headSize), lse, q.view(b, t, heads, headSize), k(kv, b, t), v(kv, b, t), scale());
        Tensor a = proj.forward(arena, att, b);
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
     * ({@code weights} not null): the linears' dW and db and the whole query path (dqe = dq·W_q, its reduction over
     * tp and E_q's scatter-add, which no input gradient depends on) are queued, the norms' dγ and dβ accumulated now;
     * every tp rank runs the same queue in the same order, so the queued collectives match.
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
        proj.backward(arena, datt, dx1, s.att, b, weights);
        Tensor dq = arena.allocate(dy.dtype(), s.q.shape());     // zeroed: the attention kernel accumulates
        Tensor dkv = arena.allocate(dy.dtype(), s.kv.shape());
        Attention.backward(dq.view(b, t, heads, headSize), k(dkv, b, t), v(dkv, b, t), datt.view(b, t, heads, headSize),
                s.att.view(b, t, heads, headSize), s.lse, s.q.view(b, t, heads, headSize), k(s.kv, b, t), v(s.kv, b, t), scale());
        // q = E_q[t]·W_qᵀ: dW_q += dqᵀ·qe, dE_q[t] += dq·W_q. No input gradient flows through q, so all of it is
        // weight-gradient work: queued whole when split (the dqe GEMM included).
        Tensor dqe = arena.allocateForOverwrite(dy.dtype(), dy.shape());
        Tensor dqeWhole = queryInput.gradientBuffer(arena, dqe);
        Tensor positions = localPositions(arena, rows);
        WeightGradients.defer(weights, () -> {
            query.backward(dqeWhole, dq, queryInput.whole(arena, s.qe, b), null);
            queryInput.reduceGradient(dqe, dqeWhole, b);
            Embedding.backward(queryEmbedding.grad(), dqe, positions);
        });
        Tensor dn1 = arena.allocateForOverwrite(dy.dtype(), dy.shape());
        Tensor dn1Whole = keyValueInput.gradientBuffer(arena, dn1);
        keyValue.backward(dn1Whole, dkv, keyValueInput.whole(arena, s.n1.out(), b), weights);
        keyValueInput.reduceGradient(dn1, dn1Whole, b);
        norm1.backwardOnto(dx, dx1, dn1, x, s.n1);
    }

    private static Tensor positions(Rows rows) {
        if (rows.positions() == null) {
            throw new IllegalArgumentException("the top query layer reads each row's position: pass Rows with positions "
                    + "i32 [B·T] = [" + rows.n() + "]");
        }
        return rows.positions();
    }

    /**
     * The positions of the input's rows: all of {@link Rows#positions()}, or under sequence parallelism those of this
     * rank's shard (positions [r·T/tp, (r+1)·T/tp) of each sequence), copied into {@code arena}.
     */
    private Tensor localPositions(StepArena arena, Rows rows) {
        Tensor all = positions(rows);
        if (!tp.sequenceParallel()) return all;
        int t = rows.t(), ts = t / tp.size(), first = tp.tpRank() * ts;
        Tensor local = arena.allocateForOverwrite(DType.I32, rows.b() * ts);
        for (int seq = 0; seq < rows.b(); seq++) {
            for (int i = 0; i < ts; i++) {
                int p = all.segment().get(ValueLayout.JAVA_INT, all.byteOffset() + 4L * (seq * t + first + i));
                local.segment().set(ValueLayout.JAVA_INT, local.byteOffset() + 4L * (seq * ts + i), p);
            }
        }
        return local;
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
