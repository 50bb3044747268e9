package dev.shardwise.core.memory;

/** What an allocation is for; a rank's bytes are reported per category (as ZeRO's memory analysis splits them). */
public enum MemoryCategory {
    /** Model weights (or the shard of them this rank owns). */
    PARAMETERS,
    /** Gradients of the parameters. */
    GRADIENTS,
    /** Optimizer moments and master copies (AdamW: m and v). */
    OPTIMIZER_STATE,
    /** Forward results kept for backward, and their gradients. */
    ACTIVATIONS,
    /** Scratch space: communication buckets, packing panels, temporaries. */
    BUFFERS;

    /** Lower-case name with dashes, as printed in reports ({@code optimizer-state}). */
    public String label() {
        return name().toLowerCase(java.util.Locale.ROOT).replace('_', '-');
    }
}
