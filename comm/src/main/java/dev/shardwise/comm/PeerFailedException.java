package dev.shardwise.comm;

/** Another rank of the job failed, so the collective this rank waits in can never complete. */
public final class PeerFailedException extends RuntimeException {
    private final int failedRank;

    public PeerFailedException(String group, String operation, int failedRank, Throwable cause) {
        super(group + ": " + operation + " abandoned because rank " + failedRank + " failed: " + cause, cause);
        this.failedRank = failedRank;
    }

    /** The failed rank, in the world group. */
    public int failedRank() { return failedRank; }
}
