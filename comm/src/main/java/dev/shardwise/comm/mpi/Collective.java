package dev.shardwise.comm.mpi;

/** The calls of an {@link MpiCommunicator} that every rank of its group makes together, as errors name them. */
enum Collective {
    ALL_REDUCE("allReduce"), REDUCE_SCATTER("reduceScatter"), ALL_GATHER("allGather"), BROADCAST("broadcast"),
    ALL_TO_ALL("allToAll"), BARRIER("barrier"), SPLIT("split"), NATIVE_ALL_REDUCE("nativeAllReduce");

    final String label;

    Collective(String label) { this.label = label; }
}
