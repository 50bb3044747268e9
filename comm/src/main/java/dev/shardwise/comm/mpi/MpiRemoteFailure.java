package dev.shardwise.comm.mpi;

/**
 * What another process of the MPI job reported when it failed ({@link MpiCommunicator#reportFailure}): its world
 * rank and the text of its exception (the exception itself stayed in that process).
 */
final class MpiRemoteFailure extends RuntimeException {
    MpiRemoteFailure(int worldRank, String description) {
        super("world rank " + worldRank + " reported: " + description, null, false, false);
    }
}
