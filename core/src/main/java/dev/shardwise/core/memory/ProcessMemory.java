package dev.shardwise.core.memory;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Optional;

/**
 * The resident memory of this process as the operating system counts it: everything the JVM holds in RAM
 * (heap, off-heap tensors, code, thread stacks), beside which a {@link MemoryPool}'s accounting shows the
 * tensors' share. Read from {@code /proc/self/status} ({@code VmRSS} and its high-water mark {@code VmHWM});
 * Linux only, so {@link #current()} is empty elsewhere.
 *
 * @param residentBytes     resident set size now, in bytes ({@code VmRSS})
 * @param peakResidentBytes the most resident bytes this process has had so far ({@code VmHWM})
 */
public record ProcessMemory(long residentBytes, long peakResidentBytes) {
    private static final Path STATUS = Path.of("/proc/self/status");

    /** This process's resident memory now, or empty where {@code /proc/self/status} does not exist or lacks the fields. */
    public static Optional<ProcessMemory> current() {
        try {
            return Files.isReadable(STATUS) ? parse(Files.readString(STATUS)) : Optional.empty();
        } catch (IOException | RuntimeException e) {   // a /proc that cannot be read: report nothing rather than fail a run
            return Optional.empty();
        }
    }

    /** The resident memory of another process of this user, or empty if it has ended or there is no {@code /proc}. */
    public static Optional<ProcessMemory> of(long pid) {
        try {
            return parse(Files.readString(Path.of("/proc", Long.toString(pid), "status")));
        } catch (IOException | RuntimeException e) {   // ended meanwhile, or not Linux
            return Optional.empty();
        }
    }

    /** The {@code VmRSS} and {@code VmHWM} lines of a {@code /proc/<pid>/status} text (values in kB), or empty if either is absent. */
    static Optional<ProcessMemory> parse(String status) {
        long rss = -1, hwm = -1;
        for (String line : status.split("\n")) {
            if (line.startsWith("VmRSS:")) rss = kilobytes(line);
            else if (line.startsWith("VmHWM:")) hwm = kilobytes(line);
        }
        return rss < 0 || hwm < 0 ? Optional.empty() : Optional.of(new ProcessMemory(rss, Math.max(rss, hwm)));
    }

    /** {@code VmRSS:\t  123456 kB} -> 123456 · 1024, or -1 if the line is not in that form. */
    private static long kilobytes(String line) {
        String[] words = line.substring(line.indexOf(':') + 1).trim().split("\\s+");
        if (words.length != 2 || !words[1].equals("kB")) return -1;
        try {
            return Long.parseLong(words[0]) * 1024;
        } catch (NumberFormatException e) {
            return -1;
        }
    }
}
