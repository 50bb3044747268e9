package dev.shardwise.model;

import java.util.Locale;

/**
 * Which feed-forward blocks are mixtures of experts and how they route (Shazeer et al. 2017; GShard, Lepikhin et al.
 * 2020; Switch, Fedus et al. 2021; DeepSeek-V3 2024): every {@code every}-th block's MLP becomes {@code experts}
 * expert MLPs of hidden size {@code expertHidden}, of which each token uses the {@code topK} its router picks, plus
 * {@code sharedExperts} experts every token uses.
 *
 * @param experts        E, routed experts per MoE layer (at least 2)
 * @param topK           k, experts per token, in [1, E]: 1 is Switch's gate (weight = the router probability), 2 and
 *                       more GShard's (the k probabilities renormalised to sum to 1)
 * @param every          blocks l with l % every == every - 1 are MoE (1: every block, 2: every other, as GShard)
 * @param capacityFactor tokens an expert takes per micro-batch, ⌈capacityFactor·N·k/E⌉, the rest dropped (the
 *                       residual carries them); 0 is dropless (every expert takes all its tokens)
 * @param balance        how the load is balanced: the auxiliary loss, the loss-free bias, or not at all
 * @param sharedExperts  experts every token passes through, ungated (DeepSeekMoE); 0 for none
 * @param expertHidden   F_e, the hidden size of one expert
 * @param gate           softmax scores (Switch, GShard) or noisy top-k (Shazeer et al. 2017)
 * @param auxWeight      α of the load-balancing loss α·E·Σ_e f_e·P_e (0.01 as in Switch); used with balance aux
 * @param zLossWeight    β of the router z-loss β·mean_n(logsumexp(z_n))² (ST-MoE, Zoph et al. 2022); 0 turns it off
 * @param routedScale    s, a factor on the routed experts' gates (DeepSeek-V2/V3's routed scaling factor): y_n =
 *                       s·Σ_j g_{n,j}·Expert_j(x_n) + Shared(x_n); 1 in Switch and GShard. GShard's k gates sum to 1,
 *                       so at even gates and s = 1, k experts of F/k output about 1/k of what a dense MLP of F does
 *                       at the same init; s = k makes them add up like the dense MLP's k slices (on the old moe-tiny,
 *                       8 experts of F/2, s = 2 changed the validation loss at step 100 by only -0.005)
 * @param biasRate       γ of balance bias: after each optimizer step b_e += γ·(mean load - load_e)/mean load, b_e in
 *                       logits (0.1: see {@link #DEFAULT_BIAS_RATE})
 */
public record MoeConfig(int experts, int topK, int every, double capacityFactor, Balance balance, int sharedExperts,
                        int expertHidden, Gate gate, double routedScale, double auxWeight, double zLossWeight,
                        double biasRate) {

    /** Load balancing. */
    public enum Balance {
        /** The Switch/GShard auxiliary loss α·E·Σ_e f_e·P_e added to the training loss. */
        AUX,
        /** Loss-free balancing (Wang et al. 2024; DeepSeek-V3): a per-expert bias on the selection logits, nudged after each step. */
        BIAS,
        /** None. */
        NONE;

        /** The YAML spelling: aux, bias, none. */
        public String key() {
            return name().toLowerCase(Locale.ROOT);
        }

        /** @throws IllegalArgumentException naming the accepted values */
        public static Balance parse(String value) {
            for (Balance b : values()) if (b.key().equals(value)) return b;
            throw new IllegalArgumentException("moe.balance must be aux, bias or none, got '" + value + "'");
        }
    }

    /** How the router turns logits into the experts' gates. */
    public enum Gate {
        /** p = softmax(z); top-k of p picks the experts (Switch for k = 1, GShard for k >= 2). */
        SOFTMAX,
        /** h = z + ε·softplus(x·W_noiseᵀ), ε ~ N(0, 1) while training; top-k of h, gates softmax over the kept k. */
        NOISY;

        /** The YAML spelling: softmax, noisy. */
        public String key() {
            return name().toLowerCase(Locale.ROOT);
        }

        /** @throws IllegalArgumentException naming the accepted values */
        public static Gate parse(String value) {
            for (Gate g : values()) if (g.key().equals(value)) return g;
            throw new IllegalArgumentException("moe.gate must be softmax or noisy, got '" + value + "'");
        }
    }

    /** Why a model with MoE blocks does not train under bf16 precision, and what to do instead. */
    public static final String BF16_REFUSAL = "mixture-of-experts blocks run their products in fp32 only (their grouped "
            + "expert products do not take bf16 operands yet); train this model with --precision fp32 (YAML precision: "
            + "fp32), or use bf16 with a dense model";
    /** Load-balancing loss weight of Switch (Fedus et al. 2021). */
    public static final double DEFAULT_AUX_WEIGHT = 0.01;
    /** Router z-loss weight of ST-MoE (Zoph et al. 2022). */
    public static final double DEFAULT_Z_LOSS_WEIGHT = 0.001;
    /**
     * Bias step per unit of relative load error, in logits. DeepSeek-V3 moves a bias on sigmoid scores by
     * 0.001·sign(error) over many thousands of steps; on softmax logits that spread by units within a few hundred
     * steps, that rule (on the probabilities, as we had it) left moe-tiny's worst layer at max/mean 2.36 after 200
     * steps. 0.1·(relative error) moves an expert at 4x the mean load down by 0.3 a step and an idle one up by 0.1,
     * and its steps shrink with the error instead of chattering by ±γ: 1.20 (worst layer, steps 151-200); 0.3
     * overshoots while the logits are still small (1.24), 0.05 is too slow (1.24; see the README).
     */
    public static final double DEFAULT_BIAS_RATE = 0.1;

    /** @throws IllegalArgumentException naming the field, its value and the fix */
    public MoeConfig {
        if (experts < 2) throw new IllegalArgumentException("moe.experts must be at least 2, got " + experts);
        if (topK < 1 || topK > experts) {
            throw new IllegalArgumentException("moe.topK must be in [1, moe.experts=" + experts + "], got " + topK);
        }
        if (every < 1) throw new IllegalArgumentException("moe.every must be at least 1 (1: every block is MoE), got " + every);
        if (!(capacityFactor >= 0) || Double.isInfinite(capacityFactor)) {
            throw new IllegalArgumentException("moe.capacityFactor must be 0 (dropless) or positive, got " + capacityFactor);
        }
        if (balance == null) throw new IllegalArgumentException("moe.balance must be aux, bias or none");
        if (gate == null) throw new IllegalArgumentException("moe.gate must be softmax or noisy");
        if (sharedExperts < 0) throw new IllegalArgumentException("moe.sharedExperts must be 0 or more, got " + sharedExperts);
        if (expertHidden < 1) throw new IllegalArgumentException("moe.expertHidden must be positive, got " + expertHidden);
        if (!(routedScale > 0) || Double.isInfinite(routedScale)) {
            throw new IllegalArgumentException("moe.routedScale must be positive (1: gates as the router gives them), got " + routedScale);
        }
        if (!(auxWeight >= 0)) throw new IllegalArgumentException("moe.auxWeight must be 0 or more, got " + auxWeight);
        if (!(zLossWeight >= 0)) throw new IllegalArgumentException("moe.zLossWeight must be 0 or more, got " + zLossWeight);
        if (!(biasRate >= 0)) throw new IllegalArgumentException("moe.biasRate must be 0 or more, got " + biasRate);
    }

    /**
     * E experts, top-k softmax gate, MoE in every {@code every}-th block, no capacity limit, the auxiliary loss,
     * no shared experts, gates unscaled, default weights.
     */
    public static MoeConfig of(int experts, int topK, int every, int expertHidden) {
        return new MoeConfig(experts, topK, every, 0, Balance.AUX, 0, expertHidden, Gate.SOFTMAX, 1,
                DEFAULT_AUX_WEIGHT, DEFAULT_Z_LOSS_WEIGHT, DEFAULT_BIAS_RATE);
    }

    /**
     * Whether the parameter named {@code name} belongs to a routed expert ({@code h.l.mlp.experts.e.*}): under expert
     * parallelism only E/ep ranks hold it, and its gradient is reduced over the expert-data-parallel group.
     */
    public static boolean isExpertParameter(String name) {
        return name.contains(".mlp.experts.");
    }

    /** Whether block {@code layer} (0-based) has a mixture of experts as its feed-forward block. */
    public boolean isMoeLayer(int layer) {
        return layer % every == every - 1;
    }

    /** Whether token dropping is off (capacity factor 0). */
    public boolean dropless() {
        return capacityFactor == 0;
    }

    /**
     * Slots per expert for {@code n} tokens: ⌈capacityFactor·n·k/E⌉ (at least 1), or n·k when dropless, which no
     * expert can exceed.
     */
    public int capacity(int n) {
        if (dropless()) return n * topK;
        return Math.max(1, (int) Math.ceil(capacityFactor * n * topK / experts));
    }

    public MoeConfig withCapacityFactor(double value) {
        return new MoeConfig(experts, topK, every, value, balance, sharedExperts, expertHidden, gate, routedScale, auxWeight, zLossWeight, biasRate);
    }

    public MoeConfig withBalance(Balance value) {
        return new MoeConfig(experts, topK, every, capacityFactor, value, sharedExperts, expertHidden, gate, routedScale, auxWeight, zLossWeight, biasRate);
    }

    public MoeConfig withSharedExperts(int value) {
        return new MoeConfig(experts, topK, every, capacityFactor, balance, value, expertHidden, gate, routedScale, auxWeight, zLossWeight, biasRate);
    }

    public MoeConfig withGate(Gate value) {
        return new MoeConfig(experts, topK, every, capacityFactor, balance, sharedExperts, expertHidden, value, routedScale, auxWeight, zLossWeight, biasRate);
    }

    public MoeConfig withRoutedScale(double value) {
        return new MoeConfig(experts, topK, every, capacityFactor, balance, sharedExperts, expertHidden, gate, value, auxWeight, zLossWeight, biasRate);
    }

    public MoeConfig withWeights(double aux, double zLoss) {
        return new MoeConfig(experts, topK, every, capacityFactor, balance, sharedExperts, expertHidden, gate, routedScale, aux, zLoss, biasRate);
    }
}
