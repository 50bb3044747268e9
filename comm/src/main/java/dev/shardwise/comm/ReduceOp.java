package dev.shardwise.comm;

/** How a reduction combines the ranks' values. Sums are taken in rank order 0, 1, ..., n-1 (bit-reproducible). */
public enum ReduceOp {
    /** Σ over ranks. */
    SUM,
    /** Σ over ranks, then divided by the group size. */
    AVG,
    /** Maximum over ranks. */
    MAX
}
