package dev.shardwise.comm;

import dev.shardwise.comm.mpi.Mpi;
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
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * The conformance suite on the {@code mpi} backend with 2 and 4 processes: launches {@code mpirun} on
 * {@link MpiConformanceMain} (this test's classpath) and checks that every process passed. Skipped, naming the
 * packages to install, where Open MPI is missing ({@code scripts/ensure-openmpi.sh} installs it).
 */
class MpiConformanceTest {
    /** Generous: the suite takes ~10-20 s with 4 JVMs on 2 cores. */
    private static final long LIMIT_SECONDS = 180;

    @ParameterizedTest(name = "{0} processes")
    @ValueSource(ints = {2, 4})
    void conformanceSuitePassesUnderMpirun(int processes) throws Exception {
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
                MpiConformanceMain.class.getName()));
        Path log = Files.createTempFile("shardwise-mpi-conformance-", ".log");
        try {
            Process p = new ProcessBuilder(command).redirectErrorStream(true).redirectOutput(log.toFile()).start();
            if (!p.waitFor(LIMIT_SECONDS, TimeUnit.SECONDS)) {
                p.descendants().forEach(ProcessHandle::destroyForcibly);
                p.destroyForcibly();
                fail("mpirun -np " + processes + " did not finish in " + LIMIT_SECONDS + " s; output:\n" + read(log));
            }
            String output = read(log);
            assertEquals(0, p.exitValue(), "mpirun -np " + processes + " failed; output:\n" + output);
            long passed = output.lines().filter(l -> l.startsWith("mpi conformance world rank") && l.contains(" 0 failed")).count();
            assertTrue(passed == processes, "expected " + processes + " passing processes; output:\n" + output);
            System.out.println(output.lines().filter(l -> l.startsWith("mpi conformance")).reduce((a, b) -> a + "\n" + b).orElse(""));
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
