package dev.shardwise.comm.mpi;

import dev.shardwise.comm.CommTimeoutException;
import dev.shardwise.comm.PeerFailedException;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.locks.LockSupport;
import java.util.concurrent.locks.ReentrantLock;
import java.util.function.Supplier;

import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_INT;

/**
 * The request/wait/timeout layer under one {@link MpiCommunicator}: every downcall made holding the process's MPI
 * lock with its error code checked, and the waits that turn MPI's non-blocking requests into blocking calls by
 * polling, with the communicator's timeout and a watch for peers' failure notices ({@link MpiJob}). It also holds
 * the communicator's state: usable, broken (after a timeout or a peer's failure, with the reason) or closed.
 *
 * <p>Waiting: a wait polls (spinning, or when processes share cores spinning briefly then yielding; a wait that
 * may be for an idle peer, such as a rendezvous, parks {@value #PARK_NANOS} ns between polls once the peer is late),
 * every 64 polls looks for a failure notice of the job, and after the timeout gives up. Used by one thread at a
 * time (the communicator's rule); the lock serializes it with other communicators' MPI calls.
 */
final class MpiCalls {
    /** With more processes than cores: polls that spin before yielding the core (about 10-50 us of MPI_Test). */
    private static final int SPIN_POLLS = 200;
    /**
     * A peer later than this (ns) in a wait that may be for an idle peer: poll every {@link #PARK_NANOS} ns. 2 ms
     * when processes share cores, else 10 ms (a core each: spinning costs nobody, as in MPI's own blocking calls).
     */
    private static final long IDLE_AFTER_SHARED_NANOS = 2_000_000, IDLE_AFTER_NANOS = 10_000_000;
    private static final long PARK_NANOS = 100_000;

    /** A block of downcalls, run holding the lock; may throw what {@code invokeExact} declares. */
    @FunctionalInterface
    interface Locked {
        void run() throws Throwable;
    }

    /** One poll of a wait, run holding the lock: true when the awaited requests completed. */
    @FunctionalInterface
    interface Poll {
        boolean done() throws Throwable;
    }

    /** A non-blocking MPI call that stores its request in {@code request}; returns the MPI error code. */
    @FunctionalInterface
    interface Start {
        int call(MemorySegment request) throws Throwable;
    }

    final MpiLibrary lib;
    final MemorySegment comm;       // MPI_Comm value
    final String name;
    final int rank, size;
    private final MpiRuntime rt;
    private final ReentrantLock lock;
    private final MpiJob job;
    private final long timeoutNanos;
    private final MemorySegment request, flag;
    private String broken;          // why the communicator is unusable, or null
    private boolean closed;

    /** Asks MPI for this rank and the group's size; call holding the runtime's lock. */
    MpiCalls(MpiRuntime rt, MpiJob job, MemorySegment comm, String name, long timeoutNanos, Arena arena) {
        this.rt = rt;
        this.lib = rt.lib();
        this.lock = rt.lock();
        this.job = job;
        this.comm = comm;
        this.name = name;
        this.timeoutNanos = timeoutNanos;
        this.request = arena.allocate(ADDRESS);
        this.flag = arena.allocate(JAVA_INT);
        MemorySegment out = arena.allocate(JAVA_INT);
        try {
            lib.check((int) lib.commRank.invokeExact(comm, out), "MPI_Comm_rank", name);
            rank = out.get(JAVA_INT, 0);
            lib.check((int) lib.commSize.invokeExact(comm, out), "MPI_Comm_size", name);
            size = out.get(JAVA_INT, 0);
        } catch (Throwable t) {
            throw MpiLibrary.rethrow(t);
        }
    }

    MpiRuntime runtime() { return rt; }

    MpiJob job() { return job; }

    long timeoutNanos() { return timeoutNanos; }

    long timeoutMillis() { return timeoutNanos / 1_000_000; }

    /** How errors name a call: {@code dp[0] rank 1 allReduce #7}. */
    String where(String operation) {
        return name + " rank " + rank + " " + operation;
    }

    // ---------------------------------------------------------------- downcalls

    /**
     * Runs {@code block} holding the lock; what a downcall throws is rethrown as it is (runtime exceptions) or
     * wrapped ({@link MpiLibrary#rethrow}).
     */
    void locked(Locked block) {
        test(() -> {
            block.run();
            return true;
        });
    }

    /** Runs {@code poll} holding the lock and returns its answer; failures as in {@link #locked}. */
    private boolean test(Poll poll) {
        lock.lock();
        try {
            return poll.done();
        } catch (Throwable t) {
            throw MpiLibrary.rethrow(t);
        } finally {
            lock.unlock();
        }
    }

    // ---------------------------------------------------------------- state

    /**
     * Marks the communicator closed; false if it already was.
     */
    boolean close() {
        if (closed) return false;
        closed = true;
        return true;
    }

    /** Why the communicator is unusable, or null. */
    String broken() { return broken; }

    /** Makes the communicator unusable for {@code why}; this process then skips MPI_Finalize at exit. */
    void markBroken(String why) {
        broken = why;
        rt.markFailed();
    }

    /**
     * @throws IllegalStateException if the communicator is closed or broken, naming {@code operation} and why
     */
    void checkUsable(String operation) {
        if (closed) throw new IllegalStateException(name + ": " + operation + " on a closed communicator (rank " + rank + ")");
        if (broken != null) {
            throw new IllegalStateException(name + ": " + operation + " on a communicator that is unusable because " + broken
                    + "; make a new one (world()) or end the job");
        }
    }

    /**
     * Tells every other process of the job that this rank failed with {@code cause} ({@link MpiJob#report}) and
     * makes this communicator unusable.
     */
    void reportFailure(Throwable cause) {
        broken = "this rank reported a failure: " + cause;
        job.report(cause);
    }

    // ---------------------------------------------------------------- waits

    /**
     * Starts a non-blocking collective and polls it to completion: the data step of a collective, after its
     * rendezvous. Every rank arrived, so only a rank that died or stalls mid-call can make it time out; MPI does not
     * say which, so all peers are named.
     *
     * @throws CommTimeoutException naming every peer after the timeout (the communicator is then broken)
     * @throws PeerFailedException  if a process of the job reported a failure meanwhile
     */
    void collective(Collective op, long seq, String call, Start start) {
        String operation = op.label + " #" + seq, where = where(operation);
        locked(() -> lib.check(start.call(request), call, where));
        String test = "MPI_Test (" + call + ")";
        await(operation, false, () -> {
            lib.check((int) lib.test.invokeExact(request, flag, MpiLibrary.STATUS_IGNORE), test, where);
            return flag.get(JAVA_INT, 0) != 0;
        }, () -> { }, () -> {
            List<Integer> others = new ArrayList<>();
            for (int p = 0; p < size; p++) if (p != rank) others.add(p);
            markBroken(where + " timed out in " + call + " after every rank had arrived");
            return new CommTimeoutException(name, op.label, seq, others, timeoutMillis());
        });
    }

    /**
     * Calls {@code poll} (holding the lock) until it returns true. Every 64 polls looks for a failure notice of
     * the job: if there is one, runs {@code abandon}, marks the communicator broken and throws. After the timeout
     * throws what {@code timedOut} returns (it cleans up first, and decides whether the communicator is broken).
     *
     * @param operation   how errors name the call, e.g. {@code allReduce #7}
     * @param mayBeIdle   true where the peer may be idle (a rendezvous, a receive): park between polls once late
     * @throws PeerFailedException naming the failed process's world rank
     */
    void await(String operation, boolean mayBeIdle, Poll poll, Runnable abandon, Supplier<CommTimeoutException> timedOut) {
        long start = System.nanoTime();
        for (int polls = 0; ; polls++) {
            if (test(poll)) return;
            long waited = System.nanoTime() - start;
            if ((polls & 63) == 63) failIfPeerFailed(operation, abandon);
            if (waited > timeoutNanos) throw timedOut.get();
            backOff(polls, waited, mayBeIdle);
        }
    }

    /** Looks for a failure notice of the job; if there is one, runs {@code abandon}, marks this communicator broken and throws. */
    private void failIfPeerFailed(String operation, Runnable abandon) {
        MpiJob.Failure f;
        lock.lock();
        try {
            f = job.poll();
        } finally {
            lock.unlock();
        }
        if (f == null) return;
        abandon.run();
        broken = "world rank " + f.worldRank() + " failed during " + operation;
        throw new PeerFailedException(name, operation, f.worldRank(), new MpiRemoteFailure(f.worldRank(), f.description()));
    }

    /**
     * Between polls. MPI progresses only inside calls, so a transfer under way keeps polling: with a core per
     * process, spin (as MPI's blocking calls do); with processes sharing cores ({@link MpiRuntime#sharesCores}),
     * spin briefly, then yield the core. A wait for a peer that may be idle parks between polls once it is late.
     */
    private void backOff(int polls, long waitedNanos, boolean mayBeIdle) {
        boolean shared = rt.sharesCores();
        if (mayBeIdle && waitedNanos > (shared ? IDLE_AFTER_SHARED_NANOS : IDLE_AFTER_NANOS)) LockSupport.parkNanos(PARK_NANOS);
        else if (!shared || polls < SPIN_POLLS) Thread.onSpinWait();
        else Thread.yield();
    }

    // ---------------------------------------------------------------- counts

    /**
     * {@code value} as MPI's int count or offset.
     *
     * @throws IllegalArgumentException if it is 2^31 or more, naming {@code operation} and what to do
     */
    int count(long value, String operation) {
        if (value > Integer.MAX_VALUE) {
            throw new IllegalArgumentException(name + ": " + operation + " needs counts and offsets below 2^31 elements (MPI's int "
                    + "counts), got " + value + "; split the buffer into smaller calls");
        }
        return (int) value;
    }
}
