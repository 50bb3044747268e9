package dev.shardwise.cli.bench;

import dev.shardwise.cli.JobCommands;

import java.io.IOException;
import java.io.InputStream;
import java.lang.management.ManagementFactory;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.TimeUnit;

/**
 * What {@code bench collectives --backend mpi} does outside mpirun: builds the C peer
 * ({@code mpi_collectives_peer.c}, compiled with {@code mpicc} into a shared library in a temporary directory,
 * when mpicc exists), then starts this same command under {@code mpirun -np N} (same JVM, flags and classpath),
 * whose processes call the peer beside the Java backend and whose rank 0 prints the rows.
 */
final class MpiBenchLauncher {
    private MpiBenchLauncher() { }

    /** Longest a C peer or Java run under mpirun may take. */
    private static final long LIMIT_MINUTES = 20;

    /**
     * Whether waiting processes should yield the core ({@code mpi_yield_when_idle}, which the Java backend follows
     * too): when the processes and the machine's current load (1-minute load average) need more cores than there
     * are, spinning would steal the core of the very peer being waited for, and timings would measure the scheduler.
     */
    static boolean yieldWhenIdle(int nproc) {
        double load = ManagementFactory.getOperatingSystemMXBean().getSystemLoadAverage();
        return nproc + Math.max(0, load) > Runtime.getRuntime().availableProcessors();
    }

    static Path onPath(String program) {
        return JobCommands.onPath(program, System.getenv("PATH"));
    }

    /**
     * Compiles the C peer into {@code dir} as a shared library ({@code mpicc -O3 -march=native -shared -fPIC});
     * returns it, or null after printing why there is no C peer (no mpicc, or it failed).
     */
    static Path buildCPeer(Path dir, BenchOutput out) throws IOException, InterruptedException {
        Path mpicc = onPath("mpicc");
        if (mpicc == null) {
            out.info("no C peer: mpicc not found (install libopenmpi-dev); mpi rows compare with a copy only");
            return null;
        }
        Path source = dir.resolve("mpi_collectives_peer.c"), binary = dir.resolve("libshardwise_mpi_peer.so");
        try (InputStream in = MpiBenchLauncher.class.getResourceAsStream("mpi_collectives_peer.c")) {
            if (in == null) throw new IllegalStateException("mpi_collectives_peer.c is missing from the shardwise jar; rebuild it");
            Files.copy(in, source);
        }
        Path log = dir.resolve("build.log");
        int rc = run(List.of(mpicc.toString(), "-O3", "-march=native", "-shared", "-fPIC", "-o", binary.toString(), source.toString()), log);
        if (rc != 0) {
            out.info("no C peer: mpicc failed (" + rc + "): " + Files.readString(log).strip());
            return null;
        }
        return binary;
    }

    /** Runs this command again under mpirun with {@code args}, its output going to ours; returns its exit code. */
    static int relaunch(Path mpirun, int nproc, List<String> args) throws IOException, InterruptedException {
        List<String> cmd = JobCommands.mpirun(mpirun, nproc, yieldWhenIdle(nproc));
        cmd.addAll(JobCommands.thisJvm(List.of("bench", "collectives")));
        cmd.addAll(args);
        Process p = new ProcessBuilder(cmd).inheritIO().start();
        if (!p.waitFor(LIMIT_MINUTES, TimeUnit.MINUTES)) {
            p.descendants().forEach(ProcessHandle::destroyForcibly);
            p.destroyForcibly();
            throw new IllegalStateException("bench collectives under mpirun -np " + nproc + " ran longer than " + LIMIT_MINUTES + " min");
        }
        return p.exitValue();
    }

    private static int run(List<String> cmd, Path output) throws IOException, InterruptedException {
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).redirectOutput(output.toFile()).start();
        if (!p.waitFor(LIMIT_MINUTES, TimeUnit.MINUTES)) {
            p.descendants().forEach(ProcessHandle::destroyForcibly);
            p.destroyForcibly();
            throw new IllegalStateException(String.join(" ", cmd) + " ran longer than " + LIMIT_MINUTES + " min");
        }
        return p.exitValue();
    }

    /** Deletes the C peer's temporary directory and what is in it (one level: source, library, build log). */
    static void deleteDirectory(Path dir) throws IOException {
        try (var files = Files.list(dir)) {
            for (Path f : files.toList()) Files.deleteIfExists(f);
        }
        Files.deleteIfExists(dir);
    }
}
