package dev.shardwise.comm;

import dev.shardwise.comm.mpi.MpiCommunicator;
import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;

import java.time.Duration;

/**
 * One process of {@code mpirun -np 2 java ... MpiFailFastMain}: world rank 1 fails before the first allReduce,
 * reports it and exits with status 3 (without MPI_Finalize); rank 0 waits in that allReduce (timeout 120 s) and
 * prints what it throws. {@link MpiConformanceTest} checks that the job ends at once, not after the timeout.
 */
public final class MpiFailFastMain {
    private MpiFailFastMain() { }

    public static void main(String[] args) {
        MpiCommunicator world = MpiCommunicator.world(Duration.ofSeconds(120));
        if (world.rank() == 1) {
            IllegalStateException e = new IllegalStateException("rank 1 failed on purpose");
            world.reportFailure(e);
            System.out.println("rank 1: " + e.getMessage() + ", exiting with 3");
            System.exit(3);
        }
        try (Tensor t = Tensor.allocate(MemoryPool.unlimited("rank 0"), MemoryCategory.BUFFERS, DType.F32, 1000)) {
            world.allReduce(t, ReduceOp.SUM);
            System.out.println("rank 0: allReduce returned although rank 1 never called it");
            System.exit(1);
        } catch (PeerFailedException e) {
            System.out.println("rank 0: " + e.getMessage());
            System.exit(4);
        }
    }
}
