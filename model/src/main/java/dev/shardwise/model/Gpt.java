package dev.shardwise.model;

import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.memory.StepArena;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;

import java.util.List;
import java.util.Objects;

/**
 * A GPT language model (Radford et al. 2019): token (+ learned position) embeddings, L transformer blocks,
 * a final norm and an output head tied to the token embedding, trained with next-token cross-entropy. The
 * config switches on the LLaMA-style pieces (RMSNorm, SwiGLU, rotary positions, grouped-query attention),
 * post-LN or DeepNorm residuals, and PanGu-α's top query layer.
 *
 * <p>Forward and backward are explicit (llm.c): {@link #forward} runs the blocks in order and keeps what each
 * backward needs in a {@link Pass}; {@link #backward} runs them in reverse and accumulates into the parameter
 * gradients. All activations live in the caller's {@link StepArena}, freed when it closes. The whole model is one
 * {@link GptPart}; a pipeline runs several parts, each declared with {@link #declare(ModelConfig, List, boolean)}.
 *
 * <p>Runs in F32 (training) or F64 (finite-difference checks), whichever dtype the parameters have.
 *
 * <p>Its parameters come in {@linkplain ParameterSet.Unit units}: {@code embeddings} (wte, wpe), one per block
 * ({@code h.0} ...), and {@code final} (top query layer, final norm) when there are such layers. The model calls
 * its {@link Hooks} around each unit's use, which is all sharded data parallelism needs from it.
 */
public final class Gpt implements AutoCloseable {
    private final ModelConfig config;
    private final ParameterSet params;
    private final GptPart whole;

    /**
     * Calls the model makes around the use of each parameter unit, in this order per micro-batch:
     * <pre>
     *   forward:  before/afterForward(embeddings), (h.0) ... (h.L-1), (final), then again (embeddings) for the tied head
     *   backward: beforeBackward(embeddings)  -- the head reads wte and starts its gradient
     *             before/afterBackward(final), (h.L-1) ... (h.0)
     *             afterBackward(embeddings)   -- wte's gradient is complete only after the embedding's backward
     * </pre>
     * Between {@code beforeForward} and {@code afterForward} the unit's values must be bound; between
     * {@code beforeBackward} and {@code afterBackward} its values and gradients. After {@code afterBackward} the
     * unit's gradients hold this micro-batch's contribution and backward will not touch them again. Hooks run on
     * the thread that runs the model. ZeRO 2 and 3 and the overlapped gradient reduction use them; {@link #NONE}
     * does nothing.
     *
     * <p>Split backward ({@link GptPart#backwardInput} then {@link GptPart#backwardWeight}, zero-bubble pipelines):
     * the {@code beforeBackward} calls come in B, the {@code afterBackward} calls in W, each in the order above. In
     * between, other passes may run: forwards, and B's and W's of other micro-batches, so a unit can be in backward
     * for several micro-batches at once, and its {@code beforeBackward} for one may come before its
     * {@code afterBackward} for an earlier one. Hooks that bind per-unit state between the two (ZeRO 2 and 3's
     * transient gradient buffers) cannot allow that; {@link #allowsDeferredWeightGradients} says which can.
     */
    public interface Hooks {
        /** No calls have any effect: single rank, or data parallelism that reduces after backward. */
        Hooks NONE = new Hooks() {
            @Override
            public boolean allowsDeferredWeightGradients() {
                return true;
            }
        };

        /**
         * Whether these hooks stay correct under a split backward (see above): W's {@code afterBackward} late, and a
         * unit open for several micro-batches at once. False unless a hooks class says otherwise.
         */
        default boolean allowsDeferredWeightGradients() {
            return false;
        }

        default void beforeForward(ParameterSet.Unit unit) { }

        default void afterForward(ParameterSet.Unit unit) { }

        default void beforeBackward(ParameterSet.Unit unit) { }

        default void afterBackward(ParameterSet.Unit unit) { }
    }

    /** The state one forward pass leaves for backward, and its loss. */
    public static final class Pass {
        private final GptPart.Pass pass;

        private Pass(GptPart.Pass pass) {
            this.pass = pass;
        }

        /** Mean cross-entropy over the targets that are not ignored (-1), in nats. */
        public double loss() { return pass.loss(); }

        /** Targets that counted towards the loss. */
        public int countedTokens() { return pass.countedTokens(); }
    }

    /** Declares every parameter of a GPT with {@code config}, in checkpoint order. */
    public static ParameterSet.Builder declare(ModelConfig config) {
        return declare(config, List.of(GptPart.Span.whole(config)), false);
    }

    /**
     * Declares the parameters of the parts {@code spans} (a pipeline stage's chunks, in order) under their global
     * names; with {@code splitEmbedding} (a model cut over several stages) wte gets a unit of its own, laid out as
     * the head's copy of it (see {@link GptPart#declare}).
     */
    public static ParameterSet.Builder declare(ModelConfig config, List<GptPart.Span> spans, boolean splitEmbedding) {
        return declare(config, spans, splitEmbedding, TensorParallel.NONE);
    }

    /**
     * As {@link #declare(ModelConfig, List, boolean)}, rank {@code tp.tpRank()}'s tensor-parallel slices (Shoeybi et
     * al. 2019; see {@link GptPart}), each under its global name with its {@link ParameterSet.Slice}.
     */
    public static ParameterSet.Builder declare(ModelConfig config, List<GptPart.Span> spans, boolean splitEmbedding,
                                               TensorParallel tp) {
        return declare(config, spans, splitEmbedding, tp, ExpertParallel.NONE);
    }

    /**
     * As {@link #declare(ModelConfig, List, boolean, TensorParallel)}, with only rank {@code ep.epRank()}'s E/ep experts
     * of each MoE block (GShard), under their global numbers.
     *
     * @throws IllegalArgumentException also if ep does not divide the experts
     */
    public static ParameterSet.Builder declare(ModelConfig config, List<GptPart.Span> spans, boolean splitEmbedding,
                                               TensorParallel tp, ExpertParallel ep) {
        ParameterSet.Builder builder = ParameterSet.builder();
        for (GptPart.Span span : spans) GptPart.declare(builder, config, span, splitEmbedding, tp, ep);
        return builder;
    }

    /** A model with freshly initialised parameters (GPT-2 init, seeded) charged to {@code pool}. */
    public static Gpt create(ModelConfig config, MemoryPool pool, DType dtype, long seed) {
        return create(config, pool, dtype, seed, 1);
    }

    /** As {@link #create(ModelConfig, MemoryPool, DType, long)}, flat buffers padded to a multiple of {@code padMultiple}. */
    public static Gpt create(ModelConfig config, MemoryPool pool, DType dtype, long seed, int padMultiple) {
        ParameterSet params = declare(config).allocate(pool, dtype, padMultiple);
        params.initialize(seed);
        return new Gpt(config, params);
    }

    /**
     * A model over existing parameters (declared by {@link #declare(ModelConfig)}); the model takes ownership of them.
     *
     * @throws IllegalArgumentException if a parameter or unit of the whole model is missing
     */
    public Gpt(ModelConfig config, ParameterSet params) {
        this.config = config;
        this.params = params;
        this.whole = new GptPart(config, params, GptPart.Span.whole(config));
    }

    /**
     * Makes every later forward and backward call {@code hooks} around each unit (see {@link Hooks});
     * {@link Hooks#NONE} restores the plain model.
     */
    public void useHooks(Hooks hooks) {
        whole.useHooks(Objects.requireNonNull(hooks, "hooks"));
    }

    /**
     * Makes later forwards run {@code substitute} in place of every block's feed-forward branch, null restoring the
     * model's own (inference only: {@link #backward} refuses a pass that used one).
     */
    public void substituteFeedForward(FeedForwardSubstitute substitute) {
        whole.substituteFeedForward(substitute);
    }

    public ModelConfig config() { return config; }
    public ParameterSet parameters() { return params; }

    /** The whole model as one part (a pipeline of one stage runs it). */
    public GptPart part() { return whole; }

    /**
     * Forward pass with the loss, fused with the gradient of the loss with respect to the logits (the
     * logits are never kept: their buffer turns into that gradient in place).
     *
     * @param tokens    i32 [B, T] input ids
     * @param targets   i32 [B, T] next-token ids; -1 excludes a position from the loss
     * @param lossScale multiplies the gradient (e.g. 1/micro-batches under gradient accumulation)
     * @throws IllegalArgumentException if T exceeds the context length or shapes disagree
     */
    public Pass forward(StepArena arena, Tensor tokens, Tensor targets, double lossScale) {
        return new Pass(whole.forward(arena, tokens, targets, null, true, lossScale));
    }

    /** Mean loss of {@code tokens} predicting {@code targets}, without gradients (validation). */
    public double evaluate(StepArena arena, Tensor tokens, Tensor targets) {
        return whole.forward(arena, tokens, targets, null, false, 1).loss();
    }

    /**
     * Accumulates every parameter's gradient for the loss of {@code pass} (times its loss scale).
     * Call once per forward, with the same arena still open.
     */
    public void backward(StepArena arena, Pass pass) {
        whole.backward(arena, pass.pass, null);
    }

    /**
     * Next-token logits for every position, without a loss (generation checks, scoring).
     *
     * @param tokens i32 [B, T]
     * @return logits [B·T, V], allocated in {@code arena}
     */
    public Tensor logits(StepArena arena, Tensor tokens) {
        return whole.forward(arena, tokens, null, null, false, 1).logits();
    }

    /**
     * Whether {@link #decode} serves a model of {@code config}: every block type does (LayerNorm or RMSNorm, GELU MLP,
     * SwiGLU or mixture of experts, learned or rotary positions, grouped-query attention, pre-LN, post-LN or DeepNorm
     * residuals); PanGu-α's top query layer does not.
     */
    public static boolean canDecode(ModelConfig config) {
        return GptPart.decodeRefusal(config) == null;
    }

    /**
     * Decoding with a key/value cache: the next-token logits [T, V] of the T new tokens (i32 [1, T]) of one sequence,
     * which continue the {@code cache.length()} positions already in {@code cache}; their keys and values are appended
     * to it. Every block runs its training code on the new rows, except that attention reads the cache (see
     * {@link GptPart#decode}). Feeding a sequence token by token, or in chunks, gives the logits of {@link #logits}
     * over the whole of it, up to rounding.
     *
     * @throws IllegalArgumentException if {@link #canDecode} refuses the model, its parameters are not f32, the cache
     *                                  belongs to another model, or the tokens do not fit after the cache's positions
     */
    public Tensor decode(StepArena arena, KvCache cache, Tensor tokens) {
        return whole.decode(arena, cache, tokens);
    }

    /** Frees the parameters. */
    @Override
    public void close() {
        params.close();
    }
}
