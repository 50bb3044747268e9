package dev.shardwise.model;

import dev.shardwise.core.kernels.CrossEntropy;
import dev.shardwise.core.kernels.Embedding;
import dev.shardwise.core.kernels.Gemm;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.memory.StepArena;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.ArrayList;
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
 * gradients. All activations live in the caller's {@link StepArena}, freed when it closes.
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
    private final Parameter tokenEmbedding;      // wte [V, C], also the output head
    private final Parameter positionEmbedding;   // wpe [contextLength, C], or null with rotary positions
    private final List<TransformerBlock> blocks = new ArrayList<>();
    private final TopQueryLayer topQuery;        // or null
    private final Norm finalNorm;                // pre-LN only; post-LN blocks end in a norm already
    private final ParameterSet.Unit embeddingUnit;
    private final List<ParameterSet.Unit> blockUnits = new ArrayList<>();
    private final ParameterSet.Unit finalUnit;   // or null
    private Hooks hooks = Hooks.NONE;

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
     */
    public interface Hooks {
        /** No calls have any effect: single rank, or data parallelism that reduces after backward. */
        Hooks NONE = new Hooks() { };

        default void beforeForward(ParameterSet.Unit unit) { }

        default void afterForward(ParameterSet.Unit unit) { }

        default void beforeBackward(ParameterSet.Unit unit) { }

        default void afterBackward(ParameterSet.Unit unit) { }
    }

    /** The state one forward pass leaves for backward, and its loss. */
    public static final class Pass {
        private final int b;
        private final int t;
        private final Tensor tokens;                      // [B·T] i32
        private final Tensor positions;                   // [B·T] i32
        private final Tensor x0;                          // embeddings [B·T, C]
        private final List<TransformerBlock.Saved> blocks;
        private final TopQueryLayer.Saved topQuery;
        private final Norm.Saved finalNorm;
        private final Tensor headInput;                   // what the output head reads [B·T, C]
        private final Tensor dlogits;                     // [B·T, V], d(loss·scale)/d(logits)
        private final double loss;
        private final int countedTokens;

        private Pass(Trunk trunk, Tensor dlogits, double loss, int countedTokens) {
            this(trunk.b, trunk.t, trunk.ids, trunk.positions, trunk.x0, trunk.blocks, trunk.topQuery, trunk.finalNorm,
                    trunk.headInput, dlogits, loss, countedTokens);
        }

        private Pass(int b, int t, Tensor tokens, Tensor positions, Tensor x0, List<TransformerBlock.Saved> blocks,
                     TopQueryLayer.Saved topQuery, Norm.Saved finalNorm, Tensor headInput, Tensor dlogits, double loss,
                     int countedTokens) {
            this.b = b;
            this.t = t;
            this.tokens = tokens;
            this.positions = positions;
            this.x0 = x0;
            this.blocks = blocks;
            this.topQuery = topQuery;
            this.finalNorm = finalNorm;
            this.headInput = headInput;
            this.dlogits = dlogits;
            this.loss = loss;
            this.countedTokens = countedTokens;
        }

        /** Mean cross-entropy over the targets that are not ignored (-1), in nats. */
        public double loss() { return loss; }

        /** Targets that counted towards the loss. */
        public int countedTokens() { return countedTokens; }
    }

    private static final String EMBEDDINGS = "embeddings", FINAL = "final";

    /** Declares every parameter of a GPT with {@code config}, in checkpoint order. */
    public static ParameterSet.Builder declare(ModelConfig config) {
        ParameterSet.Builder builder = ParameterSet.builder();
        builder.unit(EMBEDDINGS);
        builder.declare("wte", new ParameterSet.Init.Normal(GptInit.STD), false, config.vocabSize(), config.hidden());
        if (config.positions() == ModelConfig.Positions.LEARNED) {
            builder.declare("wpe", new ParameterSet.Init.Normal(GptInit.STD), false, config.contextLength(), config.hidden());
        }
        for (int l = 0; l < config.layers(); l++) TransformerBlock.declare(builder.unit("h." + l), "h." + l, config);
        if (config.topQueryLayer() || config.residual() == ModelConfig.Residual.PRE_LN) builder.unit(FINAL);
        if (config.topQueryLayer()) TopQueryLayer.declare(builder, "top", config);
        if (config.residual() == ModelConfig.Residual.PRE_LN) Norm.declare(builder, "ln_f", config);
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

    /** A model over existing parameters (declared by {@link #declare}); the model takes ownership of them. */
    public Gpt(ModelConfig config, ParameterSet params) {
        this.config = config;
        this.params = params;
        this.tokenEmbedding = params.get("wte");
        this.positionEmbedding = config.positions() == ModelConfig.Positions.LEARNED ? params.get("wpe") : null;
        for (int l = 0; l < config.layers(); l++) blocks.add(new TransformerBlock(params, "h." + l, config, Recompute.NONE));
        this.topQuery = config.topQueryLayer() ? new TopQueryLayer(params, "top", config) : null;
        this.finalNorm = config.residual() == ModelConfig.Residual.PRE_LN ? Norm.create(params, "ln_f", config) : null;
        ParameterSet.Unit embeddings = null, last = null;
        for (ParameterSet.Unit u : params.units()) {
            if (u.name().equals(EMBEDDINGS)) embeddings = u;
            else if (u.name().equals(FINAL)) last = u;
            else blockUnits.add(u);
        }
        if (embeddings == null || blockUnits.size() != config.layers()) {
            throw new IllegalArgumentException("the parameters were not declared by Gpt.declare: units " + params.units()
                    .stream().map(ParameterSet.Unit::name).toList() + ", expected embeddings, h.0..h." + (config.layers() - 1)
                    + " and final");
        }
        this.embeddingUnit = embeddings;
        this.finalUnit = last;
    }

    /**
     * Makes every later forward and backward call {@code hooks} around each unit (see {@link Hooks});
     * {@link Hooks#NONE} restores the plain model.
     */
    public void useHooks(Hooks hooks) {
        this.hooks = Objects.requireNonNull(hooks, "hooks");
    }

    public ModelConfig config() { return config; }
    public ParameterSet parameters() { return params; }

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
        return run(arena, tokens, targets, true, lossScale);
    }

    /** Mean loss of {@code tokens} predicting {@code targets}, without gradients (validation). */
    public double evaluate(StepArena arena, Tensor tokens, Tensor targets) {
        return run(arena, tokens, targets, false, 1).loss;
    }

    /**
     * Accumulates every parameter's gradient for the loss of {@code pass} (times its loss scale).
     * Call once per forward, with the same arena still open.
     */
    public void backward(StepArena arena, Pass pass) {
        int n = pass.b * pass.t, c = config.hidden();
        DType dtype = params.dtype();
        hooks.beforeBackward(embeddingUnit);
        // logits = h·wteᵀ: dh = dlogits·wte, dwte += dlogitsᵀ·h
        Tensor dhead = arena.allocateForOverwrite(dtype, n, c);
        Gemm.matmul(dhead, pass.dlogits, tokenEmbedding.value(), false, false, 1f, 0f);
        Gemm.matmul(tokenEmbedding.grad(), pass.dlogits, pass.headInput, true, false, 1f, 1f);
        Tensor trunkOutput = pass.topQuery != null ? pass.topQuery.out() : blockOutput(pass, blocks.size() - 1);
        Tensor dstream = dhead;
        if (finalUnit != null) hooks.beforeBackward(finalUnit);
        if (finalNorm != null) {
            dstream = arena.allocate(dtype, n, c);
            finalNorm.backward(dstream, dhead, trunkOutput, pass.finalNorm);
        }
        if (topQuery != null) {
            Tensor dinput = arena.allocate(dtype, n, c);
            topQuery.backward(arena, dinput, dstream, blockOutput(pass, blocks.size() - 1), pass.positions, pass.b, pass.t,
                    pass.topQuery);
            dstream = dinput;
        }
        if (finalUnit != null) hooks.afterBackward(finalUnit);
        for (int l = blocks.size() - 1; l >= 0; l--) {
            Tensor dinput = arena.allocateForOverwrite(dtype, n, c);   // the block writes it
            hooks.beforeBackward(blockUnits.get(l));
            blocks.get(l).backward(arena, dinput, dstream, blockOutput(pass, l - 1), pass.b, pass.t, pass.blocks.get(l));
            hooks.afterBackward(blockUnits.get(l));
            dstream = dinput;
        }
        Embedding.backward(tokenEmbedding.grad(), dstream, pass.tokens);
        if (positionEmbedding != null) Embedding.backward(positionEmbedding.grad(), dstream, pass.positions);
        hooks.afterBackward(embeddingUnit);
    }

    /** Output of block {@code l} (the embeddings for l = -1). */
    private static Tensor blockOutput(Pass pass, int l) {
        return l < 0 ? pass.x0 : pass.blocks.get(l).out();
    }

    /**
     * Next-token logits for every position, without a loss (generation checks, scoring).
     *
     * @param tokens i32 [B, T]
     * @return logits [B·T, V], allocated in {@code arena}
     */
    public Tensor logits(StepArena arena, Tensor tokens) {
        return trunk(arena, tokens).logits;
    }

    /** Embeddings, blocks, final norm and head: what forward computes before the loss. */
    private record Trunk(int b, int t, Tensor ids, Tensor positions, Tensor x0, List<TransformerBlock.Saved> blocks,
                         TopQueryLayer.Saved topQuery, Norm.Saved finalNorm, Tensor headInput, Tensor logits) { }

    private Trunk trunk(StepArena arena, Tensor tokens) {
        if (tokens.rank() != 2 || tokens.dtype() != DType.I32) {
            throw new IllegalArgumentException("tokens must be i32 [B, T], got " + tokens.describe());
        }
        int b = tokens.dim(0), t = tokens.dim(1), n = b * t, c = config.hidden(), v = config.vocabSize();
        if (t > config.contextLength()) {
            throw new IllegalArgumentException("sequence length T=" + t + " exceeds the model's context length "
                    + config.contextLength() + " (model.contextLength); use T <= " + config.contextLength());
        }
        DType dtype = params.dtype();
        Tensor ids = contiguousCopy(arena, tokens).view(n);
        Tensor positions = arena.allocateForOverwrite(DType.I32, n);
        for (int i = 0; i < n; i++) positions.segment().set(ValueLayout.JAVA_INT, 4L * i, i % t);

        Tensor x0 = arena.allocateForOverwrite(dtype, n, c);
        hooks.beforeForward(embeddingUnit);
        Embedding.forward(x0, ids, tokenEmbedding.value(), false);
        if (positionEmbedding != null) Embedding.forward(x0, positions, positionEmbedding.value(), true);
        hooks.afterForward(embeddingUnit);
        List<TransformerBlock.Saved> saved = new ArrayList<>(blocks.size());
        Tensor stream = x0;
        for (int l = 0; l < blocks.size(); l++) {
            hooks.beforeForward(blockUnits.get(l));
            TransformerBlock.Saved s = blocks.get(l).forward(arena, stream, b, t);
            hooks.afterForward(blockUnits.get(l));
            saved.add(s);
            stream = s.out();
        }
        if (finalUnit != null) hooks.beforeForward(finalUnit);
        TopQueryLayer.Saved top = null;
        if (topQuery != null) {
            top = topQuery.forward(arena, stream, positions, b, t);
            stream = top.out();
        }
        Norm.Saved fn = finalNorm != null ? finalNorm.forward(arena, stream) : null;
        if (finalUnit != null) hooks.afterForward(finalUnit);
        Tensor headInput = fn != null ? fn.out() : stream;
        Tensor logits = arena.allocateForOverwrite(dtype, n, v);
        hooks.beforeForward(embeddingUnit);
        Gemm.matmul(logits, headInput, tokenEmbedding.value(), false, true, 1f, 0f);
        hooks.afterForward(embeddingUnit);
        return new Trunk(b, t, ids, positions, x0, saved, top, fn, headInput, logits);
    }

    private Pass run(StepArena arena, Tensor tokens, Tensor targets, boolean withGradient, double lossScale) {
        Trunk trunk = trunk(arena, tokens);
        int n = trunk.b * trunk.t;
        if (targets.dtype() != DType.I32 || targets.rank() != 2 || targets.dim(0) != trunk.b || targets.dim(1) != trunk.t) {
            throw new IllegalArgumentException("targets must be i32 [" + trunk.b + ", " + trunk.t + "], got " + targets.describe());
        }
        Tensor flatTargets = contiguousCopy(arena, targets).view(n);
        int counted = 0;
        for (int i = 0; i < n; i++) if (flatTargets.segment().get(ValueLayout.JAVA_INT, 4L * i) >= 0) counted++;
        Tensor losses = arena.allocateForOverwrite(params.dtype(), n);
        if (withGradient) {
            CrossEntropy.forwardBackward(losses, trunk.logits, trunk.logits, flatTargets, lossScale / Math.max(counted, 1));
        } else {
            CrossEntropy.loss(losses, trunk.logits, flatTargets);
        }
        double sum = 0;
        for (int i = 0; i < n; i++) sum += losses.getDouble(i);   // fixed order
        double loss = counted == 0 ? 0 : sum / counted;
        return new Pass(trunk, withGradient ? trunk.logits : null, loss, counted);
    }

    /** {@code ids} i32 [B, T] itself when contiguous, else a contiguous copy (a column slice of a [B, T+1] batch). */
    private static Tensor contiguousCopy(StepArena arena, Tensor ids) {
        if (ids.isContiguous()) return ids;
        Tensor copy = arena.allocateForOverwrite(DType.I32, ids.shape());
        if (ids.hasUnitInnerStride()) {
            int rows = ids.dim(0), cols = ids.dim(1);
            for (int r = 0; r < rows; r++) {
                MemorySegment.copy(ids.segment(), ids.byteOffset() + 4L * r * ids.stride(0),
                        copy.segment(), copy.byteOffset() + 4L * r * cols, 4L * cols);
            }
        } else {
            copy.copyFrom(ids.toDoubleArray());
        }
        return copy;
    }

    /** Frees the parameters. */
    @Override
    public void close() {
        params.close();
    }
}
