package dev.shardwise.core.memory;

import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.*;

class MemoryPoolTest {

    @Test
    void tracksLiveAndPeakBytesPerCategory() {
        MemoryPool pool = MemoryPool.unlimited("rank 0");
        MemoryPool.Allocation params = pool.allocate(MemoryCategory.PARAMETERS, 1000);
        MemoryPool.Allocation acts = pool.allocate(MemoryCategory.ACTIVATIONS, 300);
        assertEquals(1000, pool.liveBytes(MemoryCategory.PARAMETERS));
        assertEquals(300, pool.liveBytes(MemoryCategory.ACTIVATIONS));
        assertEquals(1300, pool.liveBytes());
        acts.close();
        MemoryPool.Allocation acts2 = pool.allocate(MemoryCategory.ACTIVATIONS, 100);
        assertEquals(1100, pool.liveBytes());
        assertEquals(1300, pool.peakBytes(), "peak total keeps the high-water mark");
        assertEquals(300, pool.peakBytes(MemoryCategory.ACTIVATIONS));
        pool.resetPeaks();
        assertEquals(100, pool.peakBytes(MemoryCategory.ACTIVATIONS));
        params.close();
        acts2.close();
        assertEquals(0, pool.liveBytes());
        for (MemoryCategory c : MemoryCategory.values()) assertEquals(0, pool.liveBytes(c), c.label());
    }

    @Test
    void largeAllocationsAreZeroedWholeAndReusableAfterFree() {
        // From 2 MiB up the pool maps huge pages (on Linux): each fresh mapping must read as zeros over its whole
        // length, even where an earlier, freed one of the same size was written, and hold what is written to it.
        MemoryPool pool = MemoryPool.unlimited("rank 0");
        long bytes = HugePageMemory.THRESHOLD + 4096 + 3;   // not a multiple of any page size
        for (int round = 0; round < 3; round++) {
            try (MemoryPool.Allocation a = pool.allocate(MemoryCategory.BUFFERS, bytes)) {
                java.lang.foreign.MemorySegment s = a.segment();
                assertEquals(bytes, s.byteSize());
                assertEquals(0, s.address() % MemoryPool.ALIGNMENT);
                if (HugePageMemory.available()) assertEquals(0, s.address() % HugePageMemory.THRESHOLD, "2 MiB-aligned for huge pages");
                for (long i = 0; i < bytes; i += 8) {
                    long at = Math.min(i, bytes - 8);
                    assertEquals(0, s.get(java.lang.foreign.ValueLayout.JAVA_LONG_UNALIGNED, at), "byte " + at + " in round " + round);
                }
                s.fill((byte) 0x5A);
                assertEquals((byte) 0x5A, s.get(java.lang.foreign.ValueLayout.JAVA_BYTE, bytes - 1));
                assertEquals(bytes, pool.liveBytes(MemoryCategory.BUFFERS));
            }
            assertEquals(0, pool.liveBytes());
        }
    }

    @Test
    void allocationsAreZeroedAndAligned() {
        MemoryPool pool = MemoryPool.unlimited("rank 0");
        try (MemoryPool.Allocation a = pool.allocate(MemoryCategory.BUFFERS, 4096 + 3)) {
            assertEquals(0, a.segment().address() % MemoryPool.ALIGNMENT);
            assertEquals(4099, a.segment().byteSize());
            for (long i = 0; i < a.segment().byteSize(); i++) assertEquals(0, a.segment().get(java.lang.foreign.ValueLayout.JAVA_BYTE, i));
        }
    }

    @Test
    void exceedingTheBudgetNamesRankCategoryAndSizesAndAllocatesNothing() {
        MemoryPool pool = new MemoryPool("rank 3", 10_000);
        MemoryPool.Allocation kept = pool.allocate(MemoryCategory.PARAMETERS, 6_000);
        MemoryBudgetExceededException e = assertThrows(MemoryBudgetExceededException.class,
                () -> pool.allocate(MemoryCategory.OPTIMIZER_STATE, 5_000));
        assertTrue(e.getMessage().contains("rank 3"), e.getMessage());
        assertTrue(e.getMessage().contains("optimizer-state"), e.getMessage());
        assertTrue(e.getMessage().contains("(5000 bytes)"), e.getMessage());
        assertTrue(e.getMessage().contains("budget"), e.getMessage());
        assertEquals(MemoryCategory.OPTIMIZER_STATE, e.category());
        assertEquals(5_000, e.requestedBytes());
        assertEquals(6_000, e.liveBytes());
        assertEquals(6_000, pool.liveBytes(), "a refused allocation charges nothing");
        assertEquals(0, pool.liveBytes(MemoryCategory.OPTIMIZER_STATE));
        kept.close();
        pool.allocate(MemoryCategory.OPTIMIZER_STATE, 10_000).close();  // fits exactly once freed
    }

    @Test
    void freeingTwiceIsAnError() {
        MemoryPool pool = MemoryPool.unlimited("rank 0");
        MemoryPool.Allocation a = pool.allocate(MemoryCategory.GRADIENTS, 8);
        a.close();
        assertThrows(IllegalStateException.class, a::close);
        assertEquals(0, pool.liveBytes());
    }

    @Test
    void concurrentAllocationsBalance() throws InterruptedException {
        MemoryPool pool = MemoryPool.unlimited("rank 0");
        Thread[] threads = new Thread[4];
        for (int t = 0; t < threads.length; t++) {
            threads[t] = new Thread(() -> {
                for (int i = 0; i < 200; i++) pool.allocate(MemoryCategory.BUFFERS, 64 + i).close();
            });
            threads[t].start();
        }
        for (Thread t : threads) t.join();
        assertEquals(0, pool.liveBytes());
        assertTrue(pool.peakBytes() >= 64);
    }

    @Test
    void parsesAndFormatsSizes() {
        assertEquals(512L << 20, MemoryPool.parseBytes("512m"));
        assertEquals(8L << 30, MemoryPool.parseBytes("8GiB"));
        assertEquals(3L << 29, MemoryPool.parseBytes("1.5g"));
        assertEquals(4096, MemoryPool.parseBytes("4096"));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> MemoryPool.parseBytes("lots"));
        assertTrue(e.getMessage().contains("'lots'"));
        assertEquals("1.50 MiB", MemoryPool.formatBytes(3L << 19));
        assertEquals("100 B", MemoryPool.formatBytes(100));
    }
}
