package dev.shardwise.comm.mpi;

import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.memory.MemoryPool;

import java.lang.foreign.MemorySegment;

/**
 * The staging area where a rank-order reduction lands its peers' contributions before adding them
 * ({@link RankOrderReductions}), charged to the rank's {@link MemoryPool} as {@link MemoryCategory#BUFFERS}, so
 * per-rank memory reports include it. Reused across calls: it grows to the largest request (the old area is
 * released first, so the charge is never both), never shrinks, and {@link #close} releases it.
 *
 * <p>Not thread-safe: used by its communicator's one calling thread.
 */
final class StagingBuffer implements AutoCloseable {
    private final MemoryPool pool;
    private MemoryPool.Allocation allocation;   // null until the first request of a byte or more

    StagingBuffer(MemoryPool pool) {
        this.pool = pool;
    }

    /**
     * A staging area of at least {@code bytes} bytes (64-byte aligned; contents left from earlier calls).
     *
     * @throws dev.shardwise.core.memory.MemoryBudgetExceededException if growing it would pass the pool's budget
     *                                                                 (the old area is released by then)
     */
    MemorySegment atLeast(long bytes) {
        if (bytes() < bytes) {
            close();
            allocation = pool.allocate(MemoryCategory.BUFFERS, bytes);
        }
        return allocation == null ? MemorySegment.NULL : allocation.segment();
    }

    /** Bytes held now (and charged to the pool). */
    long bytes() {
        return allocation == null ? 0 : allocation.bytes();
    }

    /** Releases the area and its charge; later requests allocate again. */
    @Override
    public void close() {
        if (allocation != null) {
            allocation.close();
            allocation = null;
        }
    }
}
