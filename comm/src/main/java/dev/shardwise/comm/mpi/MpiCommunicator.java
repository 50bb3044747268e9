package dev.shardwise.comm.mpi;

import dev.shardwise.comm.CommTimeoutException;
import dev.shardwise.comm.Communicator;
import dev.shardwise.comm.LocalCluster;
import dev.shardwise.comm.PeerFailedException;
import dev.shardwise.comm.ReduceKernels;
import dev.shardwise.comm.ReduceOp;
import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.time.Duration;
import java.util.Objects;

import static dev.shardwise.comm.CollectiveArguments.checkAllGather;
import static dev.shardwise.comm.CollectiveArguments.checkAllToAll;
import static dev.shardwise.comm.CollectiveArguments.checkBuffer;
import static dev.shardwise.comm.CollectiveArguments.checkPeer;
import static dev.shardwise.comm.CollectiveArguments.checkReduceScatter;
import static java.lang.foreign.ValueLayout.ADDRESS;

/**
 * A {@link Communicator} over an MPI communicator: the {@code mpi} backend, one rank per process, Open MPI's
 * C API called through the FFM API (no JNI, no C to build). Tensors are passed to MPI by address, without copies.
 *
 * <p>Every collective has two steps. First a rendezvous: each rank sends every peer a small descriptor of its
 * call ({@link CallDescriptors}: sequence number, operation, dtype, count, reduce op, root; for allToAll the counts
 * of that pair) and waits for theirs with non-blocking point-to-point calls (a tag above the users'). This is where a
 * missing peer is noticed (the ranks whose descriptor has not come are the missing ones) and where mismatched
 * calls are reported, the same error on every rank (allToAll counts excepted: each rank sees only its own
 * pairs, so only the two ranks of a mismatched pair throw, and the others time out). Then the data moves with MPI's
 * non-blocking collectives, polled until done. Reductions do not use MPI_Allreduce: MPI moves the bytes and
 * Shardwise adds them in rank order 0..n-1 with {@link ReduceKernels}, so results are bit-identical to the
 * {@code local} backend's:
 * <ul>
 *   <li>allReduce: MPI_Ialltoallv sends chunk p (elements [N·p/n, N·(p+1)/n)) of the buffer to rank p, which
 *       reduces the n contributions into its own chunk, then MPI_Iallgatherv (in place) spreads the chunks; the
 *       contributions land in a staging buffer of about N elements (a chunk per rank), kept and reused by the
 *       communicator, charged to its memory pool as {@link MemoryCategory#BUFFERS} (see {@link #world(Duration,
 *       MemoryPool)}) and released by {@link #close}.</li>
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
 *
 * @implNote The parts, each a package-private class: {@link MpiCalls} (downcalls under the lock, polled waits,
 * timeout and failure watch, the usable/broken/closed state), {@link Rendezvous}, {@link RankOrderReductions}
 * (with its {@link StagingBuffer}), {@link DirectCollectives} and {@link PointToPoint}. This class checks the
 * arguments, runs the rendezvous and hands the call to its part.
 */
public final class MpiCommunicator implements Communicator {
    /** User tags are [0, {@value #MAX_USER_TAG}]; the rest of MPI's guaranteed range (32767) is the backend's. */
    static final int MAX_USER_TAG = 32765;

    private final Arena arena = Arena.ofShared();
    private final boolean ownsComm;         // false for a world: its comm is the job's, freed by the job
    private final MemoryPool memory;
    private final MpiCalls calls;
    private final Rendezvous rendezvous;
    private final StagingBuffer staging;
    private final RankOrderReductions reductions;
    private final DirectCollectives direct;
    private final PointToPoint pointToPoint;
    private final MemorySegment handle;     // out-parameter of MPI_Comm_split, in-parameter of MPI_Comm_free

    /** Call holding the runtime's lock. */
    private MpiCommunicator(MpiRuntime rt, MpiJob job, MemorySegment comm, boolean ownsComm, String name, long timeoutNanos,
                            MemoryPool memory) {
        this.ownsComm = ownsComm;
        this.memory = memory;
        this.calls = new MpiCalls(rt, job, comm, name, timeoutNanos, arena);
        this.pointToPoint = new PointToPoint(calls, arena);
        // Each rendezvous first frees the copies of sends MPI has finished, as send and receive do.
        this.rendezvous = new Rendezvous(calls, arena, pointToPoint::reapSends);
        CountVectors counts = new CountVectors(calls, arena);
        this.staging = new StagingBuffer(memory);
        this.reductions = new RankOrderReductions(calls, counts, staging);
        this.direct = new DirectCollectives(calls, counts);
        this.handle = arena.allocate(ADDRESS);
        job.retain();
    }

    /** {@link #world(Duration)} with the local backend's default timeout ({@link LocalCluster.Options#DEFAULT_TIMEOUT}, 60 s). */
    public static MpiCommunicator world() {
        return world(LocalCluster.Options.DEFAULT_TIMEOUT);
    }

    /**
     * {@link #world(Duration, MemoryPool)} with a memory pool of its own, unlimited, that no report reads: for
     * communicators that do not reduce, or whose staging memory nobody accounts.
     */
    public static MpiCommunicator world(Duration timeout) {
        return world(timeout, MemoryPool.unlimited("mpi world"));
    }

    /**
     * A communicator of every process of the MPI job (a duplicate of MPI_COMM_WORLD) named {@code world}, its
     * calls timing out after {@code timeout}, its reductions' staging buffer (about the largest reduced buffer)
     * charged to {@code memory} as {@link MemoryCategory#BUFFERS}, as are those of the groups {@link #split} from
     * it; initialises MPI on first use (MPI_Init_thread, MPI_THREAD_SERIALIZED). Collective: every process of the
     * job calls it, the same number of times, and it waits for all of them without a timeout (MPI_Comm_dup has
     * none); each call returns a new communicator (with its own failure channel, see {@link #reportFailure}). The
     * caller closes it.
     *
     * @throws IllegalArgumentException if {@code timeout} is not positive
     * @throws IllegalStateException    if libmpi is missing (the message says what to install), MPI cannot
     *                                  start, or MPI was finalized ({@link Mpi#finalizeMpi()})
     */
    public static MpiCommunicator world(Duration timeout, MemoryPool memory) {
        long nanos = checkTimeout(timeout);
        Objects.requireNonNull(memory, "memory");
        MpiRuntime rt = MpiRuntime.started();
        rt.lock().lock();
        try {
            MpiJob job = new MpiJob(rt);
            return new MpiCommunicator(rt, job, job.channel(), false, "world", nanos, memory);
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

    @Override public int rank() { return calls.rank; }
    @Override public int size() { return calls.size; }
    @Override public String name() { return calls.name; }

    /** This process's rank in MPI_COMM_WORLD. */
    public int worldRank() { return calls.runtime().worldRank(); }

    /** How long calls wait for peers. */
    public Duration timeout() { return Duration.ofNanos(calls.timeoutNanos()); }

    @Override
    public String toString() {
        return calls.name + " rank " + calls.rank + " of " + calls.size + " (mpi)";
    }

    // ---------------------------------------------------------------- collectives

    @Override
    public void allReduce(Tensor buffer, ReduceOp op) {
        checkBuffer(name(), buffer, "allReduce", "buffer", true);
        long seq = rendezvous(Collective.ALL_REDUCE, buffer.dtype(), op, buffer.numel(), 0, null, null);
        reductions.allReduce(seq, buffer, op);
    }

    @Override
    public void reduceScatter(Tensor output, Tensor input, ReduceOp op) {
        checkBuffer(name(), output, "reduceScatter", "output", true);
        checkBuffer(name(), input, "reduceScatter", "input", true);
        checkReduceScatter(name(), size(), output, input);
        long seq = rendezvous(Collective.REDUCE_SCATTER, input.dtype(), op, output.numel(), 0, null, null);
        reductions.reduceScatter(seq, output, input, op);
    }

    @Override
    public void allGather(Tensor output, Tensor input) {
        checkBuffer(name(), output, "allGather", "output", false);
        checkBuffer(name(), input, "allGather", "input", false);
        checkAllGather(name(), size(), output, input);
        long seq = rendezvous(Collective.ALL_GATHER, input.dtype(), null, input.numel(), 0, null, null);
        direct.allGather(seq, output, input);
    }

    @Override
    public void broadcast(Tensor buffer, int root) {
        checkBuffer(name(), buffer, "broadcast", "buffer", false);
        checkPeer(name(), size(), root, "broadcast", "root");
        long seq = rendezvous(Collective.BROADCAST, buffer.dtype(), null, buffer.numel(), root, null, null);
        direct.broadcast(seq, buffer, root);
    }

    @Override
    public void allToAll(Tensor output, int[] receiveCounts, Tensor input, int[] sendCounts) {
        checkBuffer(name(), output, "allToAll", "output", false);
        checkBuffer(name(), input, "allToAll", "input", false);
        long sent = checkAllToAll(name(), size(), output, receiveCounts, input, sendCounts);
        long seq = rendezvous(Collective.ALL_TO_ALL, input.dtype(), null, sent, 0, sendCounts, receiveCounts);
        direct.allToAll(seq, output, receiveCounts, input, sendCounts);
    }

    @Override
    public void barrier() {
        rendezvous(Collective.BARRIER, DType.F32, null, 0, 0, null, null);
    }

    /**
     * Open MPI's own MPI_Allreduce (SUM or MAX, F32, F64 or I32), after the same rendezvous as every collective.
     * Its order of addition is Open MPI's choice, so sums may differ from {@link #allReduce} (and the
     * {@code local} backend) in the last bits; for benchmarks and for jobs that do not need bit-parity.
     *
     * @throws IllegalArgumentException for AVG or BF16, or a non-contiguous buffer
     */
    public void nativeAllReduce(Tensor buffer, ReduceOp op) {
        checkBuffer(name(), buffer, "nativeAllReduce", "buffer", true);
        if (op == ReduceOp.AVG) {
            throw new IllegalArgumentException(name() + ": nativeAllReduce has no AVG (MPI has none); use allReduce");
        }
        long seq = rendezvous(Collective.NATIVE_ALL_REDUCE, buffer.dtype(), op, buffer.numel(), 0, null, null);
        direct.nativeAllReduce(seq, buffer, op);
    }

    @Override
    public MpiCommunicator split(int color, int key, String name) {
        return split(color, key, name, timeout());
    }

    /**
     * {@link #split(int, int, String)} with its own timeout for the new group's calls. The new group's staging
     * buffer is charged to this communicator's memory pool.
     *
     * @throws IllegalArgumentException if {@code color < 0}, {@code timeout} is not positive, or ranks of one
     *                                  color pass different names
     */
    public MpiCommunicator split(int color, int key, String name, Duration timeout) {
        if (color < 0) {
            throw new IllegalArgumentException(name() + ": split color must be >= 0, got " + color + " (rank " + rank() + ")");
        }
        Objects.requireNonNull(name, "name");
        long nanos = checkTimeout(timeout);
        long seq = rendezvous.exchange(Collective.SPLIT, DType.F32, null, 0, 0, color, key, name.hashCode(), null, null);
        CallDescriptors all = rendezvous.descriptors();
        for (int p = 0; p < size(); p++) {
            if (all.color(p) == color && all.nameHash(p) != name.hashCode()) {
                throw new IllegalArgumentException(name() + ": split #" + seq + " names color " + color + " \"" + name
                        + "\" on rank " + rank() + " but rank " + p + " passes another name; ranks of one color must pass the same name");
            }
        }
        MpiLibrary lib = calls.lib;
        MemorySegment comm = calls.comm;
        String where = calls.where(Collective.SPLIT.label + " #" + seq);
        MpiCommunicator[] child = new MpiCommunicator[1];
        calls.locked(() -> {
            // Blocking is safe: every rank has arrived (the rendezvous).
            lib.check((int) lib.commSplit.invokeExact(comm, color, key, handle), "MPI_Comm_split", where);
            child[0] = new MpiCommunicator(calls.runtime(), calls.job(), handle.get(ADDRESS, 0), true, name, nanos, memory);
        });
        return child[0];
    }

    /** The rendezvous of a collective other than split (see {@link Rendezvous#exchange}); returns its sequence number. */
    private long rendezvous(Collective op, DType dtype, ReduceOp reduceOp, long count, int root, int[] sendCounts,
                            int[] receiveCounts) {
        return rendezvous.exchange(op, dtype, reduceOp, count, root, 0, 0, 0, sendCounts, receiveCounts);
    }

    // ---------------------------------------------------------------- point to point

    @Override
    public void send(Tensor buffer, int peer, int tag) {
        checkBuffer(name(), buffer, "send", "buffer", false);
        checkPeer(name(), size(), peer, "send", "peer");
        pointToPoint.send(buffer, peer, tag);
    }

    @Override
    public void receive(Tensor buffer, int peer, int tag) {
        checkBuffer(name(), buffer, "receive", "buffer", false);
        checkPeer(name(), size(), peer, "receive", "peer");
        pointToPoint.receive(buffer, peer, tag);
    }

    // ---------------------------------------------------------------- failure and close

    /**
     * Tells every other process of this communicator's job that this rank failed with {@code cause}: their
     * pending and later calls on any communicator of the job throw {@link PeerFailedException} naming this
     * process's world rank, instead of waiting for the timeout. Call it on the way out of a failed rank (then
     * exit without {@link Mpi#finalizeMpi()}; mpirun ends the job). Later calls do nothing.
     */
    public void reportFailure(Throwable cause) {
        calls.reportFailure(cause);
    }

    /**
     * Frees the group: waits for sends still in flight (up to the timeout), frees the MPI communicators and
     * releases the staging buffer's memory. A communicator broken by a timeout or a peer failure is not freed (MPI
     * may still use its buffers).
     */
    @Override
    public void close() {
        if (!calls.close()) return;
        boolean drained = calls.broken() == null && pointToPoint.drainSends(calls.timeoutNanos());
        MpiLibrary lib = calls.lib;
        calls.locked(() -> {
            boolean keep = calls.broken() != null || !drained;
            if (!keep) {
                if (ownsComm) {
                    handle.set(ADDRESS, 0, calls.comm);
                    lib.check((int) lib.commFree.invokeExact(handle), "MPI_Comm_free", calls.name);
                }
                staging.close();
                arena.close();
            }
            calls.job().release(keep);
        });
    }
}
