package dev.shardwise.cli;

import dev.shardwise.cli.bench.BenchCommand;
import picocli.CommandLine;
import picocli.CommandLine.Command;

/** Entry point of the {@code shardwise} command; the only place that prints for people. */
@Command(name = "shardwise",
        mixinStandardHelpOptions = true,
        version = "shardwise 0.1.0-SNAPSHOT",
        description = {"Large-model training for the JVM. Today: GPT- and LLaMA-style models trained on one rank "
                + "(CPU, fp32), checked against PyTorch; data/tensor/pipeline parallelism and ZeRO are next."},
        subcommands = {DemoCommand.class, TrainCommand.class, LaunchCommand.class, GenerateCommand.class, PrepareCommand.class, BenchCommand.class,
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

    /** The command line as {@link #main} runs it: user errors print one line and exit with status 2. */
    static CommandLine commandLine() {
        CommandLine cli = new CommandLine(new Main());
        cli.getSubcommands().get("launch").setStopAtPositional(true);   // everything after the command word is the child's
        cli.setExecutionExceptionHandler((e, commandLine, parseResult) -> {
            if (e instanceof IllegalArgumentException || e instanceof IllegalStateException) {
                commandLine.getErr().println("shardwise: " + e.getMessage());
                return 2;
            }
            throw e;
        });
        return cli;
    }
}
