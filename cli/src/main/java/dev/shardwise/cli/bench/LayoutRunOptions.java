package dev.shardwise.cli.bench;

import picocli.CommandLine.Option;

/** The options of the benchmarks that train layouts through {@link LayoutRun}: the batch, sequence and steps of each run. */
final class LayoutRunOptions {
    @Option(names = "--global-batch", defaultValue = "8", description = "Sequences per step (default: ${DEFAULT-VALUE}).")
    int globalBatch;

    @Option(names = "--seq-len", defaultValue = "256", description = "Tokens per sequence (default: ${DEFAULT-VALUE}).")
    int seqLen;

    @Option(names = "--steps", defaultValue = "5", description = "Training steps per layout run; the first is not counted (default: ${DEFAULT-VALUE}).")
    int steps;

    /** One training run of {@code preset} under {@code choice} with these options. */
    LayoutRun train(String preset, dev.shardwise.plan.Candidates.Choice choice) {
        return LayoutRun.train(preset, choice, globalBatch, seqLen, steps);
    }
}
