package dev.shardwise.cli.bench;

import dev.shardwise.core.machine.CpuPeak;

/** Attention forward+backward cases of {@code bench kernels}. */
final class AttentionBenchmarks {
    private AttentionBenchmarks() { }

    static void run(BenchOutput out, CpuPeak peak) {
        throw new UnsupportedOperationException("attention benchmark: not written yet");
    }
}
