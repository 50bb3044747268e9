package dev.shardwise.comm;

import dev.shardwise.comm.mpi.Mpi;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import java.io.File;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * The conformance suite on the {@code mpi} backend with 2 and 4 processes: launches {@code mpirun} on
 * {@link MpiConformanceMain} (this test's classpath) and checks that every process passed; and a process that
 * fails ends the job at once ({@link MpiFailFastMain}). Skipped, naming the packages to install, where Open MPI
 * is missing ({@code scripts/ensure-openmpi.sh} installs it).
 */
class MpiConformanceTest {
    /** Generous: the suite takes ~10-20 s with 4 JVMs on 2 cores. */
    private static final long LIMIT_SECONDS = 180;

    @ParameterizedTest(name = "{0} processes")
    @ValueSource(ints = {2, 4})
    void conformanceSuitePassesUnderMpirun(int processes) throws Exception {
        Result r = mpirun(processes, MpiConformanceMain.class);
        assertEquals(0, r.exitCode(), "mpirun -np " + processes + " failed; output:\n" + r.output());
        long passed = r.output().lines().filter(l -> l.startsWith("mpi conformance world rank") && l.contains(" 0 failed")).count();
        assertTrue(passed == processes, "expected " + processes + " passing processes; output:\n" + r.output());
        System.out.println(r.output().lines().filter(l -> l.startsWith("mpi conformance")).reduce((a, b) -> a + "\n" + b).orElse(""));
    }

    /**
     * The peer-failure case across processes: rank 1 reports a failure and exits with 3 while rank 0 waits in an
     * allReduce with a 120 s timeout; the job must end long before that, non-zero.
     */
    @Test
    void aProcessThatFailsEndsTheJobWithoutWaitingForTheTimeout() throws Exception {
        long start = System.nanoTime();
        Result r = mpirun(2, MpiFailFastMain.class);
        double seconds = (System.nanoTime() - start) / 1e9;
        assertNotEquals(0, r.exitCode(), "mpirun exit code with a failed rank; output:\n" + r.output());
        assertTrue(r.output().contains("rank 1 failed on purpose"), "rank 1's failure is reported; output:\n" + r.output());
        assertTrue(seconds < 60, "the job took " + seconds + " s to end (rank 0's timeout is 120 s); output:\n" + r.output());
    }

    private record Result(int exitCode, String output) { }

    /** Runs {@code main} of the test classpath under {@code mpirun -np processes}; skips where Open MPI is missing. */
    private static Result mpirun(int processes, Class<?> main) throws IOException, InterruptedException {
        Path mpirun = findOnPath("mpirun");
        assumeTrue(mpirun != null, "mpirun not found: install openmpi-bin libopenmpi-dev (scripts/ensure-openmpi.sh)");
        assumeTrue(Mpi.isAvailable(), Mpi.unavailableReason());
        List<String> command = new ArrayList<>(List.of(mpirun.toString(), "--allow-run-as-root", "--oversubscribe",
                "-np", Integer.toString(processes),
                "--mca", "mpi_yield_when_idle", "1",          // idle processes yield (more processes than cores)
                "--mca", "odls_base_sigkill_timeout", "0",    // a failed job ends in ms, not ~1.4 s
                Path.of(System.getProperty("java.home"), "bin", "java").toString(),
                "--add-modules", "jdk.incubator.vector", "--enable-native-access=ALL-UNNAMED", "-Xss4m", "-Xmx1g",
                "-XX:+UseSerialGC", "-cp", System.getProperty("surefire.test.class.path", System.getProperty("java.class.path")),
                main.getName()));
        Path log = Files.createTempFile("shardwise-mpi-test-", ".log");
        try {
            Process p = new ProcessBuilder(command).redirectErrorStream(true).redirectOutput(log.toFile()).start();
            if (!p.waitFor(LIMIT_SECONDS, TimeUnit.SECONDS)) {
                p.descendants().forEach(ProcessHandle::destroyForcibly);
                p.destroyForcibly();
                fail("mpirun -np " + processes + " " + main.getSimpleName() + " did not finish in " + LIMIT_SECONDS
                        + " s; output:\n" + read(log));
            }
            return new Result(p.exitValue(), read(log));
        } finally {
            Files.deleteIfExists(log);
        }
    }

    private static String read(Path log) throws IOException {
        return Files.readString(log, StandardCharsets.UTF_8);
    }

    private static Path findOnPath(String program) {
        for (String dir : System.getenv().getOrDefault("PATH", "").split(File.pathSeparator)) {
            Path p = Path.of(dir, program);
            if (Files.isExecutable(p)) return p;
        }
        return null;
    }
}
