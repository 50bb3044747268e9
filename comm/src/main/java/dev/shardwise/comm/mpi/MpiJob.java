package dev.shardwise.comm.mpi;

import dev.shardwise.comm.PeerFailedException;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.charset.StandardCharsets;

import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_BYTE;
import static java.lang.foreign.ValueLayout.JAVA_INT;

/**
 * What the communicators made from one {@link MpiCommunicator#world} call share: a duplicate of MPI_COMM_WORLD
 * (the world communicator's own, and the failure channel on which a failing process tells every other process
 * "world rank r failed: why", with a tag of its own) and the
 * first such notice received. Communicators waiting in a call poll the channel, so a peer's reported failure
 * ends their wait at once with {@link dev.shardwise.comm.PeerFailedException} instead of a timeout.
 *
 * <p>Guarded by the runtime's lock (the channel's MPI calls) or volatile (the failure seen); released when the
 * last communicator of the job is closed.
 */
final class MpiJob {
    /** Tag of failure notices on the channel (above the users' tags and the descriptors'). */
    private static final int TAG_FAILURE = MpiCommunicator.MAX_USER_TAG + 2;

    /** A failure notice: the failed process's world rank and its description of what it threw. */
    record Failure(int worldRank, String description) { }

    private final MpiRuntime rt;
    private final MpiLibrary lib;
    private final MemorySegment channel;    // MPI_Comm value
    private final Arena arena = Arena.ofShared();
    private final MemorySegment flag, status;
    private volatile Failure failure;
    private boolean reported;               // guarded by rt.lock()
    private int references;                 // guarded by rt.lock()
    private boolean keepChannel;            // guarded by rt.lock()

    /** Collective over MPI_COMM_WORLD (it duplicates it); call holding the runtime's lock. */
    MpiJob(MpiRuntime rt) {
        this.rt = rt;
        this.lib = rt.lib();
        this.flag = arena.allocate(JAVA_INT);
        this.status = arena.allocate(MpiLibrary.STATUS);
        MemorySegment out = arena.allocate(ADDRESS);
        try {
            lib.check((int) lib.commDup.invokeExact(lib.commWorld, out), "MPI_Comm_dup(MPI_COMM_WORLD)", "mpi failure channel");
        } catch (Throwable t) {
            throw MpiLibrary.rethrow(t);
        }
        channel = out.get(ADDRESS, 0);
    }

    /** The duplicate of MPI_COMM_WORLD (MPI_Comm value), freed when the job's last communicator is closed. */
    MemorySegment channel() { return channel; }

    /** The first failure notice received so far, or null; polls the channel (call holding the runtime's lock). */
    Failure poll() {
        Failure f = failure;
        if (f != null) return f;
        try {
            lib.check((int) lib.iprobe.invokeExact(MpiLibrary.MPI_ANY_SOURCE, TAG_FAILURE, channel, flag, status),
                    "MPI_Iprobe", "mpi failure channel");
            if (flag.get(JAVA_INT, 0) == 0) return null;
            int source = status.get(JAVA_INT, MpiLibrary.STATUS_SOURCE);
            lib.check((int) lib.getCount.invokeExact(status, lib.mpiByte, flag), "MPI_Get_count", "mpi failure channel");
            int bytes = flag.get(JAVA_INT, 0);
            try (Arena a = Arena.ofConfined()) {
                MemorySegment text = a.allocate(Math.max(1, bytes));
                lib.check((int) lib.recv.invokeExact(text, bytes, lib.mpiByte, source, TAG_FAILURE, channel, MpiLibrary.STATUS_IGNORE),
                        "MPI_Recv", "mpi failure channel");
                f = new Failure(source, new String(text.asSlice(0, bytes).toArray(JAVA_BYTE), StandardCharsets.UTF_8));
            }
        } catch (Throwable t) {
            throw MpiLibrary.rethrow(t);
        }
        failure = f;
        rt.markFailed();
        return f;
    }

    /**
     * Sends "this rank failed: cause" to every other process, once (later calls do nothing; nothing is sent for
     * a {@link PeerFailedException}, which only echoes another rank's notice); the sends complete in the
     * background (their buffers are never freed: a failing process is about to end).
     */
    void report(Throwable cause) {
        rt.lock().lock();
        try {
            rt.markFailed();
            // A peer's failure is not news: its own notice is on the way, and a second one could be read first.
            if (reported || cause instanceof PeerFailedException) return;
            reported = true;
            byte[] text = String.valueOf(cause).getBytes(StandardCharsets.UTF_8);
            MemorySegment message = Arena.global().allocate(Math.max(1, text.length));
            MemorySegment.copy(text, 0, message, JAVA_BYTE, 0, text.length);
            MemorySegment request = Arena.global().allocate(ADDRESS);
            for (int p = 0; p < rt.worldSize(); p++) {
                if (p == rt.worldRank()) continue;
                lib.check((int) lib.isend.invokeExact(message, text.length, lib.mpiByte, p, TAG_FAILURE, channel, request),
                        "MPI_Isend", "mpi failure channel");
                lib.check((int) lib.requestFree.invokeExact(request), "MPI_Request_free", "mpi failure channel");
            }
        } catch (Throwable t) {
            throw MpiLibrary.rethrow(t);
        } finally {
            rt.lock().unlock();
        }
    }

    /** A communicator of this job was made (call holding the runtime's lock). */
    void retain() {
        references++;
    }

    /**
     * A communicator of this job was closed; the last one frees the channel unless a failure was seen or some
     * communicator was {@code broken} (MPI may still use the channel then). Call holding the runtime's lock.
     */
    void release(boolean broken) {
        keepChannel |= broken;
        if (--references > 0) return;
        if (failure == null && !reported && !keepChannel) {
            try (Arena a = Arena.ofConfined()) {
                MemorySegment handle = a.allocate(ADDRESS);
                handle.set(ADDRESS, 0, channel);
                lib.check((int) lib.commFree.invokeExact(handle), "MPI_Comm_free", "mpi failure channel");
            } catch (Throwable t) {
                throw MpiLibrary.rethrow(t);
            }
        }
        arena.close();
    }
}
