package dev.shardwise.comm;

import dev.shardwise.core.tensor.DType;

import java.lang.foreign.MemorySegment;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Iterator;
import java.util.List;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicIntegerArray;
import java.util.concurrent.atomic.AtomicLongArray;
import java.util.concurrent.atomic.AtomicReferenceArray;
import java.util.concurrent.locks.LockSupport;

/**
 * The state the ranks of one local group share: each rank's published call, its phase counter, whether it is
 * parked, and the mailboxes of point-to-point messages with their staging pools.
 *
 * <p>Rendezvous: a collective is one or more phases. A rank publishes its {@link Call} (double-buffered by the
 * parity of the sequence number, so a fast rank writing call s+1 never overwrites call s while a slow rank still
 * reads it), then stores its phase counter; a rank is through a phase when every counter has reached it. A
 * waiter spins for {@value #SPIN_NANOS} ns (only when every rank can have a core), then parks; an arriving rank
 * unparks the peers marked parked (phase store then parked load on one side, parked store then phase load on the
 * other, both volatile, so no wake-up is lost).
 *
 * <p>Point to point: one {@link Mailbox} per (sender, receiver) pair holds the messages sent before their receive
 * was posted, each in a segment lent by the mailbox's {@link StagingPool}, and the receives posted before their
 * message. The group closes, freeing every pool and undelivered message, when the last of its {@code size}
 * communicators closes, or when the job ends ({@link LocalJob#closeGroups}), whichever comes first.
 */
final class LocalGroup {
    /** How long a waiter spins before parking, in nanoseconds (about the cost of two park/unpark round trips). */
    static final long SPIN_NANOS = 20_000;
    /** Array slots between two ranks' counters: 128 bytes, so ranks do not share a cache line (or its neighbour). */
    private static final int PAD = 16;

    final LocalJob job;
    final String name;
    final int size;
    /** Group rank -> world rank. */
    final int[] worldRanks;
    private final AtomicLongArray phases;
    private final AtomicIntegerArray parked;
    private final AtomicReferenceArray<Thread> threads;
    /** [sequence parity][group rank]: the call a rank published for its current collective. */
    final Call[][] calls;
    /** Groups being made by a split, keyed by "sequence/color"; removed once the split completes. */
    final ConcurrentHashMap<String, LocalGroup> splitting = new ConcurrentHashMap<>();
    /** [receiver · size + sender]. */
    private final Mailbox[] mailboxes;
    /** Communicators of this group not closed yet: one per rank at first. */
    private final AtomicInteger openHandles;
    private final AtomicBoolean closed = new AtomicBoolean();

    LocalGroup(LocalJob job, String name, int[] worldRanks) {
        this.job = job;
        this.name = name;
        this.size = worldRanks.length;
        this.worldRanks = worldRanks.clone();
        this.phases = new AtomicLongArray(size * PAD);
        this.parked = new AtomicIntegerArray(size * PAD);
        this.threads = new AtomicReferenceArray<>(size);
        this.calls = new Call[2][size];
        this.mailboxes = new Mailbox[size * size];
        for (int i = 0; i < mailboxes.length; i++) mailboxes[i] = new Mailbox(job.stagingBytesPerPair);
        this.openHandles = new AtomicInteger(size);
        job.track(this);
    }

    /** Called once by each rank's communicator as it closes; the last one closes the group. */
    void handleClosed() {
        if (openHandles.decrementAndGet() == 0) close();
    }

    /**
     * Frees the messages sent but never received and every mailbox's staging pool; idempotent. Call only when no
     * rank uses the group any more (its communicators are closed or their threads have ended).
     */
    void close() {
        if (!closed.compareAndSet(false, true)) return;
        for (Mailbox m : mailboxes) {
            synchronized (m) {
                m.close();
            }
        }
    }

    boolean closed() {
        return closed.get();
    }

    /**
     * What one rank passed to one collective: the operation, its element type, reduction, root or split keys,
     * and its buffers as segments of exactly the tensors' bytes.
     */
    record Call(String op, long sequence, DType dtype, ReduceOp reduceOp, long count, MemorySegment in,
                MemorySegment out, int root, int[] sendCounts, int[] receiveCounts, int color, int key, String newName) {

        /** How error messages show the call, e.g. {@code allReduce(f32[1000], SUM)}. */
        String describe() {
            return switch (op) {
                case "allReduce" -> op + "(" + dtype.label() + "[" + count + "], " + reduceOp + ")";
                case "reduceScatter" -> op + "(" + dtype.label() + "[" + count + "] per rank, " + reduceOp + ")";
                case "allGather" -> op + "(" + dtype.label() + "[" + count + "] per rank)";
                case "broadcast" -> op + "(" + dtype.label() + "[" + count + "], root " + root + ")";
                case "allToAll" -> op + "(" + dtype.label() + ", send " + Arrays.toString(sendCounts)
                        + ", receive " + Arrays.toString(receiveCounts) + ")";
                case "split" -> op + "(color " + color + ", key " + key + ", \"" + newName + "\")";
                default -> op + "()";
            };
        }
    }

    // ---------------------------------------------------------------- rendezvous

    void register(int rank) {
        Thread me = Thread.currentThread();
        if (threads.get(rank) != me) threads.set(rank, me);
    }

    /** Publishes {@code call} for {@code rank}; call before the call's first {@link #arrive}. */
    void publish(int rank, Call call) {
        calls[(int) (call.sequence() & 1)][rank] = call;
    }

    /** Marks {@code rank} as through to {@code phase}, then waits until every rank is (see the class comment). */
    void arrive(int rank, long phase, String op, long sequence) {
        phases.set(rank * PAD, phase);
        for (int q = 0; q < size; q++) {
            if (q != rank && parked.get(q * PAD) != 0) {
                Thread t = threads.get(q);
                if (t != null) LockSupport.unpark(t);
            }
        }
        long start = System.nanoTime();
        int q = 0;
        while (true) {
            while (q < size && phases.get(q * PAD) >= phase) q++;
            if (q == size) return;
            checkFailure(op, sequence);
            long waited = System.nanoTime() - start;
            if (waited > job.timeoutNanos) {
                throw new CommTimeoutException(name, op, sequence, missing(phase), job.timeoutMillis());
            }
            if (job.spin && waited < SPIN_NANOS) {
                Thread.onSpinWait();
                continue;
            }
            parked.set(rank * PAD, 1);
            if (phases.get(q * PAD) < phase && job.failure() == null) {
                LockSupport.parkNanos(this, job.timeoutNanos - waited + 1);
            }
            parked.set(rank * PAD, 0);
        }
    }

    private List<Integer> missing(long phase) {
        List<Integer> missing = new ArrayList<>();
        for (int q = 0; q < size; q++) {
            if (phases.get(q * PAD) < phase) missing.add(q);
        }
        return missing;
    }

    void checkFailure(String op, long sequence) {
        LocalJob.Failure f = job.failure();
        if (f != null) throw new PeerFailedException(name, op + " #" + sequence, f.worldRank(), f.cause());
    }

    // ---------------------------------------------------------------- point to point

    /**
     * A message sent before its receive was posted: a staged copy of the sender's buffer in {@code lease}'s
     * segment (its first bytes), which the receiver gives back to the pool or, if one-off, closes.
     */
    record Staged(int tag, DType dtype, long count, StagingPool.Lease lease) { }

    /** A receive posted before its message arrived: the sender copies straight into {@code target}. */
    static final class PostedReceive {
        final int tag;
        final DType dtype;
        final long count;
        final MemorySegment target;
        final Thread thread;
        volatile boolean done;
        volatile String error;

        PostedReceive(int tag, DType dtype, long count, MemorySegment target, Thread thread) {
            this.tag = tag;
            this.dtype = dtype;
            this.count = count;
            this.target = target;
            this.thread = thread;
        }
    }

    /**
     * Messages from one sender to one receiver, matched by tag, first in first out per tag, and the pool their
     * staging segments come from. Guarded by itself, the pool included.
     */
    static final class Mailbox {
        private final ArrayDeque<Staged> sent = new ArrayDeque<>();
        private final ArrayDeque<PostedReceive> posted = new ArrayDeque<>();
        final StagingPool staging;

        Mailbox(long stagingBoundBytes) {
            this.staging = new StagingPool(stagingBoundBytes);
        }

        Staged takeSent(int tag) {
            for (Iterator<Staged> it = sent.iterator(); it.hasNext(); ) {
                Staged s = it.next();
                if (s.tag() == tag) {
                    it.remove();
                    return s;
                }
            }
            return null;
        }

        PostedReceive takePosted(int tag) {
            for (Iterator<PostedReceive> it = posted.iterator(); it.hasNext(); ) {
                PostedReceive r = it.next();
                if (r.tag == tag) {
                    it.remove();
                    return r;
                }
            }
            return null;
        }

        void post(PostedReceive r) { posted.add(r); }

        void stage(Staged s) { sent.add(s); }

        /** Removes {@code r} if no sender took it yet; false if one did (it is copying or has copied). */
        boolean withdraw(PostedReceive r) { return posted.remove(r); }

        /** Frees staged messages nobody received, then the pool (its lent segments included). */
        void close() {
            for (Staged s : sent) {
                if (!s.lease().pooled()) s.lease().oneOff().close();
            }
            sent.clear();
            staging.close();
        }
    }

    Mailbox mailbox(int receiver, int sender) {
        return mailboxes[receiver * size + sender];
    }

    /** What the staging pool of messages from {@code sender} to {@code receiver} has done so far. */
    StagingPool.Stats stagingStats(int receiver, int sender) {
        Mailbox box = mailbox(receiver, sender);
        synchronized (box) {
            return box.staging.stats();
        }
    }
}
