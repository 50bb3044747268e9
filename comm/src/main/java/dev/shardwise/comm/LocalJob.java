package dev.shardwise.comm;

import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicReference;
import java.util.concurrent.locks.LockSupport;

/**
 * What the ranks of one {@link LocalCluster#run} share beyond their groups: the rank threads, the timeout, the
 * bound of each sender-receiver pair's staging pool, and the first failure. A failure is recorded once; every rank
 * thread is then woken so that a rank waiting in any group sees it at once and throws {@link PeerFailedException}.
 */
final class LocalJob {
    /** The first rank (world numbering) whose body threw, and what it threw. */
    record Failure(int worldRank, Throwable cause) { }

    private final AtomicReference<Failure> failure = new AtomicReference<>();
    private final Thread[] threads;
    private final List<LocalGroup> groups = new ArrayList<>();   // guarded by itself
    /** How long a rank waits for peers before {@link CommTimeoutException}, in nanoseconds. */
    final long timeoutNanos;
    /** Whether waiters may spin briefly before parking: only when every rank can have a core of its own. */
    final boolean spin;
    /** Bytes each (sender, receiver) pair's {@link StagingPool} may retain. */
    final long stagingBytesPerPair;

    LocalJob(int ranks, long timeoutNanos, long stagingBytesPerPair) {
        this.threads = new Thread[ranks];
        this.timeoutNanos = timeoutNanos;
        this.spin = ranks <= Runtime.getRuntime().availableProcessors();
        this.stagingBytesPerPair = stagingBytesPerPair;
    }

    /** Call before the rank threads start. */
    void setThread(int worldRank, Thread thread) {
        threads[worldRank] = thread;
    }

    /** Remembers {@code group} so that {@link #closeGroups} can free its staging if its communicators did not. */
    void track(LocalGroup group) {
        synchronized (groups) {
            groups.add(group);
        }
    }

    /**
     * Closes every group not closed yet (one whose communicators were not all closed), freeing its staging pools
     * and the messages sent but never received; call once every rank has finished.
     */
    void closeGroups() {
        synchronized (groups) {
            for (LocalGroup g : groups) g.close();
        }
    }

    long timeoutMillis() {
        return timeoutNanos / 1_000_000;
    }

    Failure failure() {
        return failure.get();
    }

    /** Records {@code cause} as the job's failure unless one is already recorded; wakes every rank. */
    void fail(int worldRank, Throwable cause) {
        if (failure.compareAndSet(null, new Failure(worldRank, cause))) {
            for (Thread t : threads) {
                if (t != null) LockSupport.unpark(t);
            }
        }
    }
}
