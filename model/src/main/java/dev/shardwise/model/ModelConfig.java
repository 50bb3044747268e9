package dev.shardwise.model;

import java.util.List;
import java.util.Locale;

/**
 * The shape and variant of a transformer language model. GPT-2 (Radford et al. 2019) is pre-LayerNorm,
 * learned positions, GELU MLP with F = 4C, biases, and an output head tied to the token embedding.
 *
 * @param vocabSize     V, tokens in the vocabulary
 * @param contextLength the longest sequence T the position table covers
 * @param layers        L, transformer blocks
 * @param hidden        C, channels of the residual stream
 * @param heads         NH, query heads; must divide C
 * @param kvHeads       NKV, key/value heads; must divide NH (NH = NKV is plain multi-head attention)
 * @param ffnHidden     F, hidden size of the MLP
 * @param norm          LayerNorm or RMSNorm
 * @param mlp           GELU MLP or SwiGLU
 * @param positions     learned absolute positions or rotary (RoPE)
 * @param residual      where the norms sit around each residual branch: pre-LN, post-LN or DeepNorm
 * @param bias          whether linear layers have biases (LayerNorm always has its β)
 * @param topQueryLayer PanGu-α's extra attention layer on top, whose query embeds the position being predicted
 * @param normEps       epsilon inside the norms (1e-5 as in GPT-2)
 * @param moe           which blocks' feed-forward is a mixture of experts, and how it routes; null for a dense model
 */
public record ModelConfig(int vocabSize, int contextLength, int layers, int hidden, int heads, int kvHeads,
                          int ffnHidden, Norm norm, Mlp mlp, Positions positions, Residual residual, boolean bias,
                          boolean topQueryLayer, double normEps, MoeConfig moe) {

    /** A dense model (no mixture of experts). */
    public ModelConfig(int vocabSize, int contextLength, int layers, int hidden, int heads, int kvHeads,
                       int ffnHidden, Norm norm, Mlp mlp, Positions positions, Residual residual, boolean bias,
                       boolean topQueryLayer, double normEps) {
        this(vocabSize, contextLength, layers, hidden, heads, kvHeads, ffnHidden, norm, mlp, positions, residual, bias,
                topQueryLayer, normEps, null);
    }

    /** Normalisation layer. */
    public enum Norm { LAYER_NORM, RMS_NORM }

    /** Feed-forward block. */
    public enum Mlp { GELU, SWIGLU }

    /** How positions enter the model. */
    public enum Positions { LEARNED, ROTARY }

    /**
     * Placement of the norms (Xiong et al. 2020 compare the first two): PRE_LN normalises each branch's input
     * (x + F(N(x)), stable, GPT-2); POST_LN normalises after the residual sum (N(x + F(x)), the original
     * Transformer and BERT, which can diverge when deep — the "loss flies" of large BERTs); DEEPNORM is post-LN
     * with the residual up-weighted by α = (2L)^(1/4) and the branch weights initialised down by β = (8L)^(-1/4)
     * (Wang et al. 2022, DeepNet), which keeps post-LN's quality while training stably at depth.
     */
    public enum Residual { PRE_LN, POST_LN, DEEPNORM }

    /** Names accepted by {@link #preset(String)}. */
    public static final List<String> PRESETS = List.of("tiny", "gpt2-124m", "gpt2-350m", "llama-tiny", "moe-tiny");

    public ModelConfig {
        positive("vocabSize", vocabSize);
        positive("contextLength", contextLength);
        positive("layers", layers);
        positive("hidden", hidden);
        positive("heads", heads);
        positive("kvHeads", kvHeads);
        positive("ffnHidden", ffnHidden);
        if (hidden % heads != 0) {
            throw new IllegalArgumentException("model.heads=" + heads + " does not divide model.hidden=" + hidden
                    + "; choose heads among the divisors of hidden (e.g. hidden/64 heads of size 64)");
        }
        if (heads % kvHeads != 0) {
            throw new IllegalArgumentException("model.kvHeads=" + kvHeads + " does not divide model.heads=" + heads
                    + "; use kvHeads = heads for multi-head attention or a divisor of heads for grouped-query attention");
        }
        if (positions == Positions.ROTARY && (hidden / heads) % 2 != 0) {
            throw new IllegalArgumentException("rotary positions need an even head size, but hidden/heads = " + hidden / heads);
        }
        if (!(normEps > 0)) throw new IllegalArgumentException("model.normEps must be positive, got " + normEps);
    }

    private static void positive(String field, int value) {
        if (value <= 0) throw new IllegalArgumentException("model." + field + " must be positive, got " + value);
    }

    /** HS, the size of one attention head. */
    public int headSize() {
        return hidden / heads;
    }

    /**
     * A named configuration.
     *
     * @throws IllegalArgumentException for an unknown name, listing the known ones
     */
    public static ModelConfig preset(String name) {
        return switch (name.toLowerCase(Locale.ROOT)) {
            case "tiny" -> gpt(8192, 256, 4, 256, 4);
            case "gpt2-124m" -> gpt(50257, 1024, 12, 768, 12);
            case "gpt2-350m" -> gpt(50257, 1024, 24, 1024, 16);
            case "llama-tiny" -> llama(8192, 256, 4, 256, 8, 4, 688);
            // tiny with every block's MLP split DeepSeekMoE-style into a shared MLP of F/2 (2 shared experts of F/4)
            // that every token passes through and 8 routed experts of F/4, top-2: the active FLOPs per token of tiny
            // (F/2 + 2·F/4) with 3x its MLP weights. The shared half keeps tiny's dense learning in a short run: 300
            // demo steps of 8 plain experts of F/2 ended 0.020 nats behind tiny (see the README)
            case "moe-tiny" -> gpt(8192, 256, 4, 256, 4).withMoe(MoeConfig.of(8, 2, 1, 4 * 256 / 4).withSharedExperts(2));
            default -> throw new IllegalArgumentException("unknown model preset '" + name + "'; known presets: " + PRESETS);
        };
    }

    /** A GPT-2-style model: pre-LayerNorm, learned positions, GELU MLP with F = 4C, biases. */
    public static ModelConfig gpt(int vocabSize, int contextLength, int layers, int hidden, int heads) {
        return new ModelConfig(vocabSize, contextLength, layers, hidden, heads, heads, 4 * hidden,
                Norm.LAYER_NORM, Mlp.GELU, Positions.LEARNED, Residual.PRE_LN, true, false, 1e-5);
    }

    /**
     * A LLaMA-style model (Touvron et al. 2023): pre-RMSNorm, rotary positions, SwiGLU MLP of width
     * {@code ffnHidden}, grouped-query attention with {@code kvHeads} key/value heads, no biases.
     */
    public static ModelConfig llama(int vocabSize, int contextLength, int layers, int hidden, int heads, int kvHeads,
                                    int ffnHidden) {
        return new ModelConfig(vocabSize, contextLength, layers, hidden, heads, kvHeads, ffnHidden,
                Norm.RMS_NORM, Mlp.SWIGLU, Positions.ROTARY, Residual.PRE_LN, false, false, 1e-5);
    }

    /** This config with another residual arrangement. */
    public ModelConfig withResidual(Residual value) {
        return new ModelConfig(vocabSize, contextLength, layers, hidden, heads, kvHeads, ffnHidden, norm, mlp,
                positions, value, bias, topQueryLayer, normEps, moe);
    }

    /** This config with (or without) PanGu-α's top query layer. */
    public ModelConfig withTopQueryLayer(boolean value) {
        return new ModelConfig(vocabSize, contextLength, layers, hidden, heads, kvHeads, ffnHidden, norm, mlp,
                positions, residual, bias, value, normEps, moe);
    }

    /** This config with mixture-of-experts blocks as {@code value} says (null: dense). */
    public ModelConfig withMoe(MoeConfig value) {
        return new ModelConfig(vocabSize, contextLength, layers, hidden, heads, kvHeads, ffnHidden, norm, mlp,
                positions, residual, bias, topQueryLayer, normEps, value);
    }

    /** Whether block {@code layer}'s feed-forward is a mixture of experts. */
    public boolean isMoeLayer(int layer) {
        return moe != null && moe.isMoeLayer(layer);
    }

    /** Parameters in the model (the tied head counted once; every expert of every MoE block). */
    public long parameterCount() {
        return parameterCount(false);
    }

    /**
     * Parameters a token uses (the tied head counted once): as {@link #parameterCount()}, but an MoE block counts its
     * router, its k routed experts and its shared experts, not all E.
     */
    public long activeParameterCount() {
        return parameterCount(true);
    }

    private long parameterCount(boolean active) {
        long c = hidden, kv = (long) kvHeads * headSize();
        long attention = c * (c + 2 * kv) + c * c + (bias ? c + 2 * kv + c : 0);
        long mlpParams = mlpParameters(ffnHidden);
        long normParams = norm == Norm.LAYER_NORM ? 2 * c : c;
        long block = attention + mlpParams + 2 * normParams;
        long blocks = layers * block;
        if (moe != null) {
            int moeLayers = 0;
            for (int l = 0; l < layers; l++) if (isMoeLayer(l)) moeLayers++;
            long router = c * moe.experts() * (moe.gate() == MoeConfig.Gate.NOISY ? 2 : 1)
                    + (moe.balance() == MoeConfig.Balance.BIAS ? moe.experts() : 0);
            long routed = (active ? moe.topK() : moe.experts()) * mlpParameters(moe.expertHidden());
            long sharedParams = moe.sharedExperts() > 0 ? mlpParameters((long) moe.sharedExperts() * moe.expertHidden()) : 0;
            blocks += moeLayers * (router + routed + sharedParams - mlpParams);
        }
        long embeddings = (long) vocabSize * c + (positions == Positions.LEARNED ? (long) contextLength * c : 0);
        long top = topQueryLayer ? (long) contextLength * c + block : 0;
        return embeddings + blocks + top + (residual == Residual.PRE_LN ? normParams : 0);
    }

    /** Parameters of one GELU MLP or SwiGLU of hidden size {@code f}. */
    private long mlpParameters(long f) {
        long c = hidden;
        return mlp == Mlp.GELU ? 2 * c * f + (bias ? f + c : 0) : 3 * c * f + (bias ? 2 * f + c : 0);
    }

    /**
     * Training FLOPs per token at sequence length {@code t}, as PaLM (Chowdhery et al. 2022) defines MFU:
     * 6 per weight used in a matrix multiply (forward 2, backward 4; the tied head counts, the position table
     * does not; an MoE block counts the weights a token uses, {@link #activeParameterCount()}) plus 12·L·C·T for
     * attention scores and values (the full, non-causal count).
     */
    public double trainingFlopsPerToken(int t) {
        long tables = (positions == Positions.LEARNED ? (long) contextLength * hidden : 0)
                + (topQueryLayer ? (long) contextLength * hidden : 0);
        return 6.0 * (activeParameterCount() - tables) + 12.0 * (layers + (topQueryLayer ? 1 : 0)) * hidden * t;
    }
}
