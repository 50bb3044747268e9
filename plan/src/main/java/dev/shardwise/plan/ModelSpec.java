package dev.shardwise.plan;

/**
 * A GPT-style decoder as the cost model sees it: L identical blocks (attention + MLP, two layer norms), a token
 * embedding tied with the output head, learned positions. Presets live in {@code models.yaml}.
 *
 * @param name      preset or file name
 * @param layers    L, transformer blocks
 * @param hidden    h
 * @param heads     a, attention heads; h must be a multiple of a
 * @param ffnHidden f, MLP hidden size (4h for GPT)
 * @param vocab     V
 * @param seq       s, sequence length (the default; {@code plan --seq} overrides it)
 */
public record ModelSpec(String name, int layers, int hidden, int heads, int ffnHidden, int vocab, int seq) {
    /** @throws IllegalArgumentException naming the field if a size is below 1 or heads does not divide hidden */
    public ModelSpec {
        for (var e : new Object[][] {{"layers", layers}, {"hidden", hidden}, {"heads", heads}, {"ffn_hidden", ffnHidden},
                {"vocab", vocab}, {"seq", seq}}) {
            if ((int) e[1] < 1) throw new IllegalArgumentException("model " + name + ": " + e[0] + "=" + e[1] + " must be at least 1");
        }
        if (hidden % heads != 0) {
            throw new IllegalArgumentException("model " + name + ": heads=" + heads + " does not divide hidden=" + hidden
                    + "; the head size must be whole");
        }
    }

    /** The same model at sequence length {@code seq}. */
    public ModelSpec withSeq(int seq) {
        return new ModelSpec(name, layers, hidden, heads, ffnHidden, vocab, seq);
    }

    /** Parameters of one block: QKV and projection 4h² + 4h, MLP 2hf + f + h, two layer norms 4h. */
    public double blockParameters() {
        double h = hidden;
        return 4 * h * h + 4 * h + 2 * h * ffnHidden + ffnHidden + h + 4 * h;
    }

    /** All parameters: L blocks, the tied token embedding Vh, positions sh, the final layer norm 2h. */
    public double parameters() {
        return layers * blockParameters() + (double) vocab * hidden + (double) seq * hidden + 2.0 * hidden;
    }

    /**
     * Model FLOPs of one step over {@code globalBatch} sequences, forward and backward, no recompute, as MFU counts
     * them (Korthikanti et al. 2022): per sequence 3·(L·(8sh² + 4shf + 4s²h) + 2shV). With f = 4h this is
     * 72·B·s·L·h²·(1 + s/6h + V/16Lh).
     */
    public double modelFlops(long globalBatch) {
        double s = seq, h = hidden;
        double block = 8 * s * h * h + 4 * s * h * ffnHidden + 4 * s * s * h;
        return 3.0 * globalBatch * (layers * block + 2 * s * h * vocab);
    }
}
