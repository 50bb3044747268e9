package dev.shardwise.comm.mpi;

/**
 * Whether this process can use the {@code mpi} backend, and the end of its MPI life.
 *
 * <p>The backend needs Open MPI 4.x's {@code libmpi.so.40} (Debian/Ubuntu: {@code apt-get install openmpi-bin
 * libopenmpi-dev}; {@code scripts/ensure-openmpi.sh} does it) and a process started by {@code mpirun}; the
 * environment variable {@code SHARDWISE_LIBMPI} may name another {@code libmpi.so}. Communicators come from
 * {@link MpiCommunicator#world()}.
 */
public final class Mpi {
    private Mpi() { }

    /** True when libmpi could be loaded (does not initialise MPI). */
    public static boolean isAvailable() {
        return MpiRuntime.unavailableReason() == null;
    }

    /** Why the backend is unavailable and what to install, or null when {@link #isAvailable()}. */
    public static String unavailableReason() {
        return MpiRuntime.unavailableReason();
    }

    /**
     * True when this process was started by Open MPI's {@code mpirun} (it sets {@code OMPI_COMM_WORLD_SIZE}).
     * Outside mpirun, MPI_Init would make this process a job of one.
     */
    public static boolean launchedByMpirun() {
        return System.getenv("OMPI_COMM_WORLD_SIZE") != null;
    }

    /**
     * Ends MPI in this process (MPI_Finalize): call once every communicator's work is done, on every process,
     * before a normal exit. Without it a shutdown hook finalises at exit, unless this process failed or saw a
     * peer fail (then it exits without finalising, and mpirun ends the job). Later calls do nothing; afterwards
     * no MPI communicator can be made or used.
     *
     * @throws IllegalStateException if MPI_Finalize reports an error
     */
    public static void finalizeMpi() {
        MpiRuntime rt = MpiRuntime.loadedOrNull();
        if (rt != null) rt.finalizeMpi();
    }
}
