package dev.shardwise.plan;

/**
 * A GPT-style decoder as the cost model sees it: L blocks (attention + MLP, two layer norms), a token embedding tied
 * with the output head, learned positions. Attention may group its key/value heads (GQA, Ainslie et al. 2023:
 * {@code kvHeads} below {@code heads}); every {@code moeEvery}-th block may replace its MLP by a mixture of
 * {@code experts} MLPs of which each token uses {@code topK} (GShard, Switch), chosen by a linear router; an MLP is
 * GELU(x·W1)·W2 or, gated, (SiLU(x·Wg) ∘ x·Wu)·W2 (SwiGLU, Shazeer 2020, as LLaMA has it). Presets live in
 * {@code models.yaml}.
 *
 * @param name      preset or file name
 * @param layers    L, transformer blocks
 * @param hidden    h
 * @param heads     a, attention (query) heads; h must be a multiple of a
 * @param ffnHidden f, MLP hidden size (4h for GPT); each expert's, in an MoE block
 * @param vocab     V
 * @param seq       s, sequence length (the default; {@code plan --seq} overrides it)
 * @param kvHeads   key/value heads, dividing a (a for multi-head attention)
 * @param experts   E, experts per MoE block; 0 for a dense model
 * @param topK      experts each token is routed to, in [1, E]; 0 for a dense model
 * @param moeEvery  every how many blocks one is an MoE block (1: all); 0 for a dense model
 * @param gatedMlp  SwiGLU MLPs (three h×f matrices) instead of GELU ones (two)
 */
public record ModelSpec(String name, int layers, int hidden, int heads, int ffnHidden, int vocab, int seq,
                        int kvHeads, int experts, int topK, int moeEvery, boolean gatedMlp) {
    /**
     * @throws IllegalArgumentException naming the field if a size is below 1, heads does not divide hidden, kvHeads
     *                                  does not divide heads, or the MoE fields are inconsistent
     */
    public ModelSpec {
        for (var e : new Object[][] {{"layers", layers}, {"hidden", hidden}, {"heads", heads}, {"ffn_hidden", ffnHidden},
                {"vocab", vocab}, {"seq", seq}, {"kv_heads", kvHeads}}) {
            if ((int) e[1] < 1) throw new IllegalArgumentException("model " + name + ": " + e[0] + "=" + e[1] + " must be at least 1");
        }
        if (hidden % heads != 0) {
            throw new IllegalArgumentException("model " + name + ": heads=" + heads + " does not divide hidden=" + hidden
                    + "; the head size must be whole");
        }
        if (heads % kvHeads != 0) {
            throw new IllegalArgumentException("model " + name + ": kv_heads=" + kvHeads + " does not divide heads=" + heads
                    + "; each key/value head serves a whole group of query heads");
        }
        if (experts == 0 ? topK != 0 || moeEvery != 0 : topK < 1 || topK > experts || moeEvery < 1 || moeEvery > layers) {
            throw new IllegalArgumentException("model " + name + ": experts=" + experts + ", top_k=" + topK + ", moe_every="
                    + moeEvery + " are inconsistent; give experts >= 2 with 1 <= top_k <= experts and 1 <= moe_every <= layers, "
                    + "or none of them for a dense model");
        }
    }

    /** A dense multi-head-attention GPT: kvHeads = heads, no experts. */
    public ModelSpec(String name, int layers, int hidden, int heads, int ffnHidden, int vocab, int seq) {
        this(name, layers, hidden, heads, ffnHidden, vocab, seq, heads, 0, 0, 0, false);
    }

    /** The same model at sequence length {@code seq}. */
    public ModelSpec withSeq(int seq) {
        return new ModelSpec(name, layers, hidden, heads, ffnHidden, vocab, seq, kvHeads, experts, topK, moeEvery, gatedMlp);
    }

    /** Whether some blocks are mixtures of experts. */
    public boolean isMoe() {
        return experts > 0;
    }

    /** The fraction of blocks that are MoE blocks, 1/moeEvery (0 for a dense model). */
    public double moeFraction() {
        return experts == 0 ? 0 : 1.0 / moeEvery;
    }

    /** h/a, elements per head. */
    public int headSize() {
        return hidden / heads;
    }

    /** h×f matrices in one MLP: 3 gated (gate, up, down), 2 otherwise. */
    public int mlpMatrices() {
        return gatedMlp ? 3 : 2;
    }

    /** One MLP (or one expert): 2hf weights (3hf gated) and f + h biases. */
    public double mlpParameters() {
        return (double) mlpMatrices() * hidden * ffnHidden + ffnHidden + hidden;
    }

    /**
     * Parameters of a block outside its experts, averaged over dense and MoE blocks: Q and output projections 2h²,
     * K and V 2·h·kv·hd, their biases, two layer norms 4h; a dense block's MLP; an MoE block's router h·E.
     */
    public double blockSharedParameters() {
        double h = hidden, kv = (double) kvHeads * headSize();
        double attention = 2 * h * h + 2 * h * kv + h + 2 * kv + h + 4 * h;
        return attention + (1 - moeFraction()) * mlpParameters() + moeFraction() * h * experts;
    }

    /** Expert parameters of a block, averaged over dense and MoE blocks: E MLPs in an MoE block. */
    public double blockExpertParameters() {
        return moeFraction() * experts * mlpParameters();
    }

    /** Parameters of one block, averaged: {@link #blockSharedParameters} + {@link #blockExpertParameters}. */
    public double blockParameters() {
        return blockSharedParameters() + blockExpertParameters();
    }

    /** All parameters: L blocks, the tied token embedding Vh, positions sh, the final layer norm 2h. */
    public double parameters() {
        return layers * blockParameters() + (double) vocab * hidden + (double) seq * hidden + 2.0 * hidden;
    }

    /** Parameters a token uses: the blocks' shared ones and topK experts per MoE block, the embedding and head. */
    public double activeParameters() {
        return layers * (blockSharedParameters() + moeFraction() * topK * mlpParameters())
                + (double) vocab * hidden + (double) seq * hidden + 2.0 * hidden;
    }

    /**
     * Forward FLOPs of one block (averaged over dense and MoE blocks) for one sequence: 2s·(h² + h·(a + 2kv)·hd) for
     * the projections, 2shf·n·k̄ for the MLPs a token runs (n = 2 matrices, 3 gated; k̄ = 1 − m + m·topK, m =
     * 1/moeEvery, 0 dense), 2shE·m for the router and 4s²h for attention: 8sh² + 4shf + 4s²h for a dense GELU
     * multi-head block.
     */
    public double blockForwardFlops() {
        double s = seq, h = hidden, m = moeFraction();
        double mlpsPerToken = 1 - m + m * topK;
        double projections = 2 * s * (h * h + h * (heads + 2.0 * kvHeads) * headSize());
        return projections + 2 * s * h * ffnHidden * mlpMatrices() * mlpsPerToken + 2 * s * h * experts * m + 4 * s * s * h;
    }

    /**
     * Model FLOPs of one step over {@code globalBatch} sequences, forward and backward, no recompute, as MFU counts
     * them (Korthikanti et al. 2022): per sequence 3·(L·{@link #blockForwardFlops} + 2shV). With kv = a and no
     * experts this is 72·B·s·L·h²·(1 + s/6h + V/16Lh) for f = 4h.
     */
    public double modelFlops(long globalBatch) {
        return 3.0 * globalBatch * (layers * blockForwardFlops() + 2.0 * seq * hidden * vocab);
    }
}
