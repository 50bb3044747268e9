package dev.shardwise.cli.bench;

import dev.shardwise.core.machine.CpuPeak;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/** {@code shardwise bench kernels}: attention (GFLOP/s, fraction of peak) and memory-bound kernels (GB/s vs a copy). */
@Command(name = "kernels", mixinStandardHelpOptions = true,
        description = "Attention, cross-entropy, norms, GELU, softmax, AdamW: GFLOP/s or GB/s beside a memory copy.")
public final class BenchKernelsCommand implements Runnable {
    @Option(names = "--json", description = "One JSON object per case instead of a table.")
    boolean json;

    @Override
    public void run() {
        BenchOutput out = new BenchOutput(System.out, json);
        CpuPeak peak = CpuPeak.measure();
        out.info(peak.describe());
        AttentionBenchmarks.run(out, peak);
        ElementwiseBenchmarks.run(out, peak);
    }
}
