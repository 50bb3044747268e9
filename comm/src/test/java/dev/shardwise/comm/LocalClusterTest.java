package dev.shardwise.comm;

import dev.shardwise.core.exec.ComputePool;
import dev.shardwise.core.memory.MemoryBudgetExceededException;
import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;
import org.junit.jupiter.api.Test;

import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** What {@link LocalCluster} gives each rank, and that it cleans up after itself. */
class LocalClusterTest {

    @Test
    void eachRankGetsItsPlaceWorldPoolsAndBoundComputeThreads() {
        int ranks = 3;
        int expectedThreads = Math.max(1, Runtime.getRuntime().availableProcessors() / ranks);
        List<String> seen = LocalCluster.run(ranks, ctx -> {
            assertSame(ctx.compute(), ComputePool.current(), "rank " + ctx.globalRank() + " runs on its own compute pool");
            assertEquals(expectedThreads, ctx.compute().threads(), "threads of rank " + ctx.globalRank());
            assertEquals(ctx.globalRank(), ctx.world().rank());
            assertEquals(ranks, ctx.world().size());
            return ctx.globalRank() + "/" + ctx.worldSize() + " " + ctx.world().name() + " " + ctx.memory().rankName();
        });
        assertEquals(List.of("0/3 world rank 0", "1/3 world rank 1", "2/3 world rank 2"), seen);
    }

    @Test
    void optionsSetThreadsPerRankAndMemoryBudget() {
        LocalCluster.Options options = LocalCluster.Options.defaults().withThreadsPerRank(2).withMemoryBudget(1 << 20);
        RankFailedException e = assertThrows(RankFailedException.class, () -> LocalCluster.run(2, options, ctx -> {
            assertEquals(2, ctx.compute().threads());
            assertEquals(1 << 20, ctx.memory().budgetBytes());
            if (ctx.globalRank() == 1) {
                Tensor.allocate(ctx.memory(), MemoryCategory.BUFFERS, DType.F32, 1 << 19).close();   // 2 MiB > 1 MiB
            }
            return null;
        }));
        assertEquals(1, e.rank());
        assertInstanceOf(MemoryBudgetExceededException.class, e.getCause());
    }

    @Test
    void rankThreadsAreGoneAfterSuccessAndAfterFailure() throws InterruptedException {
        LocalCluster.run(4, ctx -> {
            ctx.world().barrier();
            return null;
        });
        assertThrows(RankFailedException.class, () -> LocalCluster.run(4, ctx -> {
            if (ctx.globalRank() == 3) throw new IllegalStateException("fail on purpose");
            ctx.world().barrier();
            return null;
        }));
        for (Thread t : Thread.getAllStackTraces().keySet()) {
            if (t.getName().startsWith("shardwise-rank-") || t.getName().matches("rank-\\d+-kernels.*")) {
                t.join(2000);   // closed pool workers leave at their next wake-up
                assertFalse(t.isAlive(), "thread left running: " + t.getName());
            }
        }
    }

    @Test
    void closedCommunicatorRefusesCollectives() {
        RankFailedException e = assertThrows(RankFailedException.class, () -> LocalCluster.run(1, ctx -> {
            Communicator self = ctx.world().split(0, 0, "self");
            self.close();
            self.barrier();
            return null;
        }));
        assertInstanceOf(IllegalStateException.class, e.getCause());
        assertTrue(e.getCause().getMessage().contains("self is closed"), e.getCause().getMessage());
    }

    @Test
    void rejectsFewerThanOneRank() {
        assertThrows(IllegalArgumentException.class, () -> LocalCluster.run(0, ctx -> null));
    }
}
