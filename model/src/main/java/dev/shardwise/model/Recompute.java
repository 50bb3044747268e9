package dev.shardwise.model;

import java.util.Arrays;
import java.util.Locale;
import java.util.stream.Collectors;

/**
 * Activation recompute policy (gradient checkpointing, Chen et al. 2016; selective recompute, Korthikanti et
 * al. 2022): which forward activations a layer drops after forward and rebuilds inside backward. Every policy
 * gives bit-identical gradients; {@link ActivationMemory} counts the bytes each keeps.
 */
public enum Recompute {
    /** Keep every activation backward reads; no extra forward work. */
    NONE,
    /**
     * Drop only the activations that are large and cheap to rebuild, and recompute them in backward (Korthikanti
     * et al. 2022). Their attention stores the T×T scores and softmax; ours never does (FlashAttention-style
     * tiles), so its equivalent is the attention core's output before the projection [N, NH·HS] and its
     * log-sum-exp [B, NH, T], rebuilt from the saved q, k and v by one more attention forward.
     */
    SELECTIVE,
    /**
     * Keep only each block's output (the next block's input); run the whole block's forward again from its input
     * inside its backward (Chen et al. 2016).
     */
    FULL;

    /**
     * The policy named {@code text} ({@code none}, {@code selective} or {@code full}, any case), as configs and
     * the {@code --recompute} flag spell it.
     *
     * @throws IllegalArgumentException if {@code text} names no policy; the message lists the valid names
     */
    public static Recompute parse(String text) {
        for (Recompute r : values()) {
            if (r.name().equalsIgnoreCase(text.strip())) {
                return r;
            }
        }
        throw new IllegalArgumentException("recompute='" + text + "' is not a recompute policy; use one of "
                + Arrays.stream(values()).map(Recompute::toString).collect(Collectors.joining(", ")));
    }

    /** The lower-case name configs use: {@code none}, {@code selective}, {@code full}. */
    @Override
    public String toString() {
        return name().toLowerCase(Locale.ROOT);
    }
}
