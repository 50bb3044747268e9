package dev.shardwise.comm.mpi;

import dev.shardwise.comm.CommTimeoutException;
import dev.shardwise.comm.Communicator;
import dev.shardwise.comm.LocalCluster;
import dev.shardwise.comm.PeerFailedException;
import dev.shardwise.comm.ReduceKernels;
import dev.shardwise.comm.ReduceOp;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.time.Duration;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.List;
import java.util.Objects;
import java.util.concurrent.locks.LockSupport;
import java.util.concurrent.locks.ReentrantLock;

import static dev.shardwise.comm.CollectiveArguments.bytes;
import static dev.shardwise.comm.CollectiveArguments.checkAllGather;
import static dev.shardwise.comm.CollectiveArguments.checkAllToAll;
import static dev.shardwise.comm.CollectiveArguments.checkBuffer;
import static dev.shardwise.comm.CollectiveArguments.checkPeer;
import static dev.shardwise.comm.CollectiveArguments.checkReduceScatter;
import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_INT;

/**
 * A {@link Communicator} over an MPI communicator: the {@code mpi} backend, one rank per process, Open MPI's
 * C API called through the FFM API (no JNI, no C to build). Tensors are passed to MPI by address, without copies.
 *
 * <p>Every collective has two steps. First a rendezvous: each rank sends every peer a small descriptor of its
 * call ({@link CallDescriptors}: sequence number, operation, dtype, count, reduce op, root; for allToAll the counts
 * of that pair) and waits for theirs with non-blocking point-to-point calls (a tag above the users'). This is where a
 * missing peer is noticed (the ranks whose descriptor has not come are the missing ones) and where mismatched
 * calls are reported, the same error on every rank (allToAll counts excepted: each rank sees only its own
 * pairs, so only the two ranks of a mismatched pair throw, and the others time out). Then the data moves with MPI's non-blocking collectives,
 * polled until done. Reductions do not use MPI_Allreduce: MPI moves the bytes and this class adds them in rank
 * order 0..n-1 with {@link ReduceKernels}, so results are bit-identical to the {@code local} backend's:
 * <ul>
 *   <li>allReduce: MPI_Ialltoallv sends chunk p (elements [N·p/n, N·(p+1)/n)) of the buffer to rank p, which
 *       reduces the n contributions into its own chunk, then MPI_Iallgatherv (in place) spreads the chunks; the
 *       contributions land in a staging buffer of about N elements (a chunk per rank), kept and reused by the
 *       communicator, freed by {@link #close} and not charged to any memory pool.</li>
 *   <li>reduceScatter: the same first half, into the output.</li>
 *   <li>allGather, broadcast, allToAll: MPI_Iallgatherv, MPI_Ibcast, MPI_Ialltoallv on the tensors themselves.</li>
 *   <li>barrier: the rendezvous alone (every rank has heard from every other).</li>
 *   <li>send: copies the buffer and starts MPI_Isend from the copy, so it never blocks and the buffer is free
 *       again on return (the copy is freed once MPI is done with it); receive: MPI_Irecv into the buffer,
 *       polled. Messages of one (peer, tag) arrive in order; a receive whose message is shorter or longer than
 *       its buffer throws. A dtype mismatch of equal byte size is not detected.</li>
 * </ul>
 *
 * <p>Waiting: calls poll MPI_Test (spinning, or when processes share cores spinning briefly then yielding; a
 * rendezvous waiting long for a late peer parks 0.1 ms between polls) and throw {@link CommTimeoutException}
 * after the communicator's timeout. A rank that calls {@link #reportFailure} makes the peers' pending and later
 * calls throw {@link PeerFailedException} naming it.
 * After either exception the communicator is unusable (its calls throw {@link IllegalStateException}) and is
 * never freed: MPI cannot cancel a collective, so its buffers may still be written if the late peer comes.
 * Within the data step, after every rank arrived, a timeout names all peers (MPI does not say which is late).
 *
 * <p>Threads: one thread at a time per communicator (the SPI's rule); different communicators may be used
 * from different threads, their MPI calls serialized by one process-wide lock. MPI progresses messages only
 * while some thread is inside an MPI call, so a pending send completes during later calls of this process.
 */
public final class MpiCommunicator implements Communicator {
    /** User tags are [0, {@value #MAX_USER_TAG}]; the rest of MPI's guaranteed range (32767) is the backend's. */
    static final int MAX_USER_TAG = 32765;
    private static final int TAG_DESCRIPTOR = 32766;
    /** With more processes than cores: polls that spin before yielding the core (about 10-50 us of MPI_Test). */
    private static final int SPIN_POLLS = 200;
    /**
     * A peer later than this (ns) in a rendezvous is idle, not busy: poll every {@link #PARK_NANOS} ns. 2 ms when
     * processes share cores, else 10 ms (a core each: spinning costs nobody, as in MPI's own blocking calls).
     */
    private static final long IDLE_AFTER_SHARED_NANOS = 2_000_000, IDLE_AFTER_NANOS = 10_000_000;
    private static final long PARK_NANOS = 100_000;

    private final MpiRuntime rt;
    private final MpiLibrary lib;
    private final ReentrantLock lock;
    private final MpiJob job;
    private final MemorySegment comm;       // MPI_Comm value
    private final boolean ownsComm;         // false for a world: its comm is the job's, freed by the job
    private final String name;
    private final int rank, size;
    private final long timeoutNanos;

    private final Arena arena = Arena.ofShared();
    private final CallDescriptors descriptors;
    private final MemorySegment requests, indices, outCount, flag, status;
    private final MemorySegment sendCounts, sendDispls, receiveCounts, receiveDispls, handleOut;
    private final ArrayDeque<PendingSend> pendingSends = new ArrayDeque<>();
    private Arena stagingArena;
    private MemorySegment staging = MemorySegment.NULL;
    private long sequence;      // collectives called so far
    private long receives;      // receives called so far
    private String broken;      // why the communicator is unusable, or null
    private boolean closed;

    /** A send still in flight: its request and the copy it reads from. */
    private record PendingSend(Arena arena, MemorySegment request, int peer, int tag) { }

    private MpiCommunicator(MpiRuntime rt, MpiJob job, MemorySegment comm, boolean ownsComm, String name, long timeoutNanos) {
        this.rt = rt;
        this.ownsComm = ownsComm;
        this.lib = rt.lib();
        this.lock = rt.lock();
        this.job = job;
        this.comm = comm;
        this.name = name;
        this.timeoutNanos = timeoutNanos;
        MemorySegment out = arena.allocate(JAVA_INT);
        handleOut = arena.allocate(ADDRESS);
        try {
            lib.check((int) lib.commRank.invokeExact(comm, out), "MPI_Comm_rank", name);
            rank = out.get(JAVA_INT, 0);
            lib.check((int) lib.commSize.invokeExact(comm, out), "MPI_Comm_size", name);
            size = out.get(JAVA_INT, 0);
        } catch (Throwable t) {
            throw MpiLibrary.rethrow(t);
        }
        descriptors = new CallDescriptors(arena, name, rank, size);
        requests = arena.allocate(ADDRESS.byteSize() * 2 * size, 64);
        indices = arena.allocate(4L * 2 * size, 64);
        outCount = arena.allocate(JAVA_INT);
        flag = arena.allocate(JAVA_INT);
        status = arena.allocate(MpiLibrary.STATUS);
        sendCounts = arena.allocate(4L * size, 64);
        sendDispls = arena.allocate(4L * size, 64);
        receiveCounts = arena.allocate(4L * size, 64);
        receiveDispls = arena.allocate(4L * size, 64);
        job.retain();
    }

    /** {@link #world(Duration)} with the local backend's default timeout ({@link LocalCluster.Options#DEFAULT_TIMEOUT}, 60 s). */
    public static MpiCommunicator world() {
        return world(LocalCluster.Options.DEFAULT_TIMEOUT);
    }

    /**
     * A communicator of every process of the MPI job (a duplicate of MPI_COMM_WORLD) named {@code world}, its
     * calls timing out after {@code timeout}; initialises MPI on first use (MPI_Init_thread,
     * MPI_THREAD_SERIALIZED). Collective: every process of the job calls it, the same number of times, and it
     * waits for all of them without a timeout (MPI_Comm_dup has none); each call returns a new communicator
     * (with its own failure channel, see {@link #reportFailure}). The caller closes it.
     *
     * @throws IllegalArgumentException if {@code timeout} is not positive
     * @throws IllegalStateException    if libmpi is missing (the message says what to install), MPI cannot
     *                                  start, or MPI was finalized ({@link Mpi#finalizeMpi()})
     */
    public static MpiCommunicator world(Duration timeout) {
        long nanos = checkTimeout(timeout);
        MpiRuntime rt = MpiRuntime.started();
        rt.lock().lock();
        try {
            MpiJob job = new MpiJob(rt);
            return new MpiCommunicator(rt, job, job.channel(), false, "world", nanos);
        } catch (Throwable t) {
            throw MpiLibrary.rethrow(t);
        } finally {
            rt.lock().unlock();
        }
    }

    private static long checkTimeout(Duration timeout) {
        if (timeout == null || timeout.isNegative() || timeout.isZero()) {
            throw new IllegalArgumentException("mpi: timeout must be positive, got " + timeout);
        }
        return timeout.toNanos();
    }

    @Override public int rank() { return rank; }
    @Override public int size() { return size; }
    @Override public String name() { return name; }

    /** This process's rank in MPI_COMM_WORLD. */
    public int worldRank() { return rt.worldRank(); }

    /** How long calls wait for peers. */
    public Duration timeout() { return Duration.ofNanos(timeoutNanos); }

    @Override
    public String toString() {
        return name + " rank " + rank + " of " + size + " (mpi)";
    }

    // ---------------------------------------------------------------- collectives

    @Override
    public void allReduce(Tensor buffer, ReduceOp op) {
        checkBuffer(name, buffer, "allReduce", "buffer", true);
        long count = buffer.numel();
        long seq = rendezvous(Collective.ALL_REDUCE, buffer.dtype(), op, count, 0, 0, 0, 0, null, null);
        if (size == 1) return;
        int n = size, es = buffer.dtype().byteSize();
        MemorySegment buf = bytes(buffer);
        long mine = chunk(count, rank + 1) - chunk(count, rank);
        MemorySegment stage = staging(n * mine * es);
        for (int p = 0; p < n; p++) {
            long lo = chunk(count, p), len = chunk(count, p + 1) - lo;
            setInt(sendCounts, p, p == rank ? 0 : len, "allReduce");
            setInt(sendDispls, p, lo, "allReduce");
            setInt(receiveCounts, p, p == rank ? 0 : mine, "allReduce");
            setInt(receiveDispls, p, p * mine, "allReduce");
        }
        MemorySegment type = lib.elementType(es);
        dataStep(Collective.ALL_REDUCE, seq, () -> (int) lib.ialltoallv.invokeExact(buf, sendCounts, sendDispls, type,
                stage, receiveCounts, receiveDispls, type, comm, handleOut), "MPI_Ialltoallv");
        MemorySegment own = buf.asSlice(chunk(count, rank) * es, mine * es);
        MemorySegment[] sources = new MemorySegment[n];
        for (int p = 0; p < n; p++) sources[p] = p == rank ? own : stage.asSlice(p * mine * es, mine * es);
        ReduceKernels.reduceOnPool(buffer.dtype(), op, sources, 0, new MemorySegment[] {own}, 0, mine);
        for (int p = 0; p < n; p++) {
            long lo = chunk(count, p);
            setInt(receiveCounts, p, chunk(count, p + 1) - lo, "allReduce");
            setInt(receiveDispls, p, lo, "allReduce");
        }
        dataStep(Collective.ALL_REDUCE, seq, () -> (int) lib.iallgatherv.invokeExact(MpiLibrary.IN_PLACE, 0, type,
                buf, receiveCounts, receiveDispls, type, comm, handleOut), "MPI_Iallgatherv");
    }

    @Override
    public void reduceScatter(Tensor output, Tensor input, ReduceOp op) {
        checkBuffer(name, output, "reduceScatter", "output", true);
        checkBuffer(name, input, "reduceScatter", "input", true);
        int n = size;
        checkReduceScatter(name, n, output, input);
        long c = output.numel();
        long seq = rendezvous(Collective.REDUCE_SCATTER, input.dtype(), op, c, 0, 0, 0, 0, null, null);
        int es = input.dtype().byteSize();
        MemorySegment in = bytes(input), out = bytes(output);
        MemorySegment own = in.asSlice(rank * c * es, c * es);
        if (n == 1) {
            ReduceKernels.reduceOnPool(input.dtype(), op, new MemorySegment[] {own}, 0, new MemorySegment[] {out}, 0, c);
            return;
        }
        MemorySegment stage = staging(n * c * es);
        for (int p = 0; p < n; p++) {
            setInt(sendCounts, p, p == rank ? 0 : c, "reduceScatter");
            setInt(sendDispls, p, p * c, "reduceScatter");
            setInt(receiveCounts, p, p == rank ? 0 : c, "reduceScatter");
            setInt(receiveDispls, p, p * c, "reduceScatter");
        }
        MemorySegment type = lib.elementType(es);
        dataStep(Collective.REDUCE_SCATTER, seq, () -> (int) lib.ialltoallv.invokeExact(in, sendCounts, sendDispls, type,
                stage, receiveCounts, receiveDispls, type, comm, handleOut), "MPI_Ialltoallv");
        MemorySegment[] sources = new MemorySegment[n];
        for (int p = 0; p < n; p++) sources[p] = p == rank ? own : stage.asSlice(p * c * es, c * es);
        ReduceKernels.reduceOnPool(input.dtype(), op, sources, 0, new MemorySegment[] {out}, 0, c);
    }

    @Override
    public void allGather(Tensor output, Tensor input) {
        checkBuffer(name, output, "allGather", "output", false);
        checkBuffer(name, input, "allGather", "input", false);
        int n = size;
        checkAllGather(name, n, output, input);
        long c = input.numel();
        long seq = rendezvous(Collective.ALL_GATHER, input.dtype(), null, c, 0, 0, 0, 0, null, null);
        int es = input.dtype().byteSize();
        MemorySegment in = bytes(input), out = bytes(output);
        boolean inPlace = in.address() == out.address() + rank * c * es;
        if (n == 1) {
            if (!inPlace) MemorySegment.copy(in, 0, out, 0, in.byteSize());
            return;
        }
        for (int p = 0; p < n; p++) {
            setInt(receiveCounts, p, c, "allGather");
            setInt(receiveDispls, p, p * c, "allGather");
        }
        MemorySegment type = lib.elementType(es);
        MemorySegment send = inPlace ? MpiLibrary.IN_PLACE : in;
        int sendCount = inPlace ? 0 : (int) c;
        dataStep(Collective.ALL_GATHER, seq, () -> (int) lib.iallgatherv.invokeExact(send, sendCount, type,
                out, receiveCounts, receiveDispls, type, comm, handleOut), "MPI_Iallgatherv");
    }

    @Override
    public void broadcast(Tensor buffer, int root) {
        checkBuffer(name, buffer, "broadcast", "buffer", false);
        checkPeer(name, size, root, "broadcast", "root");
        long count = buffer.numel();
        long seq = rendezvous(Collective.BROADCAST, buffer.dtype(), null, count, root, 0, 0, 0, null, null);
        if (size == 1) return;
        MemorySegment buf = bytes(buffer);
        MemorySegment type = lib.elementType(buffer.dtype().byteSize());
        int c = toInt(count, "broadcast");
        dataStep(Collective.BROADCAST, seq, () -> (int) lib.ibcast.invokeExact(buf, c, type, root, comm, handleOut), "MPI_Ibcast");
    }

    @Override
    public void allToAll(Tensor output, int[] receiveCounts, Tensor input, int[] sendCounts) {
        checkBuffer(name, output, "allToAll", "output", false);
        checkBuffer(name, input, "allToAll", "input", false);
        int n = size;
        long sent = checkAllToAll(name, n, output, receiveCounts, input, sendCounts);
        long seq = rendezvous(Collective.ALL_TO_ALL, input.dtype(), null, sent, 0, 0, 0, 0, sendCounts, receiveCounts);
        int es = input.dtype().byteSize();
        MemorySegment in = bytes(input), out = bytes(output);
        if (n == 1) {
            MemorySegment.copy(in, 0, out, 0, (long) sendCounts[0] * es);
            return;
        }
        long sAt = 0, rAt = 0;
        for (int p = 0; p < n; p++) {
            setInt(this.sendCounts, p, sendCounts[p], "allToAll");
            setInt(sendDispls, p, sAt, "allToAll");
            setInt(this.receiveCounts, p, receiveCounts[p], "allToAll");
            setInt(receiveDispls, p, rAt, "allToAll");
            sAt += sendCounts[p];
            rAt += receiveCounts[p];
        }
        MemorySegment type = lib.elementType(es);
        dataStep(Collective.ALL_TO_ALL, seq, () -> (int) lib.ialltoallv.invokeExact(in, this.sendCounts, sendDispls, type,
                out, this.receiveCounts, receiveDispls, type, comm, handleOut), "MPI_Ialltoallv");
    }

    @Override
    public void barrier() {
        rendezvous(Collective.BARRIER, DType.F32, null, 0, 0, 0, 0, 0, null, null);
    }

    /**
     * Open MPI's own MPI_Allreduce (SUM or MAX, F32, F64 or I32), after the same rendezvous as every collective.
     * Its order of addition is Open MPI's choice, so sums may differ from {@link #allReduce} (and the
     * {@code local} backend) in the last bits; for benchmarks and for jobs that do not need bit-parity.
     *
     * @throws IllegalArgumentException for AVG or BF16, or a non-contiguous buffer
     */
    public void nativeAllReduce(Tensor buffer, ReduceOp op) {
        checkBuffer(name, buffer, "nativeAllReduce", "buffer", true);
        MemorySegment type = switch (buffer.dtype()) {
            case F32 -> lib.mpiFloat;
            case F64 -> lib.mpiDouble;
            case I32 -> lib.mpiInt;
            case BF16 -> throw new IllegalArgumentException("unreachable");
        };
        MemorySegment mpiOp = switch (op) {
            case SUM -> lib.opSum;
            case MAX -> lib.opMax;
            case AVG -> throw new IllegalArgumentException(name + ": nativeAllReduce has no AVG (MPI has none); use allReduce");
        };
        long seq = rendezvous(Collective.NATIVE_ALL_REDUCE, buffer.dtype(), op, buffer.numel(), 0, 0, 0, 0, null, null);
        if (size == 1) return;
        int c = toInt(buffer.numel(), "nativeAllReduce");
        MemorySegment buf = bytes(buffer);
        lock.lock();
        try {
            // Blocking is safe here: every rank has arrived (the rendezvous), so it cannot wait on an absent peer.
            lib.check((int) lib.allreduce.invokeExact(MpiLibrary.IN_PLACE, buf, c, type, mpiOp, comm),
                    "MPI_Allreduce", where(Collective.NATIVE_ALL_REDUCE, seq));
        } catch (Throwable t) {
            throw MpiLibrary.rethrow(t);
        } finally {
            lock.unlock();
        }
    }

    @Override
    public MpiCommunicator split(int color, int key, String name) {
        return split(color, key, name, Duration.ofNanos(timeoutNanos));
    }

    /**
     * {@link #split(int, int, String)} with its own timeout for the new group's calls.
     *
     * @throws IllegalArgumentException if {@code color < 0}, {@code timeout} is not positive, or ranks of one
     *                                  color pass different names
     */
    public MpiCommunicator split(int color, int key, String name, Duration timeout) {
        if (color < 0) {
            throw new IllegalArgumentException(this.name + ": split color must be >= 0, got " + color + " (rank " + rank + ")");
        }
        Objects.requireNonNull(name, "name");
        long nanos = checkTimeout(timeout);
        long seq = rendezvous(Collective.SPLIT, DType.F32, null, 0, 0, color, key, name.hashCode(), null, null);
        for (int p = 0; p < size; p++) {
            if (descriptors.color(p) == color && descriptors.nameHash(p) != name.hashCode()) {
                throw new IllegalArgumentException(this.name + ": split #" + seq + " names color " + color + " \"" + name
                        + "\" on rank " + rank + " but rank " + p + " passes another name; ranks of one color must pass the same name");
            }
        }
        lock.lock();
        try {
            // Blocking is safe: every rank has arrived (the rendezvous).
            lib.check((int) lib.commSplit.invokeExact(comm, color, key, handleOut), "MPI_Comm_split", where(Collective.SPLIT, seq));
            return new MpiCommunicator(rt, job, handleOut.get(ADDRESS, 0), true, name, nanos);
        } catch (Throwable t) {
            throw MpiLibrary.rethrow(t);
        } finally {
            lock.unlock();
        }
    }

    // ---------------------------------------------------------------- point to point

    @Override
    public void send(Tensor buffer, int peer, int tag) {
        checkBuffer(name, buffer, "send", "buffer", false);
        checkPeer(name, size, peer, "send", "peer");
        checkTag(tag, "send");
        checkUsable("send(tag " + tag + " to rank " + peer + ")");
        MemorySegment src = bytes(buffer);
        int count = toInt(buffer.numel(), "send");
        MemorySegment type = lib.elementType(buffer.dtype().byteSize());
        Arena copyArena = Arena.ofShared();
        MemorySegment copy = copyArena.allocate(Math.max(1, src.byteSize()), 64);
        MemorySegment.copy(src, 0, copy, 0, src.byteSize());
        MemorySegment request = copyArena.allocate(ADDRESS);
        lock.lock();
        try {
            reapSends();
            lib.check((int) lib.isend.invokeExact(copy, count, type, peer, tag, comm, request), "MPI_Isend",
                    name + " rank " + rank + " send(tag " + tag + " to rank " + peer + ")");
            pendingSends.add(new PendingSend(copyArena, request, peer, tag));
        } catch (Throwable t) {
            copyArena.close();
            throw MpiLibrary.rethrow(t);
        } finally {
            lock.unlock();
        }
    }

    @Override
    public void receive(Tensor buffer, int peer, int tag) {
        checkBuffer(name, buffer, "receive", "buffer", false);
        checkPeer(name, size, peer, "receive", "peer");
        checkTag(tag, "receive");
        long seq = ++receives;
        String op = "receive(tag " + tag + " from rank " + peer + ")";
        checkUsable(op);
        MemorySegment dst = bytes(buffer);
        int count = toInt(buffer.numel(), "receive");
        MemorySegment type = lib.elementType(buffer.dtype().byteSize());
        MemorySegment request = requests;
        lock.lock();
        try {
            reapSends();
            lib.check((int) lib.irecv.invokeExact(dst, count, type, peer, tag, comm, request), "MPI_Irecv", name + " " + op);
        } catch (Throwable t) {
            throw MpiLibrary.rethrow(t);
        } finally {
            lock.unlock();
        }
        long start = System.nanoTime();
        for (int polls = 0; ; polls++) {
            int rc;
            boolean done;
            lock.lock();
            try {
                rc = (int) lib.test.invokeExact(request, flag, status);
                done = flag.get(JAVA_INT, 0) != 0;
            } catch (Throwable t) {
                throw MpiLibrary.rethrow(t);
            } finally {
                lock.unlock();
            }
            if (rc != MpiLibrary.MPI_SUCCESS || done) {
                // MPI_Test reports a failed receive (MPI_ERR_TRUNCATE: the message is longer) in its return code.
                if (rc != MpiLibrary.MPI_SUCCESS) {
                    throw new IllegalArgumentException(name + ": " + op + " at rank " + rank + " into " + buffer.describe()
                            + " failed: " + lib.errorText(rc) + "; send and receive must pass buffers of the same dtype and size");
                }
                int got = getCount(type);
                if (got != count) {
                    throw new IllegalArgumentException(name + ": rank " + peer + " sent " + got + " elements of "
                            + buffer.dtype().byteSize() + " bytes with tag " + tag + " but rank " + rank + " receives it into "
                            + buffer.describe() + "; send and receive must pass buffers of the same dtype and size");
                }
                return;
            }
            long waited = System.nanoTime() - start;
            failIfPeerFailed(op + " #" + seq, polls, () -> cancelReceive(request));
            if (waited > timeoutNanos) {
                cancelReceive(request);
                throw new CommTimeoutException(name, op, seq, List.of(peer), timeoutNanos / 1_000_000);
            }
            backOff(polls, waited, true);
        }
    }

    /** Cancels a pending receive and waits for the cancel (or the message, if it had matched) to complete. */
    private void cancelReceive(MemorySegment request) {
        lock.lock();
        try {
            lib.check((int) lib.cancel.invokeExact(request), "MPI_Cancel", name);
            lib.check((int) lib.wait.invokeExact(request, MpiLibrary.STATUS_IGNORE), "MPI_Wait", name);
        } catch (Throwable t) {
            throw MpiLibrary.rethrow(t);
        } finally {
            lock.unlock();
        }
    }

    private int getCount(MemorySegment type) {
        lock.lock();
        try {
            lib.check((int) lib.getCount.invokeExact(status, type, outCount), "MPI_Get_count", name);
            return outCount.get(JAVA_INT, 0);
        } catch (Throwable t) {
            throw MpiLibrary.rethrow(t);
        } finally {
            lock.unlock();
        }
    }

    /** Frees the copies of sends MPI is done with (call holding the lock). */
    private void reapSends() throws Throwable {
        for (var it = pendingSends.iterator(); it.hasNext(); ) {
            PendingSend s = it.next();
            lib.check((int) lib.test.invokeExact(s.request(), flag, MpiLibrary.STATUS_IGNORE), "MPI_Test",
                    name + " send(tag " + s.tag() + " to rank " + s.peer() + ")");
            if (flag.get(JAVA_INT, 0) != 0) {
                s.arena().close();
                it.remove();
            }
        }
    }

    /**
     * Tells every other process of this communicator's job that this rank failed with {@code cause}: their
     * pending and later calls on any communicator of the job throw {@link PeerFailedException} naming this
     * process's world rank, instead of waiting for the timeout. Call it on the way out of a failed rank (then
     * exit without {@link Mpi#finalizeMpi()}; mpirun ends the job). Later calls do nothing.
     */
    public void reportFailure(Throwable cause) {
        broken = "this rank reported a failure: " + cause;
        job.report(cause);
    }

    // ---------------------------------------------------------------- rendezvous

    /**
     * Exchanges call descriptors with every peer (the rendezvous of every collective) and checks they match;
     * returns the call's sequence number.
     *
     * @throws CommTimeoutException     naming the ranks whose descriptor did not come within the timeout
     * @throws IllegalArgumentException if the ranks' calls do not match (the same message on every rank)
     */
    private long rendezvous(Collective op, DType dtype, ReduceOp reduceOp, long count, int root, int color, int key, int nameHash,
                            int[] sendCounts, int[] receiveCounts) {
        long seq = ++sequence;
        checkUsable(op.label + " #" + seq);
        int n = size;
        descriptors.fill(seq, op, dtype, reduceOp, count, root, color, key, nameHash, sendCounts, receiveCounts);
        if (n == 1) return seq;
        int k = 0;
        MemorySegment type = lib.mpiLongLong;
        String where = where(op, seq);
        lock.lock();
        try {
            reapSends();
            for (int p = 0; p < n; p++) {   // receives first, in slots [0, n-1)
                if (p == rank) continue;
                lib.check((int) lib.irecv.invokeExact(descriptors.incoming(p), CallDescriptors.LONGS, type, p, TAG_DESCRIPTOR,
                        comm, requests.asSlice(8L * k++, 8)), "MPI_Irecv", where);
            }
            for (int p = 0; p < n; p++) {   // then sends, in slots [n-1, 2n-2)
                if (p == rank) continue;
                lib.check((int) lib.isend.invokeExact(descriptors.outgoing(p), CallDescriptors.LONGS, type, p, TAG_DESCRIPTOR,
                        comm, requests.asSlice(8L * k++, 8)), "MPI_Isend", where);
            }
        } catch (Throwable t) {
            throw MpiLibrary.rethrow(t);
        } finally {
            lock.unlock();
        }
        awaitRendezvous(op, seq, 2 * (n - 1));
        descriptors.check(op, seq);
        return seq;
    }

    /** Polls the rendezvous' requests until all completed, the timeout, or a peer's failure notice. */
    private void awaitRendezvous(Collective op, long seq, int count) {
        long start = System.nanoTime();
        int remaining = count;
        for (int polls = 0; ; polls++) {
            lock.lock();
            try {
                int rc = (int) lib.testsome.invokeExact(count, requests, outCount, indices, MpiLibrary.STATUS_IGNORE);
                lib.check(rc, "MPI_Testsome", where(op, seq));
                int done = outCount.get(JAVA_INT, 0);
                if (done != MpiLibrary.MPI_UNDEFINED) remaining -= done;
            } catch (Throwable t) {
                throw MpiLibrary.rethrow(t);
            } finally {
                lock.unlock();
            }
            if (remaining == 0) return;
            long waited = System.nanoTime() - start;
            failIfPeerFailed(op.label + " #" + seq, polls, () -> abandonRendezvous(count));
            if (waited > timeoutNanos) {
                List<Integer> missing = new ArrayList<>();
                int k = 0;
                for (int p = 0; p < size; p++) {
                    if (p == rank) continue;
                    if (!requests.get(ADDRESS, 8L * k++).equals(lib.requestNull)) missing.add(p);
                }
                abandonRendezvous(count);
                broken = op.label + " #" + seq + " timed out waiting for rank(s) " + missing;
                rt.markFailed();
                throw new CommTimeoutException(name, op.label, seq, missing, timeoutNanos / 1_000_000);
            }
            backOff(polls, waited, true);
        }
    }

    /** Cancels the rendezvous' pending receives and lets its pending sends finish on their own. */
    private void abandonRendezvous(int count) {
        lock.lock();
        try {
            for (int k = 0; k < count; k++) {
                MemorySegment r = requests.asSlice(8L * k, 8);
                if (r.get(ADDRESS, 0).equals(lib.requestNull)) continue;
                if (k < size - 1) {
                    lib.check((int) lib.cancel.invokeExact(r), "MPI_Cancel", name);
                    lib.check((int) lib.wait.invokeExact(r, MpiLibrary.STATUS_IGNORE), "MPI_Wait", name);
                } else {
                    lib.check((int) lib.requestFree.invokeExact(r), "MPI_Request_free", name);
                }
            }
        } catch (Throwable t) {
            throw MpiLibrary.rethrow(t);
        } finally {
            lock.unlock();
        }
    }

    // ---------------------------------------------------------------- data step

    /** A non-blocking MPI call that stores its request in {@link #handleOut}; returns the MPI error code. */
    @FunctionalInterface
    private interface Start {
        int call() throws Throwable;
    }

    /**
     * Starts a non-blocking collective and polls it to completion. Every rank arrived (the rendezvous), so only
     * a rank that died or stalls mid-call can make it time out; MPI does not say which, so all peers are named.
     */
    private void dataStep(Collective op, long seq, Start start, String call) {
        String where = where(op, seq);
        lock.lock();
        try {
            lib.check(start.call(), call, where);
        } catch (Throwable t) {
            throw MpiLibrary.rethrow(t);
        } finally {
            lock.unlock();
        }
        long begin = System.nanoTime();
        for (int polls = 0; ; polls++) {
            lock.lock();
            try {
                lib.check((int) lib.test.invokeExact(handleOut, flag, MpiLibrary.STATUS_IGNORE), "MPI_Test (" + call + ")", where);
                if (flag.get(JAVA_INT, 0) != 0) return;
            } catch (Throwable t) {
                throw MpiLibrary.rethrow(t);
            } finally {
                lock.unlock();
            }
            long waited = System.nanoTime() - begin;
            failIfPeerFailed(op.label + " #" + seq, polls, () -> { });
            if (waited > timeoutNanos) {
                List<Integer> others = new ArrayList<>();
                for (int p = 0; p < size; p++) if (p != rank) others.add(p);
                broken = where + " timed out in " + call + " after every rank had arrived";
                rt.markFailed();
                throw new CommTimeoutException(name, op.label, seq, others, timeoutNanos / 1_000_000);
            }
            backOff(polls, waited, false);
        }
    }

    /**
     * Every 64 polls, looks for a failure notice of the job; if there is one, runs {@code abandon}, marks this
     * communicator unusable and throws.
     */
    private void failIfPeerFailed(String operation, int polls, Runnable abandon) {
        if ((polls & 63) != 63) return;
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
     * spin briefly, then yield the core. A rendezvous waiting long for a late peer parks between polls.
     */
    private void backOff(int polls, long waitedNanos, boolean rendezvous) {
        boolean shared = rt.sharesCores();
        if (rendezvous && waitedNanos > (shared ? IDLE_AFTER_SHARED_NANOS : IDLE_AFTER_NANOS)) LockSupport.parkNanos(PARK_NANOS);
        else if (!shared || polls < SPIN_POLLS) Thread.onSpinWait();
        else Thread.yield();
    }

    // ---------------------------------------------------------------- plumbing

    /**
     * Frees the group: waits for sends still in flight (up to the timeout) and frees the MPI communicators. A
     * communicator broken by a timeout or a peer failure is not freed (MPI may still use its buffers).
     */
    @Override
    public void close() {
        if (closed) return;
        closed = true;
        lock.lock();
        try {
            long start = System.nanoTime();
            while (broken == null && !pendingSends.isEmpty() && System.nanoTime() - start < timeoutNanos) {
                reapSends();
                if (!pendingSends.isEmpty()) {
                    lock.unlock();
                    try {
                        Thread.yield();
                    } finally {
                        lock.lock();
                    }
                }
            }
            if (broken == null && pendingSends.isEmpty()) {
                if (ownsComm) free(comm);
                if (stagingArena != null) stagingArena.close();
                arena.close();
            }
            job.release(broken != null || !pendingSends.isEmpty());
        } catch (Throwable t) {
            throw MpiLibrary.rethrow(t);
        } finally {
            lock.unlock();
        }
    }

    private void free(MemorySegment c) throws Throwable {
        handleOut.set(ADDRESS, 0, c);
        lib.check((int) lib.commFree.invokeExact(handleOut), "MPI_Comm_free", name);
    }

    private void checkUsable(String op) {
        if (closed) throw new IllegalStateException(name + ": " + op + " on a closed communicator (rank " + rank + ")");
        if (broken != null) {
            throw new IllegalStateException(name + ": " + op + " on a communicator that is unusable because " + broken
                    + "; make a new one (world()) or end the job");
        }
    }

    /** A staging area of at least {@code bytes}, reused across calls (grows, never shrinks until close). */
    private MemorySegment staging(long bytes) {
        if (staging.byteSize() < bytes) {
            if (stagingArena != null) stagingArena.close();
            stagingArena = Arena.ofShared();
            staging = stagingArena.allocate(bytes, 64);
        }
        return staging;
    }

    private String where(Collective op, long seq) {
        return name + " rank " + rank + " " + op.label + " #" + seq;
    }

    /** Element index where chunk p of a buffer of {@code count} elements starts: count·p/n, as local does. */
    private long chunk(long count, int p) {
        return count * p / size;
    }

    private void setInt(MemorySegment array, int index, long value, String op) {
        array.setAtIndex(JAVA_INT, index, toInt(value, op));
    }

    private int toInt(long value, String op) {
        if (value > Integer.MAX_VALUE) {
            throw new IllegalArgumentException(name + ": " + op + " needs counts and offsets below 2^31 elements (MPI's int "
                    + "counts), got " + value + "; split the buffer into smaller calls");
        }
        return (int) value;
    }

    private void checkTag(int tag, String op) {
        if (tag < 0 || tag > MAX_USER_TAG) {
            throw new IllegalArgumentException(name + ": " + op + " tag must be in [0, " + MAX_USER_TAG + "] (MPI guarantees tags up "
                    + "to 32767; the mpi backend keeps the top two for itself), got " + tag);
        }
    }

}
