package dev.shardwise.train;

import dev.shardwise.comm.RankContext;
import dev.shardwise.comm.RankEnvironment;
import dev.shardwise.comm.mpi.MpiCommunicator;
import dev.shardwise.core.exec.ComputePool;
import dev.shardwise.core.memory.MemoryPool;

import java.io.IOException;

/**
 * Runs this process as one rank of a multi-process MPI job: what {@code LocalCluster.run} is for ranks as
 * threads, for the {@code mpi} backend. The rank gets the job's world communicator (MPI_COMM_WORLD), its own
 * {@link MemoryPool} and its own {@link ComputePool} of {@code max(1, cores / processes on this node)} threads,
 * bound while the body runs, so the processes of a node together never oversubscribe it.
 *
 * <p>If the body throws, the peers are told at once (their pending and next collectives throw
 * {@code PeerFailedException} naming this rank) and the exception is rethrown; the process should then exit
 * non-zero, and the launcher ends the job. Blocks until the body returns.
 */
final class ProcessRank {
    private ProcessRank() { }

    /** One rank's work, on the calling thread. */
    @FunctionalInterface
    interface Body<T> {
        T run(RankContext rank) throws IOException;
    }

    /**
     * Runs {@code body} as rank {@code job.rank()} of the job and returns its result.
     *
     * @throws IllegalStateException if MPI does not see the job the environment describes (for example
     *                               torchrun's variables without an MPI launcher), or MPI cannot start
     * @throws IOException           if the body throws it
     */
    static <T> T run(RankEnvironment job, long memoryBudgetBytes, Body<T> body) throws IOException {
        int threads = job.threadsPerProcess(Runtime.getRuntime().availableProcessors());
        try (ComputePool compute = new ComputePool("rank-" + job.rank() + "-kernels", threads);
             MpiCommunicator world = MpiCommunicator.world()) {
            if (world.size() != job.size() || world.rank() != job.rank()) {
                throw new IllegalStateException("MPI sees this process as rank " + world.rank() + " of " + world.size()
                        + " but " + job.source().description() + " says rank " + job.rank() + " of " + job.size()
                        + "; start the job with mpirun or srun --mpi=pmix (shardwise launch does), not several plain processes");
            }
            RankContext ctx = new RankContext(world.rank(), world.size(), world,
                    new MemoryPool("rank " + world.rank(), memoryBudgetBytes), compute);
            Object[] result = new Object[1];
            IOException[] ioFailure = new IOException[1];
            ComputePool.runWith(compute, () -> {
                try {
                    result[0] = body.run(ctx);
                } catch (IOException e) {
                    world.reportFailure(e);
                    ioFailure[0] = e;
                } catch (RuntimeException | Error e) {
                    world.reportFailure(e);
                    throw e;
                }
            });
            if (ioFailure[0] != null) throw ioFailure[0];
            @SuppressWarnings("unchecked") T t = (T) result[0];
            return t;
        }
    }
}
