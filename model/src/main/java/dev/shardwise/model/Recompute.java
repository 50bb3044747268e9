package dev.shardwise.model;

import java.util.Arrays;
import java.util.Locale;
import java.util.stream.Collectors;

/**
 * Activation recompute policy (gradient checkpointing, Chen et al. 2016; selective recompute, Korthikanti et
 * al. 2022): which forward activations a layer drops after forward and rebuilds inside backward.
 */
public enum Recompute {
    /** Keep every activation backward reads; no extra forward work. */
    NONE,
    /**
     * Drop only the activations that are large and cheap to rebuild (the attention scores and softmax, O(T²)
     * per head) and recompute them in backward (Korthikanti et al. 2022).
     */
    SELECTIVE,
    /** Keep only each block's input; run the whole block's forward again inside its backward (Chen et al. 2016). */
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
