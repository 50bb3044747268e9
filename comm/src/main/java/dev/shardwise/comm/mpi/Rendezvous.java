package dev.shardwise.comm.mpi;

import dev.shardwise.comm.CommTimeoutException;
import dev.shardwise.comm.ReduceOp;
import dev.shardwise.core.tensor.DType;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.List;

import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_INT;

/**
 * The rendezvous that opens every {@link MpiCommunicator} collective: each rank sends every peer the descriptor
 * of its call ({@link CallDescriptors}) with MPI_Isend and receives theirs with MPI_Irecv, on a tag above the
 * users', then checks that the calls match. A peer whose descriptor has not come within the timeout is missing,
 * so this is where a rank that never calls is named.
 *
 * <p>Requests: the n-1 receives sit in slots [0, n-1), the n-1 sends in [n-1, 2n-2), polled together with
 * MPI_Testsome (completed slots become MPI_REQUEST_NULL). Collectives are numbered per communicator from 1.
 */
final class Rendezvous {
    private static final int TAG_DESCRIPTOR = MpiCommunicator.MAX_USER_TAG + 1;

    private final MpiCalls calls;
    private final MpiCalls.Locked beforePosting;
    private final CallDescriptors descriptors;
    private final MemorySegment requests, indices, outCount;
    private long sequence;      // collectives called so far

    /** {@code beforePosting} runs holding the lock before each rendezvous posts its requests (housekeeping). */
    Rendezvous(MpiCalls calls, Arena arena, MpiCalls.Locked beforePosting) {
        this.calls = calls;
        this.beforePosting = beforePosting;
        this.descriptors = new CallDescriptors(arena, calls.name, calls.rank, calls.size);
        this.requests = arena.allocate(ADDRESS.byteSize() * 2 * calls.size, 64);
        this.indices = arena.allocate(4L * 2 * calls.size, 64);
        this.outCount = arena.allocate(JAVA_INT);
    }

    /** What every rank passed to the last rendezvous (for split's check of the names). */
    CallDescriptors descriptors() { return descriptors; }

    /**
     * Numbers the call, exchanges descriptors with every peer and checks they match; returns the call's
     * sequence number. Null counts mean none (all but allToAll).
     *
     * @throws IllegalStateException    if the communicator is closed or broken
     * @throws CommTimeoutException     naming the ranks whose descriptor did not come within the timeout
     * @throws IllegalArgumentException if the ranks' calls do not match (the same message on every rank)
     */
    long exchange(Collective op, DType dtype, ReduceOp reduceOp, long count, int root, int color, int key, int nameHash,
                  int[] sendCounts, int[] receiveCounts) {
        long seq = ++sequence;
        String operation = op.label + " #" + seq;
        calls.checkUsable(operation);
        int n = calls.size, rank = calls.rank;
        descriptors.fill(seq, op, dtype, reduceOp, count, root, color, key, nameHash, sendCounts, receiveCounts);
        if (n == 1) return seq;
        MpiLibrary lib = calls.lib;
        MemorySegment type = lib.mpiLongLong, comm = calls.comm;
        String where = calls.where(operation);
        calls.locked(() -> {
            beforePosting.run();
            int k = 0;
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
        });
        int slots = 2 * (n - 1);
        int[] remaining = {slots};
        calls.await(operation, true, () -> {
            int rc = (int) lib.testsome.invokeExact(slots, requests, outCount, indices, MpiLibrary.STATUS_IGNORE);
            lib.check(rc, "MPI_Testsome", where);
            int done = outCount.get(JAVA_INT, 0);
            if (done != MpiLibrary.MPI_UNDEFINED) remaining[0] -= done;
            return remaining[0] == 0;
        }, () -> abandon(slots), () -> {
            List<Integer> missing = missing();
            abandon(slots);
            calls.markBroken(operation + " timed out waiting for rank(s) " + missing);
            return new CommTimeoutException(calls.name, op.label, seq, missing, calls.timeoutMillis());
        });
        descriptors.check(op, seq);
        return seq;
    }

    /** The peers whose descriptor has not come: their receive slot is still pending. */
    private List<Integer> missing() {
        List<Integer> missing = new ArrayList<>();
        int k = 0;
        for (int p = 0; p < calls.size; p++) {
            if (p == calls.rank) continue;
            if (!requests.get(ADDRESS, 8L * k++).equals(calls.lib.requestNull)) missing.add(p);
        }
        return missing;
    }

    /** Cancels the rendezvous' pending receives and lets its pending sends finish on their own. */
    private void abandon(int count) {
        MpiLibrary lib = calls.lib;
        String name = calls.name;
        calls.locked(() -> {
            for (int k = 0; k < count; k++) {
                MemorySegment r = requests.asSlice(8L * k, 8);
                if (r.get(ADDRESS, 0).equals(lib.requestNull)) continue;
                if (k < calls.size - 1) {
                    lib.check((int) lib.cancel.invokeExact(r), "MPI_Cancel", name);
                    lib.check((int) lib.wait.invokeExact(r, MpiLibrary.STATUS_IGNORE), "MPI_Wait", name);
                } else {
                    lib.check((int) lib.requestFree.invokeExact(r), "MPI_Request_free", name);
                }
            }
        });
    }
}
