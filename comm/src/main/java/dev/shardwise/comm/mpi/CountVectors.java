package dev.shardwise.comm.mpi;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;

import static java.lang.foreign.ValueLayout.JAVA_INT;

/**
 * The argument arrays of MPI's vector collectives (MPI_Ialltoallv, MPI_Iallgatherv): per peer, the element count
 * and the displacement (in elements) of what this rank sends and receives, as C ints. One set per communicator,
 * filled before each call and read by MPI until the call completes.
 */
final class CountVectors {
    final MemorySegment sendCounts, sendDispls, receiveCounts, receiveDispls;
    private final MpiCalls calls;

    CountVectors(MpiCalls calls, Arena arena) {
        this.calls = calls;
        long bytes = 4L * calls.size;
        sendCounts = arena.allocate(bytes, 64);
        sendDispls = arena.allocate(bytes, 64);
        receiveCounts = arena.allocate(bytes, 64);
        receiveDispls = arena.allocate(bytes, 64);
    }

    /**
     * This rank sends {@code count} elements from element {@code displacement} to peer {@code p}.
     *
     * @throws IllegalArgumentException if a value is 2^31 or more (MPI's int counts), naming {@code operation}
     */
    void send(int p, long count, long displacement, String operation) {
        sendCounts.setAtIndex(JAVA_INT, p, calls.count(count, operation));
        sendDispls.setAtIndex(JAVA_INT, p, calls.count(displacement, operation));
    }

    /**
     * This rank receives {@code count} elements from peer {@code p} at element {@code displacement}.
     *
     * @throws IllegalArgumentException if a value is 2^31 or more (MPI's int counts), naming {@code operation}
     */
    void receive(int p, long count, long displacement, String operation) {
        receiveCounts.setAtIndex(JAVA_INT, p, calls.count(count, operation));
        receiveDispls.setAtIndex(JAVA_INT, p, calls.count(displacement, operation));
    }
}
