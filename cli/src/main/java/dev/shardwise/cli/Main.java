package dev.shardwise.cli;

import dev.shardwise.cli.bench.BenchCommand;
import dev.shardwise.comm.CommTimeoutException;
import dev.shardwise.comm.PeerFailedException;
import dev.shardwise.comm.RankFailedException;
import dev.shardwise.core.memory.MemoryBudgetExceededException;
import picocli.CommandLine;
import picocli.CommandLine.Command;

/** Entry point of the {@code shardwise} command; the only place that prints for people. */
@Command(name = "shardwise",
        mixinStandardHelpOptions = true,
        version = "shardwise 0.1.0-SNAPSHOT",
        description = {"Large-model training for the JVM. Today: GPT-, LLaMA-style and mixture-of-experts models trained on the "
                + "CPU in fp32 or bf16 mixed precision, checked against PyTorch, with data (ZeRO 1-3), tensor, sequence, "
                + "pipeline and expert parallelism combined, over threads of this JVM (--ranks) or MPI processes (launch); "
                + "sharded checkpoints that load under any layout; a planner that picks the layout (plan, train --parallel auto)."},
        subcommands = {DemoCommand.class, TrainCommand.class, LaunchCommand.class, GenerateCommand.class, MoefyCommand.class, CkptCommand.class, PrepareCommand.class, PlanCommand.class, BenchCommand.class,
                CommandLine.HelpCommand.class},
        footer = {"", "Start with:  ./shardwise demo     (train a small GPT on Shakespeare for ~3 minutes, then sample)",
                "Each command has its own help:  ./shardwise help bench", ""})
public final class Main implements Runnable {
    @CommandLine.Spec
    CommandLine.Model.CommandSpec spec;

    @Override
    public void run() {
        spec.commandLine().usage(System.out);
    }

    public static void main(String[] args) {
        System.exit(commandLine().execute(args));
    }

    /**
     * The command line as {@link #main} runs it: user errors print one line and exit with status 2; a run that
     * failed for a reason the message explains in full (a rank over its memory budget, a rank that failed or
     * timed out in a collective) prints it with its cause's message and exits with status 1.
     */
    static CommandLine commandLine() {
        CommandLine cli = new CommandLine(new Main());
        cli.getSubcommands().get("launch").setStopAtPositional(true);   // everything after the command word is the child's
        cli.setExecutionExceptionHandler((e, commandLine, parseResult) -> {
            if (e instanceof IllegalArgumentException || e instanceof IllegalStateException) {
                commandLine.getErr().println("shardwise: " + e.getMessage());
                return 2;
            }
            if (e instanceof java.io.IOException || e instanceof java.io.UncheckedIOException) {   // a file the user named or owns
                commandLine.getErr().println("shardwise: " + IoErrors.describe(e instanceof java.io.UncheckedIOException u ? u.getCause() : e));
                return 2;
            }
            if (e instanceof MemoryBudgetExceededException || e instanceof RankFailedException
                    || e instanceof CommTimeoutException || e instanceof PeerFailedException) {
                commandLine.getErr().println("shardwise: " + e.getMessage()
                        + (e.getCause() != null && e.getCause().getMessage() != null ? "\n  caused by: " + e.getCause() : ""));
                return 1;
            }
            throw e;
        });
        return cli;
    }
}
