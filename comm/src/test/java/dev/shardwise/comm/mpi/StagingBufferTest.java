package dev.shardwise.comm.mpi;

import dev.shardwise.core.memory.MemoryBudgetExceededException;
import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.memory.MemoryPool;
import org.junit.jupiter.api.Test;

import java.lang.foreign.MemorySegment;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * {@link StagingBuffer}, the mpi reductions' staging area, is charged to the rank's pool as BUFFERS while held
 * and released on close (no MPI needed; {@code MpiCommunicatorConformanceTest} checks the same through a real
 * allReduce under mpirun).
 */
class StagingBufferTest {

    @Test
    void stagingIsChargedAsBuffersWhileHeldAndReleasedOnClose() {
        MemoryPool pool = MemoryPool.unlimited("rank 0");
        try (StagingBuffer staging = new StagingBuffer(pool)) {
            assertEquals(0, pool.liveBytes(MemoryCategory.BUFFERS), "nothing is charged before the first reduction");
            MemorySegment first = staging.atLeast(4000);
            assertTrue(first.byteSize() >= 4000, "the area holds the request: " + first.byteSize());
            assertEquals(4000, pool.liveBytes(MemoryCategory.BUFFERS), "charged to BUFFERS after a request of 4000 bytes");
            assertEquals(4000, pool.liveBytes(), "charged to no other category");

            assertSame(first, staging.atLeast(1000), "a smaller request reuses the area");
            assertEquals(4000, pool.liveBytes(MemoryCategory.BUFFERS), "reuse charges nothing more");

            staging.atLeast(10_000);
            assertEquals(10_000, pool.liveBytes(MemoryCategory.BUFFERS), "a larger request replaces the area");
            assertEquals(10_000, pool.peakBytes(MemoryCategory.BUFFERS), "the old area is released before the new one is taken");
        }
        assertEquals(0, pool.liveBytes(MemoryCategory.BUFFERS), "close releases the charge");
        assertEquals(10_000, pool.peakBytes(MemoryCategory.BUFFERS), "the peak stays in the report");
    }

    @Test
    void aRequestOfNothingTakesNothing() {
        MemoryPool pool = MemoryPool.unlimited("rank 0");
        try (StagingBuffer staging = new StagingBuffer(pool)) {
            assertEquals(0, staging.atLeast(0).byteSize(), "size of the area for 0 bytes");
            assertEquals(0, pool.liveBytes(), "bytes charged for a request of 0");
        }
    }

    @Test
    void stagingBeyondTheRanksBudgetFailsNamingBuffers() {
        MemoryPool pool = new MemoryPool("rank 3", 1 << 20);
        try (StagingBuffer staging = new StagingBuffer(pool)) {
            staging.atLeast(1 << 19);
            MemoryBudgetExceededException e = assertThrows(MemoryBudgetExceededException.class, () -> staging.atLeast(2 << 20));
            assertEquals(MemoryCategory.BUFFERS, e.category(), "the category the error names: " + e.getMessage());
            assertTrue(e.getMessage().contains("rank 3"), "the error names the rank: " + e.getMessage());
            assertEquals(0, pool.liveBytes(), "the old area was released before the failed growth");
            assertEquals(1 << 19, staging.atLeast(1 << 19).byteSize(), "the staging area works again within the budget");
        }
        assertEquals(0, pool.liveBytes(), "close releases the charge");
    }
}
