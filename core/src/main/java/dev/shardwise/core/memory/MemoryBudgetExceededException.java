package dev.shardwise.core.memory;

/** Thrown when an allocation would take a rank's live bytes past the budget of its {@link MemoryPool}. */
public final class MemoryBudgetExceededException extends RuntimeException {
    private final String rankName;
    private final MemoryCategory category;
    private final long requestedBytes;
    private final long liveBytes;
    private final long budgetBytes;

    MemoryBudgetExceededException(String rankName, MemoryCategory category, long requestedBytes,
                                  long liveBytes, long budgetBytes, String breakdown) {
        super(String.format(
                "%s: allocating %s (%d bytes) of %s would exceed its memory budget: %s live + %s requested > %s budget "
                        + "(live by category: %s). Raise the budget (--rank-memory), or lower the memory need "
                        + "(smaller micro-batch, ZeRO, recompute, more tensor/pipeline parallelism).",
                rankName, MemoryPool.formatBytes(requestedBytes), requestedBytes, category.label(),
                MemoryPool.formatBytes(liveBytes), MemoryPool.formatBytes(requestedBytes),
                MemoryPool.formatBytes(budgetBytes), breakdown));
        this.rankName = rankName;
        this.category = category;
        this.requestedBytes = requestedBytes;
        this.liveBytes = liveBytes;
        this.budgetBytes = budgetBytes;
    }

    public String rankName() { return rankName; }
    public MemoryCategory category() { return category; }
    public long requestedBytes() { return requestedBytes; }
    public long liveBytes() { return liveBytes; }
    public long budgetBytes() { return budgetBytes; }
}
