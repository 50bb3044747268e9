package dev.shardwise.comm;

import dev.shardwise.comm.LocalGroup.Call;
import dev.shardwise.comm.LocalGroup.Mailbox;
import dev.shardwise.comm.LocalGroup.PostedReceive;
import dev.shardwise.comm.LocalGroup.Staged;
import dev.shardwise.core.exec.ComputePool;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.locks.LockSupport;

import static dev.shardwise.comm.CollectiveArguments.bytes;
import static dev.shardwise.comm.CollectiveArguments.checkAllGather;
import static dev.shardwise.comm.CollectiveArguments.checkAllToAll;
import static dev.shardwise.comm.CollectiveArguments.checkBuffer;
import static dev.shardwise.comm.CollectiveArguments.checkPeer;
import static dev.shardwise.comm.CollectiveArguments.checkReduceScatter;

/**
 * One rank's handle on a {@link LocalGroup}: ranks are threads of one JVM and read each other's buffers
 * directly, so a collective moves every byte once.
 *
 * <ul>
 *   <li>allReduce: rank r reduces chunk r of the buffers (elements [N·r/n, N·(r+1)/n)), reading every rank's
 *       buffer in rank order, and writes the result into every rank's buffer: one read and one write of each
 *       byte in all, spread over the ranks (each rank also reads only its chunk, so no rank waits on another
 *       mid-operation). Two phases: arrive, work, leave.</li>
 *   <li>reduceScatter: rank r reduces chunk r of every rank's input into its output.</li>
 *   <li>allGather, broadcast, allToAll: each rank copies what it receives straight from the senders' buffers.</li>
 *   <li>send/receive: eager; the sender copies into a posted receive's buffer if one is waiting, else into a
 *       staging segment lent by the (sender, receiver) pair's {@link StagingPool}, which the receive copies from
 *       and gives back. Sends never block: beyond the pool's bound (64 MiB per pair) a message is staged in a
 *       one-off arena that the receive closes. Messages of one (peer, tag) arrive in the order sent.</li>
 * </ul>
 * Collectives number their calls per group from 1 (the sequence in errors); every collective ends with a phase
 * that all ranks pass, so buffers may be reused as soon as it returns. Closing the last communicator of a group
 * frees the group's staging (the memory is the group's, charged to no rank's pool); any call on a closed
 * communicator throws {@link IllegalStateException}.
 */
final class LocalCommunicator implements Communicator {
    /** Elements below which a span is reduced or copied on the calling thread alone. */
    private static final long PARALLEL_MIN_ELEMENTS = 1 << 16;

    private final LocalGroup group;
    private final int rank;
    private long sequence;      // collectives called so far on this group by this rank
    private long phase;         // phases passed so far
    private long receives;      // receives called so far
    private boolean closed;

    LocalCommunicator(LocalGroup group, int rank) {
        this.group = group;
        this.rank = rank;
    }

    @Override public int rank() { return rank; }
    @Override public int size() { return group.size; }
    @Override public String name() { return group.name; }

    @Override
    public String toString() {
        return group.name + " rank " + rank + " of " + group.size;
    }

    /** The group this communicator is a rank of (tests read its staging pools). */
    LocalGroup group() {
        return group;
    }

    // ---------------------------------------------------------------- collectives

    @Override
    public void allReduce(Tensor buffer, ReduceOp op) {
        checkBuffer(group.name, buffer, "allReduce", "buffer", true);
        MemorySegment buf = bytes(buffer);
        Call call = start(new Call("allReduce", 0, buffer.dtype(), op, buffer.numel(), null, buf, 0, null, null, 0, 0, null));
        if (call == null) {
            return;
        }
        Call[] all = agree(call);
        int n = group.size;
        long count = call.count();
        long lo = count * rank / n, hi = count * (rank + 1) / n;
        MemorySegment[] bufs = new MemorySegment[n];
        for (int p = 0; p < n; p++) bufs[p] = all[p].out();
        int es = call.dtype().byteSize();
        ReduceKernels.reduceOnPool(call.dtype(), op, bufs, lo * es, bufs, lo * es, hi - lo);
        finish(call);
    }

    @Override
    public void reduceScatter(Tensor output, Tensor input, ReduceOp op) {
        checkBuffer(group.name, output, "reduceScatter", "output", true);
        checkBuffer(group.name, input, "reduceScatter", "input", true);
        int n = group.size;
        checkReduceScatter(group.name, n, output, input);
        Call call = start(new Call("reduceScatter", 0, input.dtype(), op, output.numel(), bytes(input), bytes(output),
                0, null, null, 0, 0, null));
        if (call == null) {
            ReduceKernels.reduceOnPool(input.dtype(), op, new MemorySegment[] {bytes(input)}, 0, new MemorySegment[] {bytes(output)}, 0, output.numel());
            return;
        }
        Call[] all = agree(call);
        MemorySegment[] ins = new MemorySegment[n];
        for (int p = 0; p < n; p++) ins[p] = all[p].in();
        int es = call.dtype().byteSize();
        ReduceKernels.reduceOnPool(call.dtype(), op, ins, rank * call.count() * es, new MemorySegment[] {call.out()}, 0, call.count());
        finish(call);
    }

    @Override
    public void allGather(Tensor output, Tensor input) {
        checkBuffer(group.name, output, "allGather", "output", false);
        checkBuffer(group.name, input, "allGather", "input", false);
        int n = group.size;
        checkAllGather(group.name, n, output, input);
        MemorySegment out = bytes(output);
        Call call = start(new Call("allGather", 0, input.dtype(), null, input.numel(), bytes(input), out, 0, null, null, 0, 0, null));
        if (call == null) {
            copy(bytes(input), out, 0, out.byteSize());
            return;
        }
        Call[] all = agree(call);
        long chunk = call.in().byteSize();
        for (int k = 0; k < n; k++) {
            int p = (rank + k) % n;
            copy(all[p].in(), out, p * chunk, chunk);
        }
        finish(call);
    }

    @Override
    public void broadcast(Tensor buffer, int root) {
        checkBuffer(group.name, buffer, "broadcast", "buffer", false);
        checkPeer(group.name, group.size, root, "broadcast", "root");
        MemorySegment buf = bytes(buffer);
        Call call = start(new Call("broadcast", 0, buffer.dtype(), null, buffer.numel(), null, buf, root, null, null, 0, 0, null));
        if (call == null) {
            return;
        }
        Call[] all = agree(call);
        if (rank != root) copy(all[root].out(), buf, 0, buf.byteSize());
        finish(call);
    }

    @Override
    public void allToAll(Tensor output, int[] receiveCounts, Tensor input, int[] sendCounts) {
        checkBuffer(group.name, output, "allToAll", "output", false);
        checkBuffer(group.name, input, "allToAll", "input", false);
        int n = group.size;
        long sent = checkAllToAll(group.name, n, output, receiveCounts, input, sendCounts);
        Call call = start(new Call("allToAll", 0, input.dtype(), null, sent, bytes(input), bytes(output), 0,
                sendCounts.clone(), receiveCounts.clone(), 0, 0, null));
        if (call == null) {
            checkCounts(new Call[] {new Call("allToAll", sequence, input.dtype(), null, sent, null, null, 0,
                    sendCounts, receiveCounts, 0, 0, null)});
            copy(bytes(input), bytes(output), 0, (long) sendCounts[0] * input.dtype().byteSize());
            return;
        }
        Call[] all = agree(call);
        checkCounts(all);
        int es = call.dtype().byteSize();
        long[] at = new long[n];   // element offset in my output of the chunk from each peer
        for (int p = 1; p < n; p++) at[p] = at[p - 1] + receiveCounts[p - 1];
        for (int k = 0; k < n; k++) {
            int p = (rank + k) % n;
            long from = 0;
            for (int j = 0; j < rank; j++) from += all[p].sendCounts()[j];
            copy(all[p].in().asSlice(from * es, (long) receiveCounts[p] * es), call.out(), at[p] * es, (long) receiveCounts[p] * es);
        }
        finish(call);
    }

    @Override
    public void barrier() {
        Call call = start(new Call("barrier", 0, DType.F32, null, 0, null, null, 0, null, null, 0, 0, null));
        if (call != null) {
            // One phase is enough: calls are double-buffered, and a barrier touches no buffers.
            agree(call);
        }
    }

    @Override
    public Communicator split(int color, int key, String name) {
        if (color < 0) {
            throw new IllegalArgumentException(group.name + ": split color must be >= 0, got " + color + " (rank " + rank + ")");
        }
        java.util.Objects.requireNonNull(name, "name");
        Call call = start(new Call("split", 0, DType.F32, null, 0, null, null, 0, null, null, color, key, name));
        if (call == null) {
            return new LocalCommunicator(new LocalGroup(group.job, name, group.worldRanks), 0);
        }
        Call[] all = agree(call);
        List<Integer> members = new ArrayList<>();
        for (int p = 0; p < group.size; p++) {
            if (all[p].color() == color) {
                members.add(p);
                if (!all[p].newName().equals(name)) {
                    throw new IllegalArgumentException(group.name + ": split #" + call.sequence() + " names color " + color
                            + " \"" + name + "\" on rank " + rank + " but \"" + all[p].newName() + "\" on rank " + p
                            + "; ranks of one color must pass the same name");
                }
            }
        }
        members.sort((a, b) -> all[a].key() != all[b].key() ? Integer.compare(all[a].key(), all[b].key()) : Integer.compare(a, b));
        int[] world = new int[members.size()];
        for (int i = 0; i < world.length; i++) world[i] = group.worldRanks[members.get(i)];
        String id = call.sequence() + "/" + color;
        LocalGroup child = group.splitting.computeIfAbsent(id, k -> new LocalGroup(group.job, name, world));
        int newRank = members.indexOf(rank);
        finish(call);
        if (newRank == 0) group.splitting.remove(id);
        return new LocalCommunicator(child, newRank);
    }

    // ---------------------------------------------------------------- point to point

    @Override
    public void send(Tensor buffer, int peer, int tag) {
        checkOpen("send");
        checkBuffer(group.name, buffer, "send", "buffer", false);
        checkPeer(group.name, group.size, peer, "send", "peer");
        group.checkFailure("send(tag " + tag + ")", 0);
        MemorySegment src = bytes(buffer);
        Mailbox box = group.mailbox(peer, rank);
        PostedReceive waiting;
        List<Arena> evicted;
        synchronized (box) {
            waiting = box.takePosted(tag);
            if (waiting == null) {
                StagingPool.Lease lease = box.staging.acquire(src.byteSize());
                MemorySegment.copy(src, 0, lease.segment(), 0, src.byteSize());
                box.stage(new Staged(tag, buffer.dtype(), buffer.numel(), lease));
                evicted = box.staging.takeEvicted();
            } else {
                evicted = List.of();
            }
        }
        // Outside the lock: closing a shared arena waits on every thread of the JVM (rare: see StagingPool).
        for (Arena a : evicted) a.close();
        if (waiting == null) return;
        String mismatch = mismatch(rank, peer, tag, buffer.dtype(), buffer.numel(), waiting.dtype, waiting.count);
        if (mismatch == null) MemorySegment.copy(src, 0, waiting.target, 0, src.byteSize());
        waiting.error = mismatch;
        waiting.done = true;
        LockSupport.unpark(waiting.thread);
        if (mismatch != null) throw new IllegalArgumentException(mismatch);
    }

    @Override
    public void receive(Tensor buffer, int peer, int tag) {
        checkOpen("receive");
        checkBuffer(group.name, buffer, "receive", "buffer", false);
        checkPeer(group.name, group.size, peer, "receive", "peer");
        long seq = ++receives;
        String op = "receive(tag " + tag + " from rank " + peer + ")";
        group.checkFailure(op, seq);
        MemorySegment dst = bytes(buffer);
        Mailbox box = group.mailbox(rank, peer);
        Staged staged;
        PostedReceive posted = null;
        synchronized (box) {
            staged = box.takeSent(tag);
            if (staged == null) {
                posted = new PostedReceive(tag, buffer.dtype(), buffer.numel(), dst, Thread.currentThread());
                box.post(posted);
            }
        }
        if (staged != null) {
            try {
                String mismatch = mismatch(peer, rank, tag, staged.dtype(), staged.count(), buffer.dtype(), buffer.numel());
                if (mismatch != null) throw new IllegalArgumentException(mismatch);
                MemorySegment.copy(staged.lease().segment(), 0, dst, 0, dst.byteSize());
            } finally {
                StagingPool.Lease lease = staged.lease();
                if (lease.pooled()) {
                    synchronized (box) {
                        box.staging.release(lease);
                    }
                } else {
                    lease.oneOff().close();
                }
            }
            return;
        }
        long start = System.nanoTime();
        while (!posted.done) {
            long waited = System.nanoTime() - start;
            boolean failed = group.job.failure() != null;
            if (failed || waited > group.job.timeoutNanos) {
                boolean withdrawn;
                synchronized (box) {
                    withdrawn = box.withdraw(posted);
                }
                if (withdrawn) {
                    group.checkFailure(op, seq);
                    throw new CommTimeoutException(group.name, op, seq, List.of(peer), group.job.timeoutMillis());
                }
                // A sender took the receive and is copying into it: it finishes without waiting on anything.
                while (!posted.done) Thread.onSpinWait();
                break;
            }
            if (group.job.spin && waited < LocalGroup.SPIN_NANOS) Thread.onSpinWait();
            else LockSupport.parkNanos(this, group.job.timeoutNanos - waited + 1);
        }
        if (posted.error != null) throw new IllegalArgumentException(posted.error);
    }

    /** Null when the message fits its receive, else the error both sides throw. */
    private String mismatch(int sender, int receiver, int tag, DType sentType, long sentCount, DType wantType, long wantCount) {
        if (sentType == wantType && sentCount == wantCount) return null;
        return group.name + ": rank " + sender + " sent " + sentType.label() + "[" + sentCount + "] with tag " + tag
                + " but rank " + receiver + " receives it into " + wantType.label() + "[" + wantCount + "]"
                + "; send and receive must pass buffers of the same dtype and size";
    }

    // ---------------------------------------------------------------- plumbing

    /** Closes this rank's handle; the group's last handle to close frees its staging. Idempotent. */
    @Override
    public void close() {
        if (closed) return;
        closed = true;
        group.handleClosed();
    }

    private void checkOpen(String op) {
        if (closed) throw new IllegalStateException(group.name + " is closed; " + op + " needs an open communicator");
    }

    /**
     * Numbers the call and publishes it; null when the group has one rank (nothing to wait for).
     */
    private Call start(Call proto) {
        checkOpen(proto.op());
        long seq = ++sequence;
        group.checkFailure(proto.op(), seq);
        if (group.size == 1) return null;
        Call call = new Call(proto.op(), seq, proto.dtype(), proto.reduceOp(), proto.count(), proto.in(), proto.out(),
                proto.root(), proto.sendCounts(), proto.receiveCounts(), proto.color(), proto.key(), proto.newName());
        group.register(rank);
        group.publish(rank, call);
        return call;
    }

    /**
     * First phase: waits for every rank, then checks that all called the same operation with matching
     * arguments (every rank runs the same check, so all throw the same error).
     */
    private Call[] agree(Call call) {
        group.arrive(rank, ++phase, call.op(), call.sequence());
        Call[] all = group.calls[(int) (call.sequence() & 1)].clone();
        Call first = all[0];
        for (int p = 1; p < all.length; p++) {
            String why = differs(first, all[p]);
            if (why != null) {
                throw new IllegalArgumentException(group.name + ": collective #" + call.sequence() + " does not match across ranks: "
                        + "rank 0 called " + first.describe() + " but rank " + p + " called " + all[p].describe() + " (" + why
                        + "); every rank of a group must call the same collectives in the same order with matching arguments");
            }
        }
        return all;
    }

    private String differs(Call a, Call b) {
        if (!a.op().equals(b.op())) return "different operations";
        switch (a.op()) {
            case "barrier", "split" -> { return null; }
            case "allToAll" -> {
                if (a.dtype() != b.dtype()) return "different dtypes";
                return null;
            }
            default -> {
                if (a.dtype() != b.dtype()) return "different dtypes";
                if (a.count() != b.count()) return "different element counts";
                if (a.reduceOp() != b.reduceOp()) return "different reduce ops";
                if (a.root() != b.root()) return "different roots";
                return null;
            }
        }
    }

    /** allToAll: what rank q sends to rank p must be what p expects from q. */
    private void checkCounts(Call[] all) {
        int n = all.length;
        for (int p = 0; p < n; p++) {
            for (int q = 0; q < n; q++) {
                if (all[q].sendCounts()[p] != all[p].receiveCounts()[q]) {
                    throw new IllegalArgumentException(group.name + ": allToAll #" + all[0].sequence() + ": rank " + q + " sends "
                            + all[q].sendCounts()[p] + " elements to rank " + p + " but rank " + p + " expects "
                            + all[p].receiveCounts()[q] + " from it (send counts " + Arrays.toString(all[q].sendCounts())
                            + ", receive counts " + Arrays.toString(all[p].receiveCounts()) + ")");
                }
            }
        }
    }

    /** Last phase: returns once every rank is done reading the others' buffers. */
    private void finish(Call call) {
        group.arrive(rank, ++phase, call.op(), call.sequence());
    }

    /** Copies {@code bytes} from the start of {@code src} to {@code dst} at {@code dstOff}, skipping a copy onto itself. */
    private static void copy(MemorySegment src, MemorySegment dst, long dstOff, long bytes) {
        if (bytes == 0 || src.address() == dst.address() + dstOff) return;
        ComputePool pool = ComputePool.current();
        int tasks = (int) Math.min(pool.threads() * 4L, bytes / (4 * PARALLEL_MIN_ELEMENTS));
        if (tasks <= 1) {
            MemorySegment.copy(src, 0, dst, dstOff, bytes);
            return;
        }
        pool.parallelFor(tasks, t -> {
            long lo = bytes * t / tasks & ~63L, hi = t == tasks - 1 ? bytes : bytes * (t + 1) / tasks & ~63L;
            MemorySegment.copy(src, lo, dst, dstOff + lo, hi - lo);
        });
    }
}
