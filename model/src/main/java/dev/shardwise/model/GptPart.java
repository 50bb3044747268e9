package dev.shardwise.model;

import dev.shardwise.core.kernels.CrossEntropy;
import dev.shardwise.core.kernels.Embedding;
import dev.shardwise.core.kernels.Vectors;
import dev.shardwise.core.memory.StepArena;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.ArrayList;
import java.util.List;
import java.util.Objects;

/**
 * A contiguous part of a GPT, the piece a pipeline stage (or one of its virtual chunks) runs (Megatron's model
 * chunk, Narayanan et al. 2021): optionally the embedding, then blocks [first, end), then optionally the final
 * layers (top query layer, final norm), the output head tied to the token embedding, and the loss. The whole model
 * is one part ({@link Gpt}); a pipeline cuts it into parts at block boundaries ({@link Span}).
 *
 * <p>Stage API: {@link #forward} takes the micro-batch (tokens and targets, which every stage can read) and the
 * part's input activation [B·T, C] (null on the first part, whose input is the tokens) and returns a {@link Pass}
 * whose {@link Pass#output} [B·T, C] feeds the next part (null on the last part, which ends in the loss).
 * {@link #backward} takes the gradient of that output (null on the last part, which starts from the loss) and
 * returns the gradient of the input (null on the first part), accumulating every parameter gradient of the part.
 * Zero-bubble schedules (Qi et al. 2023) split it: {@link #backwardInput} (B) returns the input gradient and queues
 * the weight-gradient work in the pass, {@link #backwardWeight} (W) runs it later; the gradients come out
 * bit-identical to {@link #backward}'s.
 *
 * <p>Tied head (Press and Wolf 2017): when the part holding the head does not also hold the embedding, it holds
 * its own copy of {@code wte} in a unit named {@value #HEAD}; the two copies' gradients are summed across the
 * stages that hold them (Megatron's embedding group), so they stay equal.
 *
 * <p>Tensor parallelism (Shoeybi et al. 2019), with a {@link TensorParallel} of size tp > 1: the blocks split their
 * attention heads and MLP features ({@link TransformerBlock}), the token embedding and the tied head split the
 * vocabulary ({@link VocabParallelEmbedding}, {@link VocabParallelCrossEntropy}: rank r holds rows
 * [r·V'/tp, (r+1)·V'/tp) of wte, V' = V rounded up to a multiple of tp), and the residual stream, the norms and wpe
 * are replicated. The head computes only its slice of the logits; the loss reduces per-row maxima, sums of
 * exponentials and target logits over the tp group instead of gathering them. The head's input gradient is
 * all-reduced (f's backward). PanGu-α's top query layer splits as the blocks do ({@link TopQueryLayer}).
 *
 * <p>Sequence parallelism (Korthikanti et al. 2022; {@link TensorParallel#sequenceParallel}): the residual stream
 * between the embedding and the head is this rank's T/tp positions of each sequence, [B·T/tp, C] (rank r: positions
 * [r·T/tp, (r+1)·T/tp)), and so are the activations a pipeline stage sends and receives ({@link #activationRows}).
 * The embedding reduce-scatters its partial lookups into the shard (instead of all-reducing them) and adds wpe to the
 * shard's positions; the blocks keep their norms and residual sums on the shard; the final norm runs on the shard and
 * its output is all-gathered before the vocabulary-parallel head (and again in backward, for dwte); the head's input
 * gradient is reduce-scattered into the shard. T must be a multiple of tp.
 */
public final class GptPart {
    /** The unit of the token embedding (and the positions', unless split off), which a tied head reads again. */
    public static final String EMBEDDINGS = "embeddings";
    static final String POSITIONS = "positions", FINAL = "final", HEAD = "head";

    /**
     * Which pieces of the model a part holds.
     *
     * @param embedding  the token (and learned position) embedding
     * @param firstBlock first transformer block, in [0, L]
     * @param endBlock   one past the last block, in [firstBlock, L]
     * @param head       the final layers, the tied output head and the loss
     */
    public record Span(boolean embedding, int firstBlock, int endBlock, boolean head) {
        /** @throws IllegalArgumentException if the block range is reversed or negative, or the part is empty */
        public Span {
            if (firstBlock < 0 || endBlock < firstBlock) {
                throw new IllegalArgumentException("blocks [" + firstBlock + ", " + endBlock + ") are not a range");
            }
            if (!embedding && !head && firstBlock == endBlock) {
                throw new IllegalArgumentException("a model part must hold something: the embedding, a block or the head");
            }
        }

        /** The whole model of {@code config}. */
        public static Span whole(ModelConfig config) {
            return new Span(true, 0, config.layers(), true);
        }

        /** Number of blocks. */
        public int blocks() {
            return endBlock - firstBlock;
        }

        @Override
        public String toString() {
            return (embedding ? "embedding + " : "") + "blocks [" + firstBlock + ", " + endBlock + ")" + (head ? " + head" : "");
        }
    }

    private final ModelConfig config;
    private final Span span;
    private final DType dtype;
    private final ParameterSet params;   // whose precision runs the head's products
    private boolean fuseHead = true;     // see fuseHead(boolean)
    private final Parameter tokenEmbedding;      // wte [V, C]: the embedding's, the head's, or both; null if neither
    private final Parameter positionEmbedding;   // wpe [contextLength, C] on the embedding part, or null
    private final List<TransformerBlock> blocks = new ArrayList<>();
    private final List<ParameterSet.Unit> blockUnits = new ArrayList<>();
    private final TopQueryLayer topQuery;        // or null
    private final Norm finalNorm;                // pre-LN only; post-LN blocks end in a norm already
    private final ParameterSet.Unit embeddingUnit;   // wte (+ wpe when not split), or null
    private final ParameterSet.Unit positionsUnit;   // wpe in its own unit (pipelines), or null
    private final ParameterSet.Unit finalUnit;       // or null
    private final ParameterSet.Unit headUnit;        // the head's own wte copy, or null (the embedding's wte serves)
    private final TensorParallel tp;
    private final VocabParallelEmbedding vocab;            // tp > 1 only
    private final VocabParallelCrossEntropy crossEntropy;  // tp > 1 only
    private final MoeRun moe;                              // what the part's MoE blocks share (none: inactive)
    private final boolean sequenceParallel;
    private Gpt.Hooks hooks = Gpt.Hooks.NONE;

    /**
     * Declares the parameters of {@code span} into {@code builder}, under their global names (checkpoints key on
     * them), in units: {@code embeddings} (wte, wpe; with {@code splitEmbedding} wte alone and wpe in {@code positions},
     * so that wte's unit is laid out exactly as the head's copy), one per block ({@code h.l}), {@code final}, and
     * {@code head} (a copy of wte) when the span holds the head but not the embedding.
     */
    public static void declare(ParameterSet.Builder builder, ModelConfig config, Span span, boolean splitEmbedding) {
        declare(builder, config, span, splitEmbedding, TensorParallel.NONE);
    }

    /**
     * As {@link #declare(ParameterSet.Builder, ModelConfig, Span, boolean)}, rank {@code tp.tpRank()}'s slices under
     * tensor parallelism: wte's vocabulary rows (padded to ⌈V/tp⌉), the blocks' head and feature slices; every
     * parameter keeps its global name and records its {@link ParameterSet.Slice}.
     *
     * @throws IllegalArgumentException if tp does not divide the heads or MLP hidden size, or neither divides nor
     *                                  multiplies the kv heads
     */
    public static void declare(ParameterSet.Builder builder, ModelConfig config, Span span, boolean splitEmbedding,
                               TensorParallel tp) {
        declare(builder, config, span, splitEmbedding, tp, ExpertParallel.NONE);
    }

    /**
     * As {@link #declare(ParameterSet.Builder, ModelConfig, Span, boolean, TensorParallel)}, with only rank
     * {@code ep.epRank()}'s E/ep experts of each MoE block (under their global numbers) under expert parallelism.
     *
     * @throws IllegalArgumentException also if ep does not divide the experts
     */
    public static void declare(ParameterSet.Builder builder, ModelConfig config, Span span, boolean splitEmbedding,
                               TensorParallel tp, ExpertParallel ep) {
        if (span.endBlock() > config.layers()) {
            throw new IllegalArgumentException("blocks [" + span.firstBlock() + ", " + span.endBlock() + ") exceed the model's "
                    + config.layers() + " layers");
        }
        if (span.embedding()) {
            builder.unit(EMBEDDINGS);
            declareTokenEmbedding(builder, config, tp);
            if (config.positions() == ModelConfig.Positions.LEARNED) {
                if (splitEmbedding) builder.unit(POSITIONS);
                builder.declare("wpe", new ParameterSet.Init.Normal(GptInit.STD), false, config.contextLength(), config.hidden());
            }
        }
        for (int l = span.firstBlock(); l < span.endBlock(); l++) {
            TransformerBlock.declare(builder.unit("h." + l), "h." + l, config, tp, l, ep);
        }
        if (span.head()) {
            if (config.topQueryLayer() || config.residual() == ModelConfig.Residual.PRE_LN) builder.unit(FINAL);
            if (config.topQueryLayer()) TopQueryLayer.declare(builder, "top", config, tp);
            if (config.residual() == ModelConfig.Residual.PRE_LN) Norm.declare(builder, "ln_f", config, tp);
            if (!span.embedding()) {
                builder.unit(HEAD);
                declareTokenEmbedding(builder, config, tp);
            }
        }
    }

    /** wte [V, C], or rank {@code tp.tpRank()}'s vocabulary slice of it [⌈V/tp⌉, C]. */
    private static void declareTokenEmbedding(ParameterSet.Builder builder, ModelConfig config, TensorParallel tp) {
        ParameterSet.Init init = new ParameterSet.Init.Normal(GptInit.STD);
        if (tp.size() == 1) {
            builder.declare("wte", init, false, config.vocabSize(), config.hidden());
        } else {
            builder.declareSlice("wte", init, false, VocabParallelEmbedding.slice(config.vocabSize(), config.hidden(), tp));
        }
    }

    /**
     * The part {@code span} over {@code params}, which hold (at least) what {@link #declare} declared for it; the
     * caller keeps ownership of the parameters.
     *
     * @throws IllegalArgumentException if a parameter or unit of the span is missing
     */
    public GptPart(ModelConfig config, ParameterSet params, Span span) {
        this(config, params, span, Recompute.NONE, 1);
    }

    /**
     * As {@link #GptPart(ModelConfig, ParameterSet, Span)}, recomputing activations by {@code recompute} in every
     * {@code recomputeEvery}-th block of the model (blocks l with l % recomputeEvery == 0; 1: every block).
     *
     * @throws IllegalArgumentException if recomputeEvery is below 1
     */
    public GptPart(ModelConfig config, ParameterSet params, Span span, Recompute recompute, int recomputeEvery) {
        this(config, params, span, recompute, recomputeEvery, TensorParallel.NONE);
    }

    /**
     * As {@link #GptPart(ModelConfig, ParameterSet, Span, Recompute, int)}, tensor-parallel over {@code tp} (the
     * parameters declared by {@link #declare(ParameterSet.Builder, ModelConfig, Span, boolean, TensorParallel)} with
     * the same tp and tp rank).
     *
     * @throws IllegalArgumentException if recomputeEvery is below 1 or tp does not divide what it splits
     */
    public GptPart(ModelConfig config, ParameterSet params, Span span, Recompute recompute, int recomputeEvery,
                   TensorParallel tp) {
        this(config, params, span, recompute, recomputeEvery, tp, ExpertParallel.NONE);
    }

    /**
     * As {@link #GptPart(ModelConfig, ParameterSet, Span, Recompute, int, TensorParallel)}, expert-parallel over
     * {@code ep} (GShard): each MoE block holds this rank's E/ep experts (declared with the same ep) and sends each
     * token to its experts' rank and back by all-to-alls over the group.
     *
     * @throws IllegalArgumentException also if ep does not divide the experts
     */
    public GptPart(ModelConfig config, ParameterSet params, Span span, Recompute recompute, int recomputeEvery,
                   TensorParallel tp, ExpertParallel ep) {
        this.moe = new MoeRun(ep);
        this.tp = Objects.requireNonNull(tp, "tp");
        this.vocab = tp.size() > 1 ? new VocabParallelEmbedding(tp, config.vocabSize()) : null;
        this.crossEntropy = tp.size() > 1 ? new VocabParallelCrossEntropy(tp, vocab) : null;
        this.sequenceParallel = tp.sequenceParallel();
        if (recomputeEvery < 1) {
            throw new IllegalArgumentException("recomputeEvery=" + recomputeEvery + " must be at least 1 (1: every block)");
        }
        this.config = config;
        this.dtype = params.dtype();
        this.params = params;
        this.span = span;
        this.tokenEmbedding = span.embedding() || span.head() ? params.get("wte") : null;
        this.positionEmbedding = span.embedding() && config.positions() == ModelConfig.Positions.LEARNED ? params.get("wpe") : null;
        for (int l = span.firstBlock(); l < span.endBlock(); l++) {
            blocks.add(new TransformerBlock(params, "h." + l, config, l % recomputeEvery == 0 ? recompute : Recompute.NONE, tp, l, moe));
            blockUnits.add(unit(params, "h." + l));
        }
        this.topQuery = span.head() && config.topQueryLayer() ? new TopQueryLayer(params, "top", config, tp) : null;
        this.finalNorm = span.head() && config.residual() == ModelConfig.Residual.PRE_LN ? Norm.create(params, "ln_f", config) : null;
        this.embeddingUnit = span.embedding() ? unit(params, EMBEDDINGS) : null;
        this.positionsUnit = span.embedding() ? find(params, POSITIONS) : null;
        this.finalUnit = topQuery != null || finalNorm != null ? unit(params, FINAL) : null;
        this.headUnit = span.head() && !span.embedding() ? unit(params, HEAD) : null;
    }

    private static ParameterSet.Unit find(ParameterSet params, String name) {
        for (ParameterSet.Unit u : params.units()) if (u.name().equals(name)) return u;
        return null;
    }

    private static ParameterSet.Unit unit(ParameterSet params, String name) {
        ParameterSet.Unit u = find(params, name);
        if (u == null) {
            throw new IllegalArgumentException("the parameters have no unit '" + name + "' (units " + params.units().stream()
                    .map(ParameterSet.Unit::name).toList() + "); declare them with GptPart.declare / Gpt.declare");
        }
        return u;
    }

    /** What this part holds. */
    public Span span() { return span; }

    /** What the part's mixture-of-experts blocks record (their load, their auxiliary losses); inactive without any. */
    public MoeRun moe() { return moe; }

    /**
     * Rows of the activation this part takes as input and gives as output over {@code b} sequences of {@code t}
     * positions (what a pipeline stage receives and sends): B·T, or under sequence parallelism this rank's shard,
     * B·T/tp.
     *
     * @throws IllegalArgumentException under sequence parallelism, if tp does not divide T
     */
    public int activationRows(int b, int t) {
        return sequenceParallel ? b * shardLength(t) : b * t;
    }

    /** T/tp, the positions of each sequence this rank holds under sequence parallelism. */
    private int shardLength(int t) {
        if (t % tp.size() != 0) {
            throw new IllegalArgumentException("sequence parallelism splits each sequence of T=" + t + " positions over tp="
                    + tp.size() + " ranks, and " + tp.size() + " does not divide " + t + "; use a sequence length that is a "
                    + "multiple of " + tp.size() + " (data.seqLength / model.contextLength) or turn sequenceParallel off");
        }
        return t / tp.size();
    }

    /** The model this is a part of. */
    public ModelConfig config() { return config; }

    /** Makes later passes call {@code hooks} around each unit this part uses (see {@link Gpt.Hooks}). */
    public void useHooks(Gpt.Hooks hooks) {
        this.hooks = Objects.requireNonNull(hooks, "hooks");
    }

    /**
     * Makes later forwards of this part's blocks run {@code substitute} in place of their feed-forward branch (null:
     * their own again); see {@link FeedForwardSubstitute}.
     */
    public void substituteFeedForward(FeedForwardSubstitute substitute) {
        for (TransformerBlock block : blocks) block.substituteFeedForward(substitute);
    }

    /** How far a pass's backward has run: whole backward and W end in DONE, B alone in INPUT_DONE. */
    private enum BackwardState { NOT_STARTED, INPUT_DONE, DONE }

    /** The state one forward pass through the part leaves for its backward, and (last part) the loss. */
    public static final class Pass {
        private final int b, t;
        private final Tensor ids;                      // [B·T] i32, first part only
        private VocabParallelEmbedding.Lookup lookup;  // first part under tp > 1 only
        private final Tensor positions;                // [B·T] i32
        private final Tensor input;                    // the part's input [B·T, C]: embeddings or received activation
        private final List<TransformerBlock.Saved> blocks;
        private final TopQueryLayer.Saved topQuery;
        private final Norm.Saved finalNorm;
        private final Tensor headInput;                // [B·T, C] (sequence parallel: the shard [B·T/tp, C]), last part only
        private Tensor logits;                         // [B·T, V]; after a training forward d(loss·scale)/d(logits); null when fused
        private Tensor dhead;                          // [B·T, C], d(loss·scale)/d(head input), fused training forward only
        private Tensor dEmbedding;                     // [V, C], the head's wte gradient when wte's was not resident, or null
        private double loss = Double.NaN;
        private int countedTokens;
        private BackwardState backward = BackwardState.NOT_STARTED;
        private WeightGradients weights;               // W queued by backwardInput, until backwardWeight runs it

        private Pass(int b, int t, Tensor ids, Tensor positions, Tensor input, List<TransformerBlock.Saved> blocks,
                     TopQueryLayer.Saved topQuery, Norm.Saved finalNorm, Tensor headInput) {
            this.b = b;
            this.t = t;
            this.ids = ids;
            this.positions = positions;
            this.input = input;
            this.blocks = blocks;
            this.topQuery = topQuery;
            this.finalNorm = finalNorm;
            this.headInput = headInput;
        }

        /** The part's output [B·T, C] ([B·T/tp, C] under sequence parallelism), the next part's input; null on the last part. */
        public Tensor output() {
            if (headInput != null) return null;
            return blocks.isEmpty() ? input : blocks.getLast().out();
        }

        /** Mean cross-entropy over the counted targets, in nats; NaN unless this part holds the head. */
        public double loss() { return loss; }

        /** Targets that counted towards the loss (0 unless this part holds the head). */
        public int countedTokens() { return countedTokens; }

        /** Next-token logits [B·T, V] (under tp > 1 this rank's slice [B·T, ⌈V/tp⌉]) of a forward without the loss; null otherwise. */
        Tensor logits() { return logits; }
    }

    /**
     * Forward through the part. On the head part the loss is computed, fused with its gradient with respect to
     * the logits when {@code withGradient} (the logits are never kept: their buffer turns into that gradient).
     *
     * @param tokens    i32 [B, T] input ids (read by the embedding part; its shape gives B and T to every part)
     * @param targets   i32 [B, T] next-token ids, -1 excludes a position; read by the head part only; with a null
     *                  {@code targets} the head part stops at the logits
     * @param input     the part's input [B·T, C] ({@link #activationRows}: [B·T/tp, C] under sequence
     *                  parallelism); null on the embedding part
     * @param lossScale multiplies the loss gradient (1/micro-batches under gradient accumulation)
     * @throws IllegalArgumentException if T exceeds the context length, shapes disagree, or tp does not divide T
     *                                  under sequence parallelism
     */
    public Pass forward(StepArena arena, Tensor tokens, Tensor targets, Tensor input, boolean withGradient, double lossScale) {
        if (tokens.rank() != 2 || tokens.dtype() != DType.I32) {
            throw new IllegalArgumentException("tokens must be i32 [B, T], got " + tokens.describe());
        }
        int b = tokens.dim(0), t = tokens.dim(1), n = b * t, c = config.hidden();
        int local = activationRows(b, t);   // rows of the residual stream on this rank
        if (t > config.contextLength()) {
            throw new IllegalArgumentException("sequence length T=" + t + " exceeds the model's context length "
                    + config.contextLength() + " (model.contextLength); use T <= " + config.contextLength());
        }
        if (span.embedding() != (input == null)) {
            throw new IllegalArgumentException(span.embedding() ? "the embedding part takes no input activation"
                    : "part " + span + " needs its input activation [" + local + ", " + c + "]");
        }
        if (input != null && (input.rank() != 2 || input.dim(0) != local || input.dim(1) != c)) {
            throw new IllegalArgumentException("part " + span + " takes input [" + local + ", " + c + "]"
                    + (sequenceParallel ? " (its sequence shard)" : "") + ", got " + input.describe());
        }
        Tensor ids = null, positions = null;
        if (span.embedding()) ids = contiguousCopy(arena, tokens).view(n);
        if (span.embedding() || topQuery != null) {
            positions = arena.allocateForOverwrite(DType.I32, n);
            for (int i = 0; i < n; i++) positions.segment().set(ValueLayout.JAVA_INT, 4L * i, i % t);
        }
        Tensor streamPositions = positions;   // the positions of the stream's rows: this rank's shard's under SP
        if (positions != null && sequenceParallel) {
            int ts = shardLength(t), first = tp.tpRank() * ts;
            streamPositions = arena.allocateForOverwrite(DType.I32, local);
            for (int i = 0; i < local; i++) streamPositions.segment().set(ValueLayout.JAVA_INT, 4L * i, first + i % ts);
        }
        Tensor stream = input;
        VocabParallelEmbedding.Lookup lookup = null;
        if (span.embedding()) {
            stream = arena.allocateForOverwrite(dtype, local, c);
            hooks.beforeForward(embeddingUnit);
            if (positionsUnit != null) hooks.beforeForward(positionsUnit);
            if (vocab == null) Embedding.forward(stream, ids, tokenEmbedding.value(), false);
            else if (!sequenceParallel) lookup = vocab.forward(arena, stream, ids, tokenEmbedding.value());
            else lookup = vocab.forwardToSequenceShard(arena, stream, ids, tokenEmbedding.value(), b);
            if (positionEmbedding != null) Embedding.forward(stream, streamPositions, positionEmbedding.value(), true);
            if (positionsUnit != null) hooks.afterForward(positionsUnit);
            hooks.afterForward(embeddingUnit);
        }
        Tensor partInput = stream;
        List<TransformerBlock.Saved> saved = new ArrayList<>(blocks.size());
        moe.begin(withGradient, lossScale);
        try {
            for (int l = 0; l < blocks.size(); l++) {
                hooks.beforeForward(blockUnits.get(l));
                TransformerBlock.Saved s = blocks.get(l).forward(arena, stream, b, t);
                hooks.afterForward(blockUnits.get(l));
                saved.add(s);
                stream = s.out();
            }
        } finally {
            moe.end();
        }
        if (!span.head()) {
            Pass pass = new Pass(b, t, ids, positions, partInput, saved, null, null, null);
            pass.lookup = lookup;
            return pass;
        }

        if (finalUnit != null) hooks.beforeForward(finalUnit);
        TopQueryLayer.Saved top = null;
        if (topQuery != null) {
            top = topQuery.forward(arena, stream, positions, b, t);
            stream = top.out();
        }
        Norm.Saved fn = finalNorm != null ? finalNorm.forward(arena, stream) : null;
        if (finalUnit != null) hooks.afterForward(finalUnit);
        Tensor headInput = fn != null ? fn.out() : stream;   // [B·T, C], or the shard [B·T/tp, C]
        if (targets != null && crossEntropy == null && fuseHead) {
            // the loss straight from the head, chunk by chunk: the [B·T, V] logits never exist
            ParameterSet.Unit head = headUnit != null ? headUnit : embeddingUnit;
            Pass pass = new Pass(b, t, ids, positions, partInput, saved, top, fn, headInput);
            pass.lookup = lookup;
            hooks.beforeForward(head);
            fusedLoss(arena, pass, targets, withGradient, lossScale);
            hooks.afterForward(head);
            return pass;
        }
        int vocabRows = vocab == null ? config.vocabSize() : VocabParallelEmbedding.rowsPerRank(config.vocabSize(), tp);
        Tensor logits = arena.allocateForOverwrite(dtype, n, vocabRows);   // [B·T, V] or [B·T, ⌈V/tp⌉]
        ParameterSet.Unit head = headUnit != null ? headUnit : embeddingUnit;
        hooks.beforeForward(head);
        MatmulPrecision precision = params.precision();
        try (StepArena scratch = new StepArena(arena.pool())) {   // the gathered head input, under sequence parallelism
            precision.matmul(logits, wholeHeadInput(scratch, headInput, b), precision.operand(tokenEmbedding), false, true, 1f, 0f);
        }
        hooks.afterForward(head);
        Pass pass = new Pass(b, t, ids, positions, partInput, saved, top, fn, headInput);
        pass.lookup = lookup;
        pass.logits = logits;
        if (targets != null) loss(arena, pass, targets, withGradient, lossScale);
        return pass;
    }

    /**
     * Why cached decoding ({@link #decode}) cannot serve a model of {@code config}, or null when it can. PanGu-α's top
     * query layer is refused: its attention has keys and values of its own, a cache this decoder does not keep.
     */
    static String decodeRefusal(ModelConfig config) {
        if (config.topQueryLayer()) {
            return "cached decoding does not support PanGu-α's top query layer (model.topQueryLayer), whose attention "
                    + "would need a key/value cache of its own; generate with the recomputing decoder (a full forward per token)";
        }
        return null;
    }

    /**
     * Decoding with a key/value cache (inference): runs the T new tokens of one sequence, at positions
     * {@code cache.length()} .. {@code cache.length()+T-1}, through the embedding (learned positions at those
     * offsets), every block in inference mode ({@link TransformerBlock#decode}: attention over the cache, the rest the
     * training code; MoE blocks routed as an evaluation forward routes, without noise), the final norm and the head;
     * appends their keys and values to {@code cache} and returns their next-token logits [T, V], in {@code arena}.
     * Feeding a sequence in several calls gives the logits of one {@link #forward} over it (up to rounding).
     *
     * @param tokens i32 [1, T]
     * @throws IllegalArgumentException if this part is not the whole model on one rank (tp 1, ep 1), the model's
     *                                  parameters are not f32 or it has a top query layer, the cache was made for
     *                                  another model, the tokens are not i32 [1, T], or T more positions do not fit
     *                                  the cache
     */
    public Tensor decode(StepArena arena, KvCache cache, Tensor tokens) {
        if (!span.equals(Span.whole(config)) || tp.size() > 1 || moe.expertParallel().size() > 1) {
            throw new IllegalArgumentException("cached decoding runs the whole model on one rank, but this part holds "
                    + span + " of " + config.layers() + " blocks with tp=" + tp.size() + ", ep=" + moe.expertParallel().size()
                    + "; load the whole model into one Gpt (Gpt.declare(config).allocate(...), then Checkpoint.loadParameters, "
                    + "which reshards any layout) and decode with it");
        }
        String refusal = decodeRefusal(config);
        if (refusal != null) throw new IllegalArgumentException(refusal);
        if (dtype != DType.F32) {
            throw new IllegalArgumentException("cached decoding runs in f32 (its cache is f32), but the parameters are "
                    + dtype.label() + "; allocate them as f32");
        }
        if (!cache.config().equals(config)) {
            throw new IllegalArgumentException("the cache was made for another model (" + cache.config() + "); make one with "
                    + "new KvCache(model.config(), pool)");
        }
        if (tokens.dtype() != DType.I32 || tokens.rank() != 2 || tokens.dim(0) != 1 || tokens.dim(1) < 1) {
            throw new IllegalArgumentException("decode takes the new tokens of one sequence as i32 [1, T] with T >= 1, got "
                    + tokens.describe());
        }
        int t = tokens.dim(1), offset = cache.length(), c = config.hidden();
        if (offset + t > cache.capacity()) {
            throw new IllegalArgumentException(t + " new tokens after the " + offset + " in the cache exceed the context length "
                    + cache.capacity() + " (model.contextLength); feed at most " + (cache.capacity() - offset) + ", or clear the "
                    + "cache and feed the newest tokens again (a sliding window)");
        }
        Tensor ids = contiguousCopy(arena, tokens).view(t);
        Tensor stream = arena.allocateForOverwrite(dtype, t, c);
        hooks.beforeForward(embeddingUnit);
        if (positionsUnit != null) hooks.beforeForward(positionsUnit);
        Embedding.forward(stream, ids, tokenEmbedding.value(), false);
        if (positionEmbedding != null) {
            Tensor positions = arena.allocateForOverwrite(DType.I32, t);
            for (int i = 0; i < t; i++) positions.segment().set(ValueLayout.JAVA_INT, positions.byteOffset() + 4L * i, offset + i);
            Embedding.forward(stream, positions, positionEmbedding.value(), true);
        }
        if (positionsUnit != null) hooks.afterForward(positionsUnit);
        hooks.afterForward(embeddingUnit);
        moe.begin(false, 1);
        try {
            for (int l = 0; l < blocks.size(); l++) {
                hooks.beforeForward(blockUnits.get(l));
                stream = blocks.get(l).decode(arena, stream, cache, offset);
                hooks.afterForward(blockUnits.get(l));
            }
        } finally {
            moe.end();
        }
        cache.advance(t);
        if (finalUnit != null) hooks.beforeForward(finalUnit);
        Tensor headInput = finalNorm != null ? finalNorm.forward(arena, stream).out() : stream;
        if (finalUnit != null) hooks.afterForward(finalUnit);
        Tensor logits = arena.allocateForOverwrite(dtype, t, config.vocabSize());
        hooks.beforeForward(embeddingUnit);
        MatmulPrecision precision = params.precision();
        precision.matmul(logits, headInput, precision.operand(tokenEmbedding), false, true, 1f, 0f);
        hooks.afterForward(embeddingUnit);
        return logits;
    }

    /**
     * The head and the loss fused ({@link FusedHeadLoss}); with the gradient, also dh [B·T, C] for backward and wte's
     * head gradient: accumulated into wte's gradient now when it is resident, else (ZeRO 2 and 3, whose gradient
     * exists only inside backward) into a [V, C] buffer that backward adds on.
     */
    private void fusedLoss(StepArena arena, Pass pass, Tensor targets, boolean withGradient, double lossScale) {
        int n = pass.b * pass.t;
        Tensor flatTargets = flatTargets(arena, pass, targets);
        int counted = counted(flatTargets, n);
        Tensor losses = arena.allocateForOverwrite(dtype, n);
        Tensor dhead = null, dEmbedding = null;
        boolean resident = tokenEmbedding.hasGrad();
        if (withGradient) {
            dhead = arena.allocateForOverwrite(dtype, n, config.hidden());
            dEmbedding = resident ? tokenEmbedding.grad() : arena.allocate(dtype, tokenEmbedding.shape());   // zeroed
        }
        FusedHeadLoss.run(arena.pool(), params.precision(), losses, dhead, dEmbedding, pass.headInput, tokenEmbedding, flatTargets,
                lossScale / Math.max(counted, 1));
        pass.dhead = dhead;
        pass.dEmbedding = resident ? null : dEmbedding;
        lossOf(pass, losses, counted);
    }

    private static Tensor flatTargets(StepArena arena, Pass pass, Tensor targets) {
        if (targets.dtype() != DType.I32 || targets.rank() != 2 || targets.dim(0) != pass.b || targets.dim(1) != pass.t) {
            throw new IllegalArgumentException("targets must be i32 [" + pass.b + ", " + pass.t + "], got " + targets.describe());
        }
        return contiguousCopy(arena, targets).view(pass.b * pass.t);
    }

    private static int counted(Tensor flatTargets, int n) {
        int counted = 0;
        for (int i = 0; i < n; i++) if (flatTargets.segment().get(ValueLayout.JAVA_INT, 4L * i) >= 0) counted++;
        return counted;
    }

    /** The mean over counted targets, summed in row order. */
    private static void lossOf(Pass pass, Tensor losses, int counted) {
        double sum = 0;
        for (int i = 0; i < losses.numel(); i++) sum += losses.getDouble(i);   // fixed order
        pass.loss = counted == 0 ? 0 : sum / counted;
        pass.countedTokens = counted;
    }

    /**
     * Makes the head part compute the loss with the logits materialised whole (false) or fused in row chunks (true,
     * the default; tp = 1 only). For the tests comparing the two.
     */
    void fuseHead(boolean fuse) {
        this.fuseHead = fuse;
    }

    /** Cross-entropy of the pass's logits against {@code targets}; with the gradient, the logits become d(loss·scale)/d(logits). */
    private void loss(StepArena arena, Pass pass, Tensor targets, boolean withGradient, double lossScale) {
        int n = pass.b * pass.t;
        if (targets.dtype() != DType.I32 || targets.rank() != 2 || targets.dim(0) != pass.b || targets.dim(1) != pass.t) {
            throw new IllegalArgumentException("targets must be i32 [" + pass.b + ", " + pass.t + "], got " + targets.describe());
        }
        Tensor flatTargets = contiguousCopy(arena, targets).view(n);
        int counted = 0;
        for (int i = 0; i < n; i++) if (flatTargets.segment().get(ValueLayout.JAVA_INT, 4L * i) >= 0) counted++;
        Tensor losses = arena.allocateForOverwrite(pass.logits.dtype(), n);
        if (crossEntropy != null) {
            crossEntropy.forward(arena, losses, pass.logits, flatTargets, lossScale / Math.max(counted, 1), withGradient);
        } else if (withGradient) {
            CrossEntropy.forwardBackward(losses, pass.logits, pass.logits, flatTargets, lossScale / Math.max(counted, 1));
        } else {
            CrossEntropy.loss(losses, pass.logits, flatTargets);
        }
        double sum = 0;
        for (int i = 0; i < n; i++) sum += losses.getDouble(i);   // fixed order
        pass.loss = counted == 0 ? 0 : sum / counted;
        pass.countedTokens = counted;
        if (!withGradient) pass.logits = null;
    }

    /**
     * Backward through the part: accumulates every parameter gradient of the part for the loss of {@code pass}
     * (times its loss scale) and returns the gradient of the part's input [B·T, C] (null on the embedding part).
     * Call once per forward with gradient, with the same arena still open.
     *
     * @param dOutput gradient of {@link Pass#output} [B·T, C]; null on the head part (it starts from the loss)
     * @throws IllegalStateException if the pass's backward already started ({@link #backwardInput})
     */
    public Tensor backward(StepArena arena, Pass pass, Tensor dOutput) {
        startBackward(pass);
        pass.backward = BackwardState.DONE;
        return backward(arena, pass, dOutput, null);
    }

    /**
     * Whether {@link #backwardInput} may run now: the hooks installed ({@link Gpt.Hooks#allowsDeferredWeightGradients})
     * stay correct with units open from a pass's B to its W.
     */
    public boolean canSplitBackward() {
        return hooks.allowsDeferredWeightGradients();
    }

    /**
     * The input-gradient half of {@link #backward}, B of zero-bubble pipeline parallelism (Qi et al. 2023): returns
     * the gradient of the part's input [B·T, C] (null on the embedding part) and every activation gradient on the
     * way, accumulates the norms' dγ and dβ, and leaves the weight-gradient work to {@link #backwardWeight}: every
     * linear's dW += dyᵀ·x and db, the tied head's dwte, the embeddings' scatter-adds (wte, wpe, E_q) and the top
     * query layer's query path. What that work reads (dy and x of each linear) stays in {@code arena}, which must
     * stay open, unreset, until then: the activation memory of a pass lives from its forward to its W. Blocks under
     * {@link Recompute#FULL} do their weight-gradient work here, inside their scratch arena (see
     * {@link TransformerBlock}); under {@link Recompute#SELECTIVE} the recomputed attention core is kept in
     * {@code arena} for W instead of a scratch arena.
     *
     * <p>Hooks: every {@code beforeBackward} runs here, every {@code afterBackward} in {@link #backwardWeight}, both
     * in {@link Gpt.Hooks}' order, so a unit's gradients are complete exactly at its {@code afterBackward}.
     *
     * <p>Gradients: a pass's W run right after its B gives {@link #backward}'s bits; W's of several passes deferred
     * past other passes' B's (ZB-H1) give the bits of the whole backwards run in the order of the W's, since no
     * parameter is written by both halves and the W's add in the order they run.
     *
     * @param dOutput gradient of {@link Pass#output} [B·T, C]; null on the head part
     * @throws IllegalStateException if the pass's backward already started, or the hooks do not allow the split
     *                               ({@link #canSplitBackward}: run {@link #backward} whole instead)
     */
    public Tensor backwardInput(StepArena arena, Pass pass, Tensor dOutput) {
        if (!canSplitBackward()) {
            throw new IllegalStateException("part " + span + ": its hooks (" + hooks.getClass().getName() + ") bind "
                    + "per-unit state between a unit's beforeBackward and afterBackward, so backward cannot be split into "
                    + "B and a deferred W; run backward whole");
        }
        startBackward(pass);
        pass.weights = new WeightGradients();
        pass.backward = BackwardState.INPUT_DONE;
        return backward(arena, pass, dOutput, pass.weights);
    }

    /**
     * The weight-gradient half (W) after {@link #backwardInput} of the same pass: runs the work B queued, in B's
     * order, accumulating into the parameter gradients, and calls the hooks' {@code afterBackward} for each unit.
     * Reads tensors of the arena B ran in, which must still be open.
     *
     * @throws IllegalStateException if the pass has no {@link #backwardInput} pending
     */
    public void backwardWeight(Pass pass) {
        if (pass.backward != BackwardState.INPUT_DONE) {
            throw new IllegalStateException("part " + span + ": backwardWeight needs the pass's backwardInput first"
                    + (pass.backward == BackwardState.DONE ? " (its backward already ran whole or its W already ran)" : ""));
        }
        pass.backward = BackwardState.DONE;
        WeightGradients weights = pass.weights;
        pass.weights = null;
        weights.run();
    }

    private void startBackward(Pass pass) {
        if (pass.backward != BackwardState.NOT_STARTED) {
            throw new IllegalStateException("part " + span + ": this pass's backward already "
                    + (pass.backward == BackwardState.INPUT_DONE ? "ran its input half; run backwardWeight" : "ran"));
        }
    }

    /** Backward with the weight-gradient work and the afterBackward hooks queued on {@code weights} (null: now). */
    private Tensor backward(StepArena arena, Pass pass, Tensor dOutput, WeightGradients weights) {
        if (span.head() != (dOutput == null)) {
            throw new IllegalArgumentException(span.head() ? "the head part starts backward from the loss; pass no output gradient"
                    : "part " + span + " needs the gradient of its output");
        }
        int n = pass.b * pass.t, c = config.hidden(), local = activationRows(pass.b, pass.t);
        boolean tied = embeddingUnit != null && span.head();
        if (tied) hooks.beforeBackward(embeddingUnit);   // the tied head starts wte's gradient
        Tensor dstream = dOutput;
        if (span.head()) {
            if (headUnit != null) hooks.beforeBackward(headUnit);
            // logits = h·wteᵀ: dh = dlogits·wte, dwte += dlogitsᵀ·h
            Tensor dhead;
            if (pass.dhead != null) {   // fused (tp 1 only): forward made dh and wte's head gradient
                dhead = pass.dhead;
                Tensor dEmbedding = pass.dEmbedding;
                if (dEmbedding != null) WeightGradients.defer(weights, () -> Vectors.accumulate(tokenEmbedding.grad(), dEmbedding));
            } else {
                dhead = arena.allocateForOverwrite(dtype, n, c);
                MatmulPrecision precision = params.precision();
                precision.matmul(dhead, pass.logits, precision.operand(tokenEmbedding), false, false, 1f, 0f);
                if (sequenceParallel) {
                    // the head's input was gathered from the shards: reduce-scatter the vocabulary slices' parts into ours
                    Tensor dshard = arena.allocateForOverwrite(dtype, local, c);
                    tp.gatherFromSequenceRegionBackward(dshard, dhead, pass.b);
                    dhead = dshard;
                } else {
                    tp.copyToRegionBackward(dhead);   // the head's input is replicated: sum the vocabulary slices' parts
                }
                Tensor headInput = wholeHeadInput(arena, pass.headInput, pass.b);   // gathered again: dwte reads it
                WeightGradients.defer(weights, () -> params.precision().matmul(tokenEmbedding.grad(), pass.logits, headInput, true, false, 1f, 1f));
            }
            if (headUnit != null) afterBackward(headUnit, weights);
            Tensor trunkOutput = pass.topQuery != null ? pass.topQuery.out() : blockOutput(pass, blocks.size() - 1);
            dstream = dhead;
            if (finalUnit != null) hooks.beforeBackward(finalUnit);
            if (finalNorm != null) {
                dstream = arena.allocateForOverwrite(dtype, local, c);   // backward writes dx
                finalNorm.backward(dstream, dhead, trunkOutput, pass.finalNorm);
            }
            if (topQuery != null) {
                Tensor dinput = arena.allocateForOverwrite(dtype, local, c);
                topQuery.backward(arena, dinput, dstream, blockOutput(pass, blocks.size() - 1), pass.positions, pass.b, pass.t,
                        pass.topQuery, weights);
                dstream = dinput;
            }
            if (finalUnit != null) afterBackward(finalUnit, weights);
        }
        // A whole backward (weights null) runs each block's backward inside an arena scope, so the blocks' gradient
        // temporaries reuse one block's worth of memory, and the blocks' input gradients alternate between two tensors.
        // A split one keeps them all: its queued dW's read them after the last block.
        Tensor[] dinputs = weights == null
                ? new Tensor[]{arena.allocateForOverwrite(dtype, local, c), arena.allocateForOverwrite(dtype, local, c)} : null;
        for (int l = blocks.size() - 1; l >= 0; l--) {
            Tensor dinput = dinputs != null ? dinputs[l % 2] : arena.allocateForOverwrite(dtype, local, c);   // the block writes it
            hooks.beforeBackward(blockUnits.get(l));
            try (StepArena.Scope temporaries = dinputs != null ? arena.scope() : null) {   // null: no scope (split)
                blocks.get(l).backward(arena, dinput, dstream, blockOutput(pass, l - 1), pass.b, pass.t, pass.blocks.get(l), weights);
            }
            afterBackward(blockUnits.get(l), weights);
            dstream = dinput;
        }
        if (!span.embedding()) return dstream;
        if (!tied) hooks.beforeBackward(embeddingUnit);
        if (positionsUnit != null) hooks.beforeBackward(positionsUnit);
        Tensor dembedded = dstream;
        if (sequenceParallel) {
            // the embedding was reduce-scattered into the shards: gather its gradient whole, which every rank reads
            dembedded = arena.allocateForOverwrite(dtype, n, c);
            tp.reduceScatterToSequenceRegionBackward(dembedded, dstream, pass.b);
        }
        Tensor dwhole = dembedded;
        WeightGradients.defer(weights, () -> {
            if (vocab == null) Embedding.backward(tokenEmbedding.grad(), dwhole, pass.ids);
            else vocab.backward(arena, tokenEmbedding.grad(), dwhole, pass.lookup);
            if (positionEmbedding != null) Embedding.backward(positionEmbedding.grad(), dwhole, pass.positions);
        });
        if (positionsUnit != null) afterBackward(positionsUnit, weights);
        afterBackward(embeddingUnit, weights);
        return null;
    }

    /**
     * The head's whole input [B·T, C]: {@code headInput} itself, or under sequence parallelism every rank's shard of
     * it gathered along the sequence into a new tensor in {@code arena}.
     */
    private Tensor wholeHeadInput(StepArena arena, Tensor headInput, int b) {
        if (!sequenceParallel) return headInput;
        Tensor whole = arena.allocateForOverwrite(headInput.dtype(), headInput.dim(0) * tp.size(), headInput.dim(1));
        tp.gatherFromSequenceRegionForward(whole, headInput, b);
        return whole;
    }

    /** The unit's gradients are complete once the work queued so far has run: tells the hooks then (now, if null). */
    private void afterBackward(ParameterSet.Unit unit, WeightGradients weights) {
        WeightGradients.defer(weights, () -> hooks.afterBackward(unit));
    }

    /** Output of the part's block {@code l} (the part's input for l = -1). */
    private static Tensor blockOutput(Pass pass, int l) {
        return l < 0 ? pass.input : pass.blocks.get(l).out();
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
}
