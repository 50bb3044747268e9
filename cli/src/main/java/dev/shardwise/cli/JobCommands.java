package dev.shardwise.cli;

import java.io.File;
import java.lang.management.ManagementFactory;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/**
 * The command lines that start more Shardwise processes: this JVM again (for {@code launch} and the MPI rows of
 * {@code bench collectives}) and Open MPI's {@code mpirun} with the options every such job needs.
 */
public final class JobCommands {
    private JobCommands() { }

    /**
     * The command line that starts {@code Main} with {@code args} in a JVM like this one: same java, same JVM
     * options, same class path. Processes started with it do not go through the {@code shardwise} script, so
     * N of them never race to rebuild the project.
     */
    public static List<String> thisJvm(List<String> args) {
        List<String> line = new ArrayList<>();
        line.add(Path.of(System.getProperty("java.home"), "bin", "java").toString());
        for (String option : ManagementFactory.getRuntimeMXBean().getInputArguments()) {
            if (!option.startsWith("-agentlib:jdwp")) line.add(option);   // N debuggers would fight over one port
        }
        line.add("-cp");
        line.add(System.getProperty("java.class.path"));
        line.add(Main.class.getName());
        line.addAll(args);
        return line;
    }

    /**
     * {@code mpirun} and the options every job here uses: {@code --allow-run-as-root} (containers),
     * {@code --oversubscribe} (more processes than cores is allowed on a small machine),
     * {@code --mca odls_base_sigkill_timeout 0} (a failed job ends at once), {@code -np processes}; and, when
     * {@code yieldWhenIdle}, {@code --mca mpi_yield_when_idle 1}, so that waiting ranks give up the core the
     * rank they wait for needs.
     */
    public static List<String> mpirun(Path mpirun, int processes, boolean yieldWhenIdle) {
        List<String> line = new ArrayList<>(List.of(mpirun.toString(), "--allow-run-as-root", "--oversubscribe",
                "--mca", "odls_base_sigkill_timeout", "0", "-np", Integer.toString(processes)));
        if (yieldWhenIdle) line.addAll(List.of("--mca", "mpi_yield_when_idle", "1"));
        return line;
    }

    /** The executable {@code program} in a directory of {@code path} (a {@code PATH}-style list), or null. */
    public static Path onPath(String program, String path) {
        for (String dir : (path == null ? "" : path).split(File.pathSeparator)) {
            if (dir.isEmpty()) continue;
            Path candidate = Path.of(dir, program);
            if (Files.isExecutable(candidate)) return candidate;
        }
        return null;
    }
}
