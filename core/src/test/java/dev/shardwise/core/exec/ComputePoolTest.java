package dev.shardwise.core.exec;

import org.junit.jupiter.api.Test;

import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicIntegerArray;

import static org.junit.jupiter.api.Assertions.*;

class ComputePoolTest {

    @Test
    void everyTaskRunsExactlyOnce() {
        try (ComputePool pool = new ComputePool("test", 3)) {
            for (int round = 0; round < 200; round++) {
                int tasks = 1 + round % 17;
                AtomicIntegerArray runs = new AtomicIntegerArray(tasks);
                pool.parallelFor(tasks, runs::incrementAndGet);
                for (int t = 0; t < tasks; t++) assertEquals(1, runs.get(t), "round " + round + " task " + t);
            }
        }
    }

    @Test
    void nestedCallsRunInlineWithoutDeadlock() {
        try (ComputePool pool = new ComputePool("test", 2)) {
            AtomicInteger count = new AtomicInteger();
            pool.parallelFor(4, outer -> pool.parallelFor(5, inner -> count.incrementAndGet()));
            assertEquals(20, count.get());
        }
    }

    @Test
    void aTaskFailureReachesTheCaller() {
        try (ComputePool pool = new ComputePool("test", 2)) {
            IllegalStateException e = assertThrows(IllegalStateException.class,
                    () -> pool.parallelFor(8, t -> { if (t == 5) throw new IllegalStateException("task 5 failed"); }));
            assertEquals("task 5 failed", e.getMessage());
            AtomicInteger after = new AtomicInteger();
            pool.parallelFor(8, t -> after.incrementAndGet());
            assertEquals(8, after.get(), "the pool still works after a failure");
        }
    }

    @Test
    void runWithBindsThePoolForTheCallerAndItsWorkers() {
        try (ComputePool pool = new ComputePool("rank-1", 2)) {
            ComputePool.runWith(pool, () -> {
                assertSame(pool, ComputePool.current());
                AtomicIntegerArray seen = new AtomicIntegerArray(16);
                pool.parallelFor(16, t -> seen.set(t, ComputePool.current() == pool ? 1 : 0));
                for (int t = 0; t < 16; t++) assertEquals(1, seen.get(t));
            });
        }
    }

    @Test
    void sharedPoolCannotBeResizedAfterFirstUse() {
        ComputePool shared = ComputePool.shared();
        assertTrue(shared.threads() >= 1);
        assertThrows(IllegalStateException.class, () -> ComputePool.configureShared(3));
    }

    @Test
    void theThreadsVariableIsParsedOrRefusedWithItsNameAndTheDefault() {
        assertEquals(6, ComputePool.threadsFromEnvironment(null, 6), "unset: the default");
        assertEquals(6, ComputePool.threadsFromEnvironment("  ", 6), "blank: the default");
        assertEquals(3, ComputePool.threadsFromEnvironment(" 3\n", 6), "surrounding space ignored");
        for (String bad : new String[] {"0", "-2", "four", "2.5"}) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> ComputePool.threadsFromEnvironment(bad, 6), bad);
            assertTrue(e.getMessage().contains("SHARDWISE_THREADS='" + bad + "'") && e.getMessage().contains("e.g. 6"),
                    "message for '" + bad + "': " + e.getMessage());
        }
    }
}
