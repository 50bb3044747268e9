package dev.shardwise.cli;

import dev.shardwise.core.memory.MemoryPool;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.StringJoiner;
import java.util.concurrent.Callable;

/**
 * {@code shardwise launch}: runs {@code shardwise train} as N processes through {@code mpirun}, each process
 * one rank of the job (it finds its rank in the variables mpirun sets), or prints the same job for Slurm or
 * Kubernetes.
 */
@Command(name = "launch", mixinStandardHelpOptions = true,
        description = {"Run training as N processes, one rank each, through mpirun (Open MPI).",
                "Each process's output is prefixed [rank r]; rank 0's progress line is the job's. If a process fails, "
                        + "the others are stopped and launch exits non-zero, naming the rank.",
                "--print slurm|k8s prints the same job as an srun line or a Kubeflow MPIJob instead of running it.",
                "Each process runs cores / processes-on-the-node kernel threads; SHARDWISE_THREADS=N (passed on to every "
                        + "process) gives each N instead."},
        footer = {"", "Examples:", "  shardwise launch --nproc 4 -- train --preset tiny --zero 1",
                "  shardwise launch --nproc 4 --hosts node1:2,node2:2 -- train --config configs/tiny-shakespeare.yaml",
                "  shardwise launch --nproc 16 --print slurm -- train --preset gpt2-124m", ""})
public final class LaunchCommand implements Callable<Integer> {
    /** Environment variables passed on to every process (with {@code -x}, so remote hosts get them too) when set. */
    private static final List<String> PASSED_ON = List.of("SHARDWISE_CACHE", "SHARDWISE_THREADS");

    @Option(names = "--nproc", paramLabel = "N", required = true, description = "Processes (ranks) to start.")
    int processes;

    @Option(names = "--hosts", paramLabel = "HOSTS", split = ",",
            description = "Hosts to run on, Open MPI style (node1:2,node2:2 = 2 slots each); default: this machine. "
                    + "Java and Shardwise must be at the same paths there.")
    List<String> hosts = new ArrayList<>();

    @Option(names = "--print", paramLabel = "slurm|k8s", description = "Print the job for Slurm (srun) or Kubernetes (MPIJob) instead.")
    String print;

    @Parameters(paramLabel = "COMMAND", arity = "1..*",
            description = "After --: the shardwise command each process runs: train and its options, e.g. -- train --preset tiny.")
    List<String> command;

    @CommandLine.Spec
    CommandLine.Model.CommandSpec spec;

    @Override
    public Integer call() throws IOException {
        if (processes < 1) throw new IllegalArgumentException("--nproc must be >= 1, got " + processes);
        if (!command.getFirst().equals("train")) {   // the one command whose processes join as ranks of one job
            throw new IllegalArgumentException("'" + command.getFirst() + "' does not run as one rank per process (" + processes
                    + " copies of it would run side by side); launch runs train, e.g. shardwise launch --nproc 4 -- train "
                    + "--preset tiny (bench collectives --backend mpi starts its own mpirun)");
        }
        if (print != null) {
            String text = switch (print.toLowerCase(Locale.ROOT)) {
                case "slurm" -> JobForms.slurm(processes, hosts, script(), command);
                case "k8s", "kubernetes" -> JobForms.kubernetes(processes, command);
                default -> throw new IllegalArgumentException("--print " + print + " is not known; use --print slurm or --print k8s");
            };
            spec.commandLine().getOut().print(text);
            spec.commandLine().getOut().flush();
            return 0;
        }

        MpiRun mpirun = MpiRun.find(System.getenv("PATH"));
        boolean live = System.console() != null;
        Map<String, String> exported = new LinkedHashMap<>();
        for (String name : PASSED_ON) {
            String value = System.getenv(name);
            if (value != null) exported.put(name, value);
        }
        if (live) exported.put("SHARDWISE_PROGRESS", "inline");   // rank 0 draws its progress line in place; we show it
        PrintStream out = System.out, err = System.err;
        err.printf("launch: %d processes %s through mpirun%n", processes,
                hosts.isEmpty() ? "on this machine" : "on " + String.join(",", hosts));
        MpiRun.Outcome outcome = mpirun.run(processes, hosts, exported, JobCommands.thisJvm(command), out, err, live);
        if (!outcome.peakResidentBytes().isEmpty()) {
            StringJoiner memory = new StringJoiner(", ", "launch: peak resident memory by rank: ", "");
            outcome.peakResidentBytes().forEach((rank, bytes) -> memory.add(rank + ": " + MemoryPool.formatBytes(bytes)));
            err.println(memory);
        }
        if (outcome.succeeded()) {
            err.printf("launch: all %d ranks finished%n", processes);
            return 0;
        }
        err.println("launch: " + outcome.describe() + " (the first rank to fail); the job was stopped");
        return outcome.exitStatus();
    }

    /** The {@code shardwise} script next to the jar this class came from, or {@code ./shardwise} if not found. */
    private static String script() {
        try {
            Path jar = Path.of(LaunchCommand.class.getProtectionDomain().getCodeSource().getLocation().toURI());
            // cli/target/shardwise-cli.jar -> the repository root
            Path root = jar.getParent() == null ? null : jar.getParent().getParent() == null ? null : jar.getParent().getParent().getParent();
            if (root != null && Files.isExecutable(root.resolve("shardwise"))) return root.resolve("shardwise").toString();
        } catch (Exception e) {   // no code source (unusual class loader): fall back to the relative path
            return "./shardwise";
        }
        return "./shardwise";
    }
}
