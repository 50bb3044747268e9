package dev.shardwise.comm.mpi;

import dev.shardwise.comm.CommTimeoutException;
import dev.shardwise.core.tensor.Tensor;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.ArrayDeque;
import java.util.List;

import static dev.shardwise.comm.CollectiveArguments.bytes;
import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_INT;

/**
 * Eager send and polled receive over MPI_Isend and MPI_Irecv. A send copies the buffer and starts MPI_Isend from
 * the copy, so it never blocks and the buffer is free again on return; the copy is freed once MPI is done with it
 * ({@link #reapSends}, at the start of every call of the communicator). A receive posts MPI_Irecv into the buffer
 * and polls it with the communicator's timeout and failure watch. Messages of one (peer, tag) arrive in order; a
 * receive whose message is shorter or longer than its buffer throws; a dtype mismatch of equal byte size is not
 * detected. User tags are [0, {@value MpiCommunicator#MAX_USER_TAG}].
 */
final class PointToPoint {
    /** A send still in flight: its request and the copy it reads from (both in {@code arena}). */
    private record PendingSend(Arena arena, MemorySegment request, int peer, int tag) { }

    private final MpiCalls calls;
    private final ArrayDeque<PendingSend> pendingSends = new ArrayDeque<>();
    private final MemorySegment request, flag, status, received;
    private long receives;      // receives called so far

    PointToPoint(MpiCalls calls, Arena arena) {
        this.calls = calls;
        this.request = arena.allocate(ADDRESS);
        this.flag = arena.allocate(JAVA_INT);
        this.status = arena.allocate(MpiLibrary.STATUS);
        this.received = arena.allocate(JAVA_INT);
    }

    /**
     * Copies {@code buffer} and starts sending the copy to {@code peer}; returns at once.
     *
     * @throws IllegalArgumentException if the tag is outside the users' range or the buffer has 2^31 elements or more
     * @throws IllegalStateException    if the communicator is closed or broken
     */
    void send(Tensor buffer, int peer, int tag) {
        String operation = "send(tag " + tag + " to rank " + peer + ")";
        Message m = message(buffer, tag, "send", operation);
        MemorySegment src = m.bytes(), type = m.type(), comm = calls.comm;
        int count = m.count();
        MpiLibrary lib = calls.lib;
        Arena copyArena = Arena.ofShared();
        MemorySegment copy = copyArena.allocate(Math.max(1, src.byteSize()), 64);
        MemorySegment.copy(src, 0, copy, 0, src.byteSize());
        MemorySegment sendRequest = copyArena.allocate(ADDRESS);
        String where = calls.where(operation);
        try {
            calls.locked(() -> {
                reapSends();
                lib.check((int) lib.isend.invokeExact(copy, count, type, peer, tag, comm, sendRequest), "MPI_Isend", where);
                pendingSends.add(new PendingSend(copyArena, sendRequest, peer, tag));
            });
        } catch (RuntimeException | Error e) {
            copyArena.close();
            throw e;
        }
    }

    /**
     * Receives the next message of {@code peer} with {@code tag} into {@code buffer}, waiting up to the timeout.
     *
     * @throws IllegalArgumentException if the tag is outside the users' range, or the message's size is not the
     *                                  buffer's
     * @throws CommTimeoutException     naming the peer if no message came within the timeout (the receive is
     *                                  cancelled; the communicator stays usable)
     * @throws dev.shardwise.comm.PeerFailedException if a process of the job reported a failure meanwhile
     */
    void receive(Tensor buffer, int peer, int tag) {
        String operation = "receive(tag " + tag + " from rank " + peer + ")";
        Message m = message(buffer, tag, "receive", operation);
        long seq = ++receives;
        MemorySegment dst = m.bytes(), type = m.type(), comm = calls.comm;
        int count = m.count();
        MpiLibrary lib = calls.lib;
        calls.locked(() -> {
            reapSends();
            lib.check((int) lib.irecv.invokeExact(dst, count, type, peer, tag, comm, request), "MPI_Irecv",
                    calls.name + " " + operation);
        });
        calls.await(operation + " #" + seq, true, () -> {
            int rc = (int) lib.test.invokeExact(request, flag, status);
            // MPI_Test reports a failed receive (MPI_ERR_TRUNCATE: the message is longer) in its return code.
            if (rc != MpiLibrary.MPI_SUCCESS) {
                throw new IllegalArgumentException(calls.name + ": " + operation + " at rank " + calls.rank + " into "
                        + buffer.describe() + " failed: " + lib.errorText(rc) + "; send and receive must pass buffers of the same "
                        + "dtype and size");
            }
            if (flag.get(JAVA_INT, 0) == 0) return false;
            lib.check((int) lib.getCount.invokeExact(status, type, received), "MPI_Get_count", calls.name);
            int got = received.get(JAVA_INT, 0);
            if (got != count) {
                throw new IllegalArgumentException(calls.name + ": rank " + peer + " sent " + got + " elements of "
                        + buffer.dtype().byteSize() + " bytes with tag " + tag + " but rank " + calls.rank + " receives it into "
                        + buffer.describe() + "; send and receive must pass buffers of the same dtype and size");
            }
            return true;
        }, this::cancelReceive, () -> {
            cancelReceive();
            return new CommTimeoutException(calls.name, operation, seq, List.of(peer), calls.timeoutMillis());
        });
    }

    /** Cancels the pending receive and waits for the cancel (or the message, if it had matched) to complete. */
    private void cancelReceive() {
        MpiLibrary lib = calls.lib;
        calls.locked(() -> {
            lib.check((int) lib.cancel.invokeExact(request), "MPI_Cancel", calls.name);
            lib.check((int) lib.wait.invokeExact(request, MpiLibrary.STATUS_IGNORE), "MPI_Wait", calls.name);
        });
    }

    /** Frees the copies of sends MPI is done with; call holding the lock (inside {@link MpiCalls#locked}). */
    void reapSends() throws Throwable {
        MpiLibrary lib = calls.lib;
        for (var it = pendingSends.iterator(); it.hasNext(); ) {
            PendingSend s = it.next();
            lib.check((int) lib.test.invokeExact(s.request(), flag, MpiLibrary.STATUS_IGNORE), "MPI_Test",
                    calls.name + " send(tag " + s.tag() + " to rank " + s.peer() + ")");
            if (flag.get(JAVA_INT, 0) != 0) {
                s.arena().close();
                it.remove();
            }
        }
    }

    /**
     * Waits up to {@code timeoutNanos} for the sends in flight to complete, yielding between polls; true when none
     * is left.
     */
    boolean drainSends(long timeoutNanos) {
        long start = System.nanoTime();
        while (!pendingSends.isEmpty() && System.nanoTime() - start < timeoutNanos) {
            calls.locked(this::reapSends);
            if (!pendingSends.isEmpty()) Thread.yield();
        }
        return pendingSends.isEmpty();
    }

    /** A buffer as MPI reads or writes it: its bytes, its element count and the MPI datatype of its elements. */
    private record Message(MemorySegment bytes, int count, MemorySegment type) { }

    /**
     * Checks the tag and that the communicator is usable, and describes {@code buffer} for MPI.
     *
     * @throws IllegalArgumentException if the tag is outside the users' range or the buffer has 2^31 elements or more
     * @throws IllegalStateException    if the communicator is closed or broken
     */
    private Message message(Tensor buffer, int tag, String call, String operation) {
        if (tag < 0 || tag > MpiCommunicator.MAX_USER_TAG) {
            throw new IllegalArgumentException(calls.name + ": " + call + " tag must be in [0, " + MpiCommunicator.MAX_USER_TAG
                    + "] (MPI guarantees tags up to 32767; the mpi backend keeps the top two for itself), got " + tag);
        }
        calls.checkUsable(operation);
        return new Message(bytes(buffer), calls.count(buffer.numel(), call), calls.lib.elementType(buffer.dtype().byteSize()));
    }
}
