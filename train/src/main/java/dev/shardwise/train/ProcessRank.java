package dev.shardwise.train;

import dev.shardwise.comm.LocalCluster;
import dev.shardwise.comm.RankContext;
import dev.shardwise.comm.RankEnvironment;
import dev.shardwise.comm.mpi.MpiCommunicator;
import dev.shardwise.core.exec.ComputePool;
import dev.shardwise.core.memory.MemoryPool;

import java.io.IOException;
import java.util.Map;

/**
 * Runs this process as one rank of a multi-process MPI job: what {@code LocalCluster.run} is for ranks as
 * threads, for the {@code mpi} backend. The rank gets the job's world communicator (MPI_COMM_WORLD), its own
 * {@link MemoryPool} (which the communicator's reduction staging is charged to, as BUFFERS) and its own
 * {@link ComputePool} of {@link #kernelThreads} threads, bound while the body runs: by default
 * {@code max(1, cores / processes on this node)}, so the processes of a node together never oversubscribe it;
 * {@value #THREADS_VARIABLE}, when set, gives each process that many instead.
 *
 * <p>If the body throws, the peers are told at once (their pending and next collectives throw
 * {@code PeerFailedException} naming this rank) and the exception is rethrown; the process should then exit
 * non-zero, and the launcher ends the job. Blocks until the body returns.
 */
final class ProcessRank {
    /** The environment variable that sets the kernel threads of a process (each process of a job, here). */
    static final String THREADS_VARIABLE = ComputePool.THREADS_VARIABLE;

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
        int threads = kernelThreads(System.getenv(), job, Runtime.getRuntime().availableProcessors());
        MemoryPool memory = new MemoryPool("rank " + job.rank(), memoryBudgetBytes);
        try (ComputePool compute = new ComputePool("rank-" + job.rank() + "-kernels", threads);
             MpiCommunicator world = MpiCommunicator.world(LocalCluster.Options.DEFAULT_TIMEOUT, memory)) {
            if (world.size() != job.size() || world.rank() != job.rank()) {
                throw new IllegalStateException("MPI sees this process as rank " + world.rank() + " of " + world.size()
                        + " but " + job.source().description() + " says rank " + job.rank() + " of " + job.size()
                        + "; start the job with mpirun or srun --mpi=pmix (shardwise launch does), not several plain processes");
            }
            RankContext ctx = new RankContext(world.rank(), world.size(), world, memory, compute);
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

    /**
     * The kernel threads of this process: {@value #THREADS_VARIABLE} from {@code env} when it is set and not blank
     * (threads of this one process), else {@link RankEnvironment#threadsPerProcess its share} of the node's
     * {@code cores}.
     *
     * @throws IllegalArgumentException naming the variable and its value if it is set but not a positive integer
     */
    static int kernelThreads(Map<String, String> env, RankEnvironment job, int cores) {
        return ComputePool.threadsFromEnvironment(env.get(THREADS_VARIABLE), job.threadsPerProcess(cores));
    }
}
