package dev.shardwise.core.memory;

import org.junit.jupiter.api.Test;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Optional;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/** {@link ProcessMemory} reads VmRSS and VmHWM, and follows memory this process touches. */
class ProcessMemoryTest {

    @Test
    void parsesVmRssAndVmHwmInKilobytes() {
        String status = "Name:\tjava\nVmPeak:\t 9000000 kB\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\nThreads:\t12\n";
        assertEquals(Optional.of(new ProcessMemory(100L << 20, 200L << 20)), ProcessMemory.parse(status));
    }

    @Test
    void missingOrMalformedFieldsGiveNothing() {
        assertEquals(Optional.empty(), ProcessMemory.parse("Name:\tjava\nVmRSS:\t 100 kB\n"), "no VmHWM");
        assertEquals(Optional.empty(), ProcessMemory.parse("VmRSS:\t lots\nVmHWM:\t 100 kB\n"), "VmRSS not a number");
        assertEquals(Optional.empty(), ProcessMemory.parse(""), "empty text");
    }

    @Test
    void residentMemoryGrowsWhenThisProcessTouchesMemory() {
        assumeTrue(Files.isReadable(Path.of("/proc/self/status")), "Linux only: no /proc/self/status here");
        long before = ProcessMemory.current().orElseThrow().residentBytes();
        long bytes = 256L << 20;
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment s = arena.allocate(bytes, 4096);
            for (long i = 0; i < bytes; i += 4096) s.set(java.lang.foreign.ValueLayout.JAVA_BYTE, i, (byte) 1);
            ProcessMemory during = ProcessMemory.current().orElseThrow();
            assertTrue(during.residentBytes() >= before + bytes / 2,
                    "resident bytes should grow by about 256 MiB after touching it: before " + before + ", during " + during);
            assertTrue(during.peakResidentBytes() >= during.residentBytes(), "peak below current: " + during);
            ProcessMemory byPid = ProcessMemory.of(ProcessHandle.current().pid()).orElseThrow();
            assertTrue(byPid.residentBytes() >= before + bytes / 2, "read by pid: " + byPid);
        }
    }
}
