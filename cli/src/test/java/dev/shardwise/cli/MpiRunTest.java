package dev.shardwise.cli;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/** {@link MpiRun} names the rank that failed and leaves no process behind; the real-mpirun cases skip without Open MPI. */
class MpiRunTest {

    @Test
    void readsTheFailedRankFromMpirunsReports() {
        String exited = """
                mpirun detected that one or more processes exited with non-zero status, thus causing
                the job to be terminated. The first process to do so was:

                  Process name: [[30537,1],1]
                  Exit code:    3
                """;
        assertEquals(Optional.of(new MpiRun.Failure(1, 3, -1, "")), MpiRun.failure(exited));
        String signalled = "mpirun noticed that process rank 2 with PID 0 on node vm exited on signal 9 (Killed).";
        MpiRun.Failure f = MpiRun.failure(signalled).orElseThrow();
        assertEquals(2, f.rank());
        assertEquals("rank 2 was killed by signal 9 (Killed) on node vm", f.describe());
        assertEquals(Optional.empty(), MpiRun.failure("some other message"));
    }

    @Test
    void missingMpirunSaysWhatToInstall() {
        IllegalStateException e = assertThrows(IllegalStateException.class, () -> MpiRun.find("/nonexistent"));
        assertTrue(e.getMessage().contains("apt-get install openmpi-bin"), e.getMessage());
    }

    private static Optional<MpiRun> mpirun() {
        try {
            return Optional.of(MpiRun.find(System.getenv("PATH")));
        } catch (IllegalStateException e) {
            return Optional.empty();
        }
    }

    private static String state(ProcessHandle p) {
        try {
            return Files.readAllLines(Path.of("/proc/" + p.pid() + "/status")).stream().filter(l -> l.startsWith("State") || l.startsWith("PPid") || l.startsWith("Name")).toList().toString();
        } catch (IOException e) {
            return "(gone)";
        }
    }

    private static PrintStream into(ByteArrayOutputStream bytes) {
        return new PrintStream(bytes, true, StandardCharsets.UTF_8);
    }

    @Test
    void aRankExitingNonZeroIsNamedWithItsStatus() throws IOException {
        Optional<MpiRun> mpirun = mpirun();
        assumeTrue(mpirun.isPresent(), "mpirun not installed");
        ByteArrayOutputStream out = new ByteArrayOutputStream(), err = new ByteArrayOutputStream();
        MpiRun.Outcome outcome = mpirun.get().run(2, List.of(), Map.of("SHARDWISE_TEST", "x"), List.of("sh", "-c",
                "echo rank $OMPI_COMM_WORLD_RANK of $OMPI_COMM_WORLD_SIZE $SHARDWISE_TEST; "
                        + "if [ $OMPI_COMM_WORLD_RANK = 1 ]; then sleep 1; exit 3; fi; sleep 20"), into(out), into(err), false);
        assertFalse(outcome.succeeded());
        assertEquals(Optional.of(new MpiRun.Failure(1, 3, -1, "")), outcome.failure(), "mpirun said: " + err);
        String printed = out.toString(StandardCharsets.UTF_8);
        assertTrue(printed.contains("[rank 0] rank 0 of 2 x") && printed.contains("[rank 1] rank 1 of 2 x"), printed);
        if (Files.isReadable(Path.of("/proc/self/status"))) {
            assertEquals(List.of(0, 1), List.copyOf(outcome.peakResidentBytes().keySet()), "resident memory of each rank");
            assertTrue(outcome.peakResidentBytes().values().stream().allMatch(b -> b > 0), outcome.peakResidentBytes().toString());
        }
    }

    @Test
    void killingOneRankEndsTheJobNamingItAndLeavesNoProcessBehind(@TempDir Path dir) throws Exception {
        Optional<MpiRun> mpirun = mpirun();
        assumeTrue(mpirun.isPresent(), "mpirun not installed");
        ByteArrayOutputStream out = new ByteArrayOutputStream(), err = new ByteArrayOutputStream();
        CompletableFuture<MpiRun.Outcome> job = CompletableFuture.supplyAsync(() -> {
            try {
                return mpirun.get().run(2, List.of(), Map.of(), List.of("sh", "-c",
                        "echo $$ > " + dir + "/pid-$OMPI_COMM_WORLD_RANK.tmp && mv " + dir + "/pid-$OMPI_COMM_WORLD_RANK.tmp "
                                + dir + "/pid-$OMPI_COMM_WORLD_RANK; exec sleep 60"), into(out), into(err), false);
            } catch (IOException e) {
                throw new RuntimeException(e);
            }
        });
        Path pid0 = dir.resolve("pid-0"), pid1 = dir.resolve("pid-1");
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(15);
        while (!(Files.exists(pid0) && Files.exists(pid1)) && System.nanoTime() < deadline) Thread.sleep(50);
        assertTrue(Files.exists(pid0) && Files.exists(pid1), "both ranks started within 15 s; mpirun said: " + err);
        ProcessHandle rank0 = ProcessHandle.of(Long.parseLong(Files.readString(pid0).strip())).orElseThrow();
        ProcessHandle rank1 = ProcessHandle.of(Long.parseLong(Files.readString(pid1).strip())).orElseThrow();

        long killed = System.nanoTime();
        new ProcessBuilder("kill", "-9", Long.toString(rank1.pid())).start().waitFor();
        MpiRun.Outcome outcome = job.get(30, TimeUnit.SECONDS);
        double seconds = (System.nanoTime() - killed) / 1e9;

        assertFalse(outcome.succeeded(), "the job fails when a rank is killed");
        MpiRun.Failure failure = outcome.failure().orElseThrow(() -> new AssertionError("no rank named; mpirun said: " + err));
        assertEquals(1, failure.rank(), outcome.describe());
        assertEquals(9, failure.signal(), outcome.describe());
        assertTrue(seconds < 30, "the job ended " + seconds + " s after the kill");
        assertFalse(MpiRun.running(rank0), "rank 0 (pid " + rank0.pid() + ") is left running " + state(rank0) + " after " + seconds + " s; " + outcome + " mpirun said: " + err);
        assertFalse(MpiRun.running(rank1), "rank 1 (pid " + rank1.pid() + ") is left running");
    }
}
