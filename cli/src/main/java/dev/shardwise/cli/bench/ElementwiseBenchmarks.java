package dev.shardwise.cli.bench;

import dev.shardwise.core.machine.CpuPeak;

/** Memory-bound kernel cases of {@code bench kernels} (cross-entropy, norms, GELU, softmax, AdamW), beside a copy. */
final class ElementwiseBenchmarks {
    private ElementwiseBenchmarks() { }

    static void run(BenchOutput out, CpuPeak peak) {
        throw new UnsupportedOperationException("elementwise benchmarks: not written yet");
    }
}
