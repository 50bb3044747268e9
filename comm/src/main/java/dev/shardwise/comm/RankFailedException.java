package dev.shardwise.comm;

/**
 * A rank of a {@link LocalCluster} run failed: the first rank whose body threw, with what it threw as the
 * cause. Failures of other ranks (normally {@link PeerFailedException}s caused by this one) are suppressed.
 */
public final class RankFailedException extends RuntimeException {
    private final int rank;

    public RankFailedException(int rank, int worldSize, Throwable cause) {
        super("rank " + rank + " of " + worldSize + " failed: " + cause, cause);
        this.rank = rank;
    }

    /** The first failing rank, in the world group. */
    public int rank() { return rank; }
}
