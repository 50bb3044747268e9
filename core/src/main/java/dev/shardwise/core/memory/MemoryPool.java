package dev.shardwise.core.memory;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.EnumMap;
import java.util.Locale;
import java.util.Map;
import java.util.StringJoiner;

/**
 * One rank's off-heap memory: every allocation is charged to a {@link MemoryCategory}, and live and peak
 * bytes are tracked per category and in total, so the savings of ZeRO, tensor/pipeline parallelism and
 * recompute are measured rather than assumed (ARCHITECTURE idea 6).
 *
 * <p>An allocation that would take live bytes past the budget fails with
 * {@link MemoryBudgetExceededException}, naming the rank, the category and the sizes; nothing is allocated
 * then. Memory is 64-byte aligned and zero-filled; from 2 MiB up it is mapped on transparent huge pages
 * ({@link HugePageMemory}). Each {@link Allocation} is freed exactly once by its owner
 * (normally through {@code Tensor.close()}); the pool itself holds no memory.
 *
 * <p>Thread-safe: kernel worker threads of the owning rank may allocate and free concurrently.
 */
public final class MemoryPool {
    /** Budget meaning "no limit". */
    public static final long UNLIMITED = Long.MAX_VALUE;
    /** Alignment of every allocation, in bytes: one cache line and one AVX-512 vector. */
    public static final long ALIGNMENT = 64;

    private final String rankName;
    private final long budgetBytes;
    private final long[] liveBytes = new long[MemoryCategory.values().length];
    private final long[] peakBytes = new long[MemoryCategory.values().length];
    private long liveTotal;
    private long peakTotal;

    /**
     * @param rankName    how errors and reports name this rank, e.g. {@code "rank 3"}
     * @param budgetBytes the most live bytes this rank may hold, or {@link #UNLIMITED}
     * @throws IllegalArgumentException if {@code budgetBytes <= 0}
     */
    public MemoryPool(String rankName, long budgetBytes) {
        if (budgetBytes <= 0) {
            throw new IllegalArgumentException(rankName + ": memory budget must be positive, got " + budgetBytes);
        }
        this.rankName = rankName;
        this.budgetBytes = budgetBytes;
    }

    /** A pool with no budget, for tools and tests. */
    public static MemoryPool unlimited(String rankName) {
        return new MemoryPool(rankName, UNLIMITED);
    }

    /**
     * Allocates {@code bytes} zeroed, aligned bytes charged to {@code category}.
     *
     * @throws MemoryBudgetExceededException if the budget would be exceeded
     * @throws IllegalArgumentException      if {@code bytes < 0}
     */
    public Allocation allocate(MemoryCategory category, long bytes) {
        if (bytes < 0) {
            throw new IllegalArgumentException(rankName + ": negative allocation of " + bytes + " bytes");
        }
        reserve(category, bytes);
        Arena arena = null;
        try {
            Arena owner = arena = Arena.ofShared();
            MemorySegment segment = HugePageMemory.allocate(owner, bytes)
                    .orElseGet(() -> owner.allocate(Math.max(bytes, 1), ALIGNMENT).asSlice(0, bytes));
            return new Allocation(this, category, bytes, owner, segment);
        } catch (OutOfMemoryError | RuntimeException e) {
            if (arena != null) arena.close();
            release(category, bytes);
            throw e;
        }
    }

    private synchronized void reserve(MemoryCategory category, long bytes) {
        if (bytes > budgetBytes - liveTotal) {
            throw new MemoryBudgetExceededException(rankName, category, bytes, liveTotal, budgetBytes, breakdown());
        }
        int c = category.ordinal();
        liveBytes[c] += bytes;
        peakBytes[c] = Math.max(peakBytes[c], liveBytes[c]);
        liveTotal += bytes;
        peakTotal = Math.max(peakTotal, liveTotal);
    }

    synchronized void release(MemoryCategory category, long bytes) {
        liveBytes[category.ordinal()] -= bytes;
        liveTotal -= bytes;
    }

    public String rankName() { return rankName; }
    public long budgetBytes() { return budgetBytes; }
    public synchronized long liveBytes() { return liveTotal; }
    public synchronized long peakBytes() { return peakTotal; }
    public synchronized long liveBytes(MemoryCategory category) { return liveBytes[category.ordinal()]; }
    public synchronized long peakBytes(MemoryCategory category) { return peakBytes[category.ordinal()]; }

    /** Forgets past peaks: each peak becomes the current live value (e.g. at the start of a step). */
    public synchronized void resetPeaks() {
        System.arraycopy(liveBytes, 0, peakBytes, 0, liveBytes.length);
        peakTotal = liveTotal;
    }

    /** Live bytes by category, in declaration order. */
    public synchronized Map<MemoryCategory, Long> liveByCategory() {
        Map<MemoryCategory, Long> out = new EnumMap<>(MemoryCategory.class);
        for (MemoryCategory c : MemoryCategory.values()) out.put(c, liveBytes[c.ordinal()]);
        return out;
    }

    /** Peak bytes by category, in declaration order. */
    public synchronized Map<MemoryCategory, Long> peakByCategory() {
        Map<MemoryCategory, Long> out = new EnumMap<>(MemoryCategory.class);
        for (MemoryCategory c : MemoryCategory.values()) out.put(c, peakBytes[c.ordinal()]);
        return out;
    }

    private String breakdown() {
        StringJoiner joiner = new StringJoiner(", ");
        for (MemoryCategory c : MemoryCategory.values()) {
            joiner.add(c.label() + " " + formatBytes(liveBytes[c.ordinal()]));
        }
        return joiner.toString();
    }

    @Override
    public synchronized String toString() {
        return rankName + " memory: live " + formatBytes(liveTotal) + ", peak " + formatBytes(peakTotal)
                + (budgetBytes == UNLIMITED ? "" : ", budget " + formatBytes(budgetBytes))
                + " (" + breakdown() + ")";
    }

    /** Human-readable bytes with binary units: {@code 512 B}, {@code 1.50 MiB}. */
    public static String formatBytes(long bytes) {
        if (bytes == UNLIMITED) return "unlimited";
        if (Math.abs(bytes) < 1024) return bytes + " B";
        String[] units = {"KiB", "MiB", "GiB", "TiB", "PiB"};
        double value = bytes;
        int unit = -1;
        while (Math.abs(value) >= 1024 && unit < units.length - 1) {
            value /= 1024;
            unit++;
        }
        return String.format(Locale.ROOT, "%.2f %s", value, units[unit]);
    }

    /**
     * Parses a size such as {@code 512m}, {@code 8GiB}, {@code 1.5g} or {@code 4096} (bytes).
     *
     * @throws IllegalArgumentException naming the text if it is not a size
     */
    public static long parseBytes(String text) {
        String t = text.trim().toLowerCase(Locale.ROOT).replace("ib", "").replace("b", "");
        long multiplier = 1;
        if (!t.isEmpty()) {
            switch (t.charAt(t.length() - 1)) {
                case 'k' -> multiplier = 1L << 10;
                case 'm' -> multiplier = 1L << 20;
                case 'g' -> multiplier = 1L << 30;
                case 't' -> multiplier = 1L << 40;
                default -> { }
            }
            if (multiplier != 1) t = t.substring(0, t.length() - 1);
        }
        try {
            double value = Double.parseDouble(t);
            if (value <= 0 || Double.isNaN(value) || Double.isInfinite(value)) throw new NumberFormatException();
            return (long) (value * multiplier);
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException("'" + text + "' is not a memory size; write e.g. 512m, 8g or 8GiB");
        }
    }

    /**
     * Memory charged to a pool. Close exactly once to free it and return its bytes to the pool; closing
     * twice throws {@link IllegalStateException}. Its segment must not be used after close.
     */
    public static final class Allocation implements AutoCloseable {
        private final MemoryPool pool;
        private final MemoryCategory category;
        private final long bytes;
        private final Arena arena;
        private final MemorySegment segment;
        private boolean closed;

        private Allocation(MemoryPool pool, MemoryCategory category, long bytes, Arena arena, MemorySegment segment) {
            this.pool = pool;
            this.category = category;
            this.bytes = bytes;
            this.arena = arena;
            this.segment = segment;
        }

        public MemorySegment segment() { return segment; }
        public MemoryCategory category() { return category; }
        public long bytes() { return bytes; }
        public MemoryPool pool() { return pool; }

        @Override
        public synchronized void close() {
            if (closed) throw new IllegalStateException(pool.rankName + ": allocation of " + bytes + " bytes freed twice");
            closed = true;
            arena.close();
            pool.release(category, bytes);
        }
    }
}
