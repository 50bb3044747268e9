package dev.shardwise.core.memory;

import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.SymbolLookup;
import java.lang.foreign.ValueLayout;
import java.lang.invoke.MethodHandle;
import java.util.Locale;
import java.util.Optional;

/**
 * Large allocations backed by Linux transparent huge pages: anonymous {@code mmap} at a 2 MiB boundary, marked
 * {@code madvise(MADV_HUGEPAGE)}, unmapped when its arena closes. A fresh buffer's first touch then faults once per
 * 2 MiB instead of once per 4 KiB page; on virtual machines, where a 4 KiB fault can cost some 20 µs, that is what
 * a buffer allocated afresh each micro-batch (ZeRO 3's gathered units, a 150 MB embedding among them) costs most.
 * The pages come zeroed from the kernel, so nothing is written at allocation. PyTorch's CPU allocator offers the
 * same for large tensors (THP_MEM_ALLOC_ENABLE).
 *
 * <p>{@link MemoryPool} allocates through it, and so do the local backend's staging buffers for messages (a pipeline's
 * tied-embedding gradient is one 150 MB message a step). Only on Linux and from {@link #THRESHOLD} bytes up; {@link #allocate} answers empty when it does not apply or
 * the kernel refuses the mapping, and the caller allocates ordinary memory. Without transparent huge pages (the
 * kernel's setting {@code never}) the mapping still works with 4 KiB pages. {@code -Dshardwise.hugePages=false} (e.g. in
 * {@code SHARDWISE_JAVA_OPTS}) turns it off.
 */
public final class HugePageMemory {
    /** Allocations from this size up are mapped: one huge page. */
    static final long THRESHOLD = 2L << 20;
    private static final long HUGE_PAGE = 2L << 20;
    private static final int PROT_READ_WRITE = 0x1 | 0x2;
    private static final int MAP_PRIVATE_ANONYMOUS = 0x02 | 0x20;
    private static final int MADV_HUGEPAGE = 14;
    private static final long MAP_FAILED = -1;

    private static final Native NATIVE = Native.load();

    private HugePageMemory() { }

    /** Whether this platform maps large allocations on huge pages. */
    static boolean available() {
        return NATIVE != null;
    }

    /**
     * {@code bytes} zeroed bytes at a 2 MiB boundary whose lifetime is {@code arena} (closing it unmaps them), or
     * empty when {@code bytes} is below {@link #THRESHOLD}, the platform is not Linux, or the mapping failed.
     */
    public static Optional<MemorySegment> allocate(Arena arena, long bytes) {
        if (NATIVE == null || bytes < THRESHOLD) return Optional.empty();
        long length = roundUp(bytes, 4096);
        try {
            // map one huge page more than asked, keep the 2 MiB-aligned run inside it, give the rest back
            long span = length + HUGE_PAGE;
            long base = ((MemorySegment) NATIVE.mmap.invokeExact(MemorySegment.NULL, span, PROT_READ_WRITE, MAP_PRIVATE_ANONYMOUS,
                    -1, 0L)).address();
            if (base == MAP_FAILED || base == 0) return Optional.empty();
            long start = roundUp(base, HUGE_PAGE);
            if (start > base) unmap(base, start - base);
            long end = start + length;
            if (base + span > end) unmap(end, base + span - end);
            int ignored = (int) NATIVE.madvise.invokeExact(MemorySegment.ofAddress(start), length, MADV_HUGEPAGE);   // a hint
            return Optional.of(MemorySegment.ofAddress(start).reinterpret(length, arena, s -> unmap(start, length)).asSlice(0, bytes));
        } catch (Throwable e) {
            throw new IllegalStateException("mapping " + bytes + " bytes of huge-page memory failed: " + e, e);
        }
    }

    private static void unmap(long address, long length) {
        try {
            int ignored = (int) NATIVE.munmap.invokeExact(MemorySegment.ofAddress(address), length);
        } catch (Throwable e) {
            throw new IllegalStateException("munmap of " + length + " bytes failed: " + e, e);
        }
    }

    private static long roundUp(long value, long multiple) {
        return (value + multiple - 1) / multiple * multiple;
    }

    /** libc's mmap, madvise and munmap, or null off Linux. */
    private record Native(MethodHandle mmap, MethodHandle madvise, MethodHandle munmap) {
        static Native load() {
            if (!System.getProperty("os.name", "").toLowerCase(Locale.ROOT).contains("linux")) return null;
            if (!Boolean.parseBoolean(System.getProperty("shardwise.hugePages", "true"))) return null;   // -Dshardwise.hugePages=false
            try {
                Linker linker = Linker.nativeLinker();
                SymbolLookup libc = linker.defaultLookup();
                MethodHandle mmap = linker.downcallHandle(libc.find("mmap").orElseThrow(), FunctionDescriptor.of(ValueLayout.ADDRESS,
                        ValueLayout.ADDRESS, ValueLayout.JAVA_LONG, ValueLayout.JAVA_INT, ValueLayout.JAVA_INT, ValueLayout.JAVA_INT,
                        ValueLayout.JAVA_LONG));
                MethodHandle madvise = linker.downcallHandle(libc.find("madvise").orElseThrow(), FunctionDescriptor.of(ValueLayout.JAVA_INT,
                        ValueLayout.ADDRESS, ValueLayout.JAVA_LONG, ValueLayout.JAVA_INT));
                MethodHandle munmap = linker.downcallHandle(libc.find("munmap").orElseThrow(), FunctionDescriptor.of(ValueLayout.JAVA_INT,
                        ValueLayout.ADDRESS, ValueLayout.JAVA_LONG));
                return new Native(mmap, madvise, munmap);
            } catch (RuntimeException | LinkageError e) {
                return null;   // no native access or no libc symbols: ordinary allocations only
            }
        }
    }
}
