package dev.shardwise.comm;

import dev.shardwise.core.exec.ComputePool;
import dev.shardwise.core.memory.MemoryPool;

/**
 * What one rank of a job is given: its place in the world, the world communicator, its own memory pool and
 * its own kernel threads (already bound with {@link ComputePool#runWith} while the rank's body runs).
 *
 * @param globalRank this rank's index in the world, in [0, worldSize)
 * @param worldSize  number of ranks in the job
 * @param world      the communicator of all ranks, named {@code world}
 * @param memory     this rank's memory pool, named {@code rank <globalRank>}
 * @param compute    this rank's kernel threads
 */
public record RankContext(int globalRank, int worldSize, Communicator world, MemoryPool memory, ComputePool compute) {
}
