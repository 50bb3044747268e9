package dev.shardwise.comm;

import org.junit.jupiter.api.Test;

import java.lang.foreign.Arena;
import java.util.ArrayList;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * {@link StagingPool} alone: size classes, reuse, the bound with its one-off fallback, eviction of idle classes,
 * and close (the local communicator's use of it is checked in {@code LocalStagingTest}).
 */
class StagingPoolTest {

    @Test
    void sizeClassesHoldTheMessageAndWasteAtMostAQuarter() {
        assertEquals(64, StagingPool.sizeClass(0));
        assertEquals(64, StagingPool.sizeClass(64));
        assertEquals(80, StagingPool.sizeClass(65));
        assertEquals(16384, StagingPool.sizeClass(16384), "64x64 f32, the bench's message, is a class of its own");
        assertEquals(20480, StagingPool.sizeClass(16385));
        int checked = 0;
        for (long bytes = 65; bytes < 1L << 34; bytes = bytes * 9 / 8 + 1) {
            long c = StagingPool.sizeClass(bytes);
            assertTrue(c >= bytes && c - bytes <= (bytes - 1) / 4, "class " + c + " for " + bytes + " bytes");
            assertEquals(c, StagingPool.sizeClass(c), "a class is its own class: " + c);
            checked++;
        }
        assertTrue(checked > 100, "sizes checked: " + checked);
    }

    @Test
    void aGivenBackSegmentIsLentAgainWithoutAllocating() {
        StagingPool pool = new StagingPool(1 << 20);
        try {
            StagingPool.Lease first = pool.acquire(4000);
            assertTrue(first.pooled() && first.segment().byteSize() == 4096, "4000 bytes take the 4096-byte class");
            pool.release(first);
            for (int k = 0; k < 100; k++) {
                StagingPool.Lease again = pool.acquire(4000 + k % 3);
                assertEquals(first.segment().address(), again.segment().address(), "take " + k + " reuses the segment");
                pool.release(again);
            }
            assertEquals(new StagingPool.Stats(1, 100, 0, 0, 4096), pool.stats());
        } finally {
            pool.close();
        }
    }

    @Test
    void beyondTheBoundMessagesGetOneOffArenasAndThePoolStopsGrowing() {
        StagingPool pool = new StagingPool(4 * 4096);
        List<StagingPool.Lease> held = new ArrayList<>();
        for (int k = 0; k < 10; k++) held.add(pool.acquire(4096));
        assertEquals(new StagingPool.Stats(4, 0, 6, 0, 4 * 4096), pool.stats(), "4 pooled within 16 KiB, 6 one-off");
        for (int k = 0; k < 10; k++) {
            StagingPool.Lease l = held.get(k);
            assertEquals(k < 4, l.pooled(), "lease " + k);
            assertTrue(l.segment().byteSize() >= 4096, "lease " + k + " holds the message");
            if (l.pooled()) pool.release(l);
            else l.oneOff().close();
        }
        for (int k = 0; k < 4; k++) assertTrue(pool.acquire(4096).pooled(), "after the receives the pool serves take " + k);
        assertEquals(4 * 4096, pool.stats().retainedBytes());
        pool.close();
    }

    @Test
    void idleClassesAreEvictedLeastRecentlyUsedFirstToMakeRoom() {
        StagingPool pool = new StagingPool(8192);
        StagingPool.Lease a = pool.acquire(4096), b = pool.acquire(2048);
        pool.release(a);
        pool.release(b);
        StagingPool.Lease c = pool.acquire(5000);   // class 5120: 6144 + 5120 > 8192, so 3072 bytes must go
        assertTrue(c.pooled(), "room was made for the new class");
        List<Arena> evicted = pool.takeEvicted();
        assertEquals(1, evicted.size(), "the 4096-byte class (taken least recently) is enough");
        assertEquals(new StagingPool.Stats(3, 0, 0, 1, 2048 + 5120), pool.stats());
        evicted.forEach(Arena::close);
        assertFalse(a.segment().scope().isAlive(), "the evicted class's segment is freed once its arena closes");
        assertTrue(b.segment().scope().isAlive(), "the 2048-byte class stays");
        assertTrue(pool.takeEvicted().isEmpty(), "evicted arenas are handed out once");
        pool.close();
    }

    @Test
    void aClassWithALentSegmentIsNeverEvicted() {
        StagingPool pool = new StagingPool(8192);
        StagingPool.Lease a = pool.acquire(4096);
        StagingPool.Lease c = pool.acquire(5000);
        assertFalse(c.pooled(), "the only other class is lent out, so the message goes one-off");
        assertNotNull(c.oneOff());
        assertTrue(pool.takeEvicted().isEmpty());
        assertTrue(a.segment().scope().isAlive());
        c.oneOff().close();
        pool.close();
    }

    @Test
    void closeFreesFreeAndLentSegmentsAndRefusesLaterTakes() {
        StagingPool pool = new StagingPool(1 << 20);
        StagingPool.Lease lent = pool.acquire(100), given = pool.acquire(100_000);
        pool.release(given);
        pool.close();
        assertFalse(lent.segment().scope().isAlive(), "a lent segment is freed with the pool");
        assertFalse(given.segment().scope().isAlive(), "a free segment is freed with the pool");
        assertEquals(0, pool.stats().retainedBytes());
        assertTrue(pool.closed());
        pool.release(lent);   // a late give-back is ignored
        pool.close();         // idempotent
        IllegalStateException e = assertThrows(IllegalStateException.class, () -> pool.acquire(100));
        assertTrue(e.getMessage().contains("closed"), e.getMessage());
        assertNull(lent.oneOff());
    }

    @Test
    void rejectsANegativeBound() {
        assertThrows(IllegalArgumentException.class, () -> new StagingPool(-1));
    }
}
