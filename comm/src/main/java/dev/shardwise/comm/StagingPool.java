package dev.shardwise.comm;

import dev.shardwise.core.memory.HugePageMemory;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Reusable staging segments for the messages one sender sends one receiver of a {@link LocalGroup} before the
 * receive is posted: the eager send copies the message into a segment {@linkplain #acquire taken} from here and
 * the receive {@linkplain #release gives it back} once it has copied it out. Segments come in size classes (a
 * message of n bytes takes the smallest class &gt;= n: 64 bytes, then four classes per power of two, so at most a
 * quarter of a segment goes unused), and each class keeps its segments in one shared arena of its own, so taking
 * and giving back a segment allocates nothing and closes nothing.
 *
 * <p>Bound: the pool retains at most {@code boundBytes} ({@value #DEFAULT_BOUND_BYTES} bytes = 64 MiB per
 * sender-receiver pair; only tests set another, through {@link LocalCluster}'s package-private {@code run}),
 * counting free segments and segments holding undelivered messages alike. A segment the pool cannot add within the
 * bound first evicts size classes whose segments are all free, least recently used first (closing each evicted
 * class's arena); if that cannot make room, the message gets a one-off shared arena of its own, which the receive
 * closes. That is what every staged message cost before this pool: closing a shared arena is a JVM-wide handshake,
 * which made a late 16 KiB receive take 0.05-0.3 ms median and up to tens of ms on a loaded 2-core machine (2 us
 * median from the pool). So a sender that runs far ahead of its receiver never blocks and never grows the pool
 * past the bound; only the messages beyond it are slow to receive.
 *
 * <p>Memory: the pool's segments are held by the group, not charged to any rank's {@code MemoryPool}. Per size
 * class the pool keeps as many segments as messages of that class were ever staged at once (within the bound),
 * until an eviction or {@link #close} frees them; the group closes its pools when its last communicator closes.
 * One-off arenas are not the pool's: their leases own them.
 *
 * <p>Not thread-safe: the sender and the receiver call it holding the lock of the mailbox that owns it.
 */
final class StagingPool {
    /** Bytes one sender-receiver pair's pool may retain unless the job says otherwise: 64 MiB. */
    static final long DEFAULT_BOUND_BYTES = 64L << 20;
    /** Smallest size class and the alignment of every segment, in bytes (a cache line). */
    static final long MIN_CLASS_BYTES = 64;

    /**
     * A segment lent to one staged message: {@code segment} holds at least the message's bytes; a pooled lease
     * names its size class, a one-off lease owns its {@code arena} instead.
     */
    record Lease(MemorySegment segment, SizeClass home, Arena oneOff) {
        boolean pooled() { return home != null; }
    }

    /**
     * What the pool has done so far, for tests and diagnostics: segments added to the pool, takes served from it,
     * one-off arenas made beyond the bound, size classes evicted, and bytes retained now.
     */
    record Stats(long pooledAllocations, long reuses, long oneOffAllocations, long evictedClasses, long retainedBytes) { }

    /** One size class: its arena and the segments allocated in it; {@code free} are not lent out. */
    static final class SizeClass {
        final long bytes;
        final Arena arena = Arena.ofShared();
        final ArrayDeque<MemorySegment> free = new ArrayDeque<>();
        int segments;

        SizeClass(long bytes) {
            this.bytes = bytes;
        }

        boolean idle() { return free.size() == segments; }
    }

    private final long boundBytes;
    /** By class bytes, least recently taken first (access order). */
    private final LinkedHashMap<Long, SizeClass> classes = new LinkedHashMap<>(8, 0.75f, true);
    /** Arenas of evicted classes, for the caller to close once it has dropped the mailbox's lock. */
    private final List<Arena> evicted = new ArrayList<>();
    private long retainedBytes;
    private long pooledAllocations, reuses, oneOffAllocations, evictedClasses;
    private boolean closed;

    /** @throws IllegalArgumentException if {@code boundBytes < 0} */
    StagingPool(long boundBytes) {
        if (boundBytes < 0) throw new IllegalArgumentException("staging pool bound must be >= 0 bytes, got " + boundBytes);
        this.boundBytes = boundBytes;
    }

    /** The size class of an n-byte message: 64, then multiples of a quarter of the power of two below n. */
    static long sizeClass(long bytes) {
        if (bytes <= MIN_CLASS_BYTES) return MIN_CLASS_BYTES;
        long step = Long.highestOneBit(bytes - 1) >> 2;
        return (bytes + step - 1) / step * step;
    }

    /**
     * A segment of at least {@code bytes} bytes for one staged message; never blocks. Call holding the mailbox's
     * lock, then {@link #takeEvicted} before dropping it.
     *
     * @throws IllegalStateException if the pool is closed (its group was closed)
     */
    Lease acquire(long bytes) {
        if (closed) throw new IllegalStateException("staging pool is closed: the group was closed, so nothing can be sent on it");
        long size = sizeClass(bytes);
        SizeClass home = classes.get(size);   // marks the class most recently used
        if (home != null && !home.free.isEmpty()) {
            reuses++;
            return new Lease(home.free.pop(), home, null);
        }
        if (retainedBytes + size > boundBytes) evictIdle(size, retainedBytes + size - boundBytes);
        if (retainedBytes + size <= boundBytes) {
            if (home == null) {
                home = new SizeClass(size);
                classes.put(size, home);
            }
            Arena arena = home.arena;
            MemorySegment segment = HugePageMemory.allocate(arena, size).orElseGet(() -> arena.allocate(size, MIN_CLASS_BYTES));
            home.segments++;
            retainedBytes += size;
            pooledAllocations++;
            return new Lease(segment, home, null);
        }
        oneOffAllocations++;
        Arena arena = Arena.ofShared();   // huge pages for a large one: a fresh 150 MB in 4 KiB pages faults in for ~0.75 s here
        MemorySegment segment = HugePageMemory.allocate(arena, bytes).orElseGet(() -> arena.allocate(Math.max(1, bytes), MIN_CLASS_BYTES));
        return new Lease(segment, null, arena);
    }

    /**
     * Evicts idle classes other than {@code keep}, least recently used first, until {@code needed} bytes are free;
     * evicts nothing if all idle classes together are not enough.
     */
    private void evictIdle(long keep, long needed) {
        long idle = 0;
        for (SizeClass c : classes.values()) {
            if (c.bytes != keep && c.idle()) idle += c.bytes * c.segments;
        }
        if (idle < needed) return;
        for (Iterator<Map.Entry<Long, SizeClass>> it = classes.entrySet().iterator(); it.hasNext() && needed > 0; ) {
            SizeClass c = it.next().getValue();
            if (c.bytes == keep || !c.idle()) continue;
            it.remove();
            long bytes = c.bytes * c.segments;
            retainedBytes -= bytes;
            needed -= bytes;
            evictedClasses++;
            evicted.add(c.arena);
        }
    }

    /**
     * Arenas that {@link #acquire} evicted, to be closed by the caller after dropping the mailbox's lock (closing a
     * shared arena waits on every thread of the JVM); empty if none.
     */
    List<Arena> takeEvicted() {
        if (evicted.isEmpty()) return List.of();
        List<Arena> out = List.copyOf(evicted);
        evicted.clear();
        return out;
    }

    /**
     * Takes back a pooled lease whose message has been copied out; the segment may be lent again at once. Does
     * nothing once the pool is closed (the segment is freed already). Call holding the mailbox's lock; a one-off
     * lease is not the pool's, its holder closes its arena.
     *
     * @throws IllegalArgumentException if {@code lease} is one-off
     */
    void release(Lease lease) {
        if (!lease.pooled()) throw new IllegalArgumentException("a one-off staging lease is closed by its holder, not given back");
        if (closed) return;
        lease.home().free.push(lease.segment());
    }

    /** Frees every segment of the pool, lent or not; later takes throw. Idempotent. */
    void close() {
        if (closed) return;
        closed = true;
        for (SizeClass c : classes.values()) c.arena.close();
        for (Arena a : evicted) a.close();
        classes.clear();
        evicted.clear();
        retainedBytes = 0;
    }

    boolean closed() { return closed; }

    Stats stats() {
        return new Stats(pooledAllocations, reuses, oneOffAllocations, evictedClasses, retainedBytes);
    }
}
