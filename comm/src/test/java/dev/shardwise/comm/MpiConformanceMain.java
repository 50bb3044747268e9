package dev.shardwise.comm;

import dev.shardwise.comm.mpi.Mpi;
import org.junit.platform.launcher.Launcher;
import org.junit.platform.launcher.LauncherDiscoveryRequest;
import org.junit.platform.launcher.core.LauncherDiscoveryRequestBuilder;
import org.junit.platform.launcher.core.LauncherFactory;
import org.junit.platform.launcher.listeners.SummaryGeneratingListener;
import org.junit.platform.launcher.listeners.TestExecutionSummary;

import java.io.FileDescriptor;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.PrintWriter;
import java.nio.charset.StandardCharsets;

import static org.junit.platform.engine.discovery.DiscoverySelectors.selectClass;

/**
 * One process of {@code mpirun -np N java ... MpiConformanceMain}: runs {@link MpiCommunicatorConformanceTest}
 * with the JUnit Platform launcher and exits 0 only if every case passed or was skipped and at least one passed.
 * Prints one summary line per process ({@code mpi conformance world rank R: ...}) and the failures in full.
 */
public final class MpiConformanceMain {
    private MpiConformanceMain() { }

    public static void main(String[] args) {
        String rank = System.getenv().getOrDefault("OMPI_COMM_WORLD_RANK", "?");
        LauncherDiscoveryRequest request = LauncherDiscoveryRequestBuilder.request()
                .selectors(selectClass(MpiCommunicatorConformanceTest.class)).build();
        Launcher launcher = LauncherFactory.create();
        SummaryGeneratingListener listener = new SummaryGeneratingListener();
        launcher.execute(request, listener);
        TestExecutionSummary s = listener.getSummary();
        boolean ok = s.getTotalFailureCount() == 0 && s.getTestsSucceededCount() > 0;
        if (!ok) {
            s.printFailuresTo(new PrintWriter(System.out, true), 40);
            System.out.flush();
        }
        // One write(2) of less than PIPE_BUF bytes, so mpirun does not interleave it with other processes' lines.
        String line = String.format("mpi conformance world rank %s: %d passed, %d failed, %d skipped, %d aborted in %d ms%n", rank,
                s.getTestsSucceededCount(), s.getTotalFailureCount(), s.getTestsSkippedCount(), s.getTestsAbortedCount(),
                s.getTimeFinished() - s.getTimeStarted());
        try {
            new FileOutputStream(FileDescriptor.out).write(line.getBytes(StandardCharsets.UTF_8));
        } catch (IOException e) {
            System.out.print(line);
        }
        if (!ok) {
            // Exit without MPI_Finalize (it would wait for every process): mpirun then ends the job.
            Runtime.getRuntime().halt(1);
        }
        Mpi.finalizeMpi();
        System.exit(0);
    }
}
