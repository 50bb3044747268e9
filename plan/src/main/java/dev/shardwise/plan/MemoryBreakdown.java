package dev.shardwise.plan;

/**
 * Bytes one device holds at its peak, by kind; the worst stage's (the first or the last).
 *
 * @param parameters   16-bit weights (after ZeRO 3's sharding)
 * @param gradients    16-bit gradients (after ZeRO 2's sharding)
 * @param optimizer    fp32 master weights and Adam moments, 12 bytes per parameter (after ZeRO 1's sharding)
 * @param activations  saved activations of the micro-batches in flight, the recompute working set and the logits
 * @param buffers      communication buffers and the reserve (CUDA context, workspace, fragmentation)
 * @param stage        the stage these figures are for
 */
public record MemoryBreakdown(double parameters, double gradients, double optimizer, double activations, double buffers, int stage) {
    /** The sum of all kinds. */
    public double total() {
        return parameters + gradients + optimizer + activations + buffers;
    }
}
