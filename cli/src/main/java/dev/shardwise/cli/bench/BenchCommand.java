package dev.shardwise.cli.bench;

import picocli.CommandLine;
import picocli.CommandLine.Command;

/** {@code shardwise bench ...}: benchmarks that print a ratio against a peer measured in the same run. */
@Command(name = "bench", mixinStandardHelpOptions = true,
        description = "Benchmarks that print a ratio against a peer measured in the same run (OpenBLAS, a copy, PyTorch).",
        subcommands = {BenchGemmCommand.class, BenchKernelsCommand.class, BenchTrainCommand.class, BenchDataParallelCommand.class,
                BenchCollectivesCommand.class, BenchPipelineCommand.class, BenchPlannerCommand.class, BenchLayoutsCommand.class,
                BenchCheckpointCommand.class})
public final class BenchCommand implements Runnable {
    @CommandLine.Spec
    CommandLine.Model.CommandSpec spec;

    @Override
    public void run() {
        spec.commandLine().usage(System.out);
    }
}
