package dev.shardwise.comm;

import java.util.List;

/** A collective or point-to-point call waited longer than its timeout for peers that never arrived. */
public final class CommTimeoutException extends RuntimeException {
    private final String group;
    private final String operation;
    private final long sequence;
    private final List<Integer> missingRanks;

    public CommTimeoutException(String group, String operation, long sequence, List<Integer> missingRanks, long timeoutMillis) {
        super(String.format("%s: %s #%d timed out after %d ms waiting for rank(s) %s of group %s; a rank may be stuck "
                        + "or calling collectives in another order (raise the timeout for slow steps)",
                group, operation, sequence, timeoutMillis, missingRanks, group));
        this.group = group;
        this.operation = operation;
        this.sequence = sequence;
        this.missingRanks = List.copyOf(missingRanks);
    }

    public String group() { return group; }
    public String operation() { return operation; }
    public long sequence() { return sequence; }
    public List<Integer> missingRanks() { return missingRanks; }
}
