package dev.shardwise.cli.bench;

import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/** {@code shardwise bench gemm}: our GEMM beside OpenBLAS sgemm on GPT-2-small training shapes. */
@Command(name = "gemm", mixinStandardHelpOptions = true,
        description = "GEMM GFLOP/s on GPT-2-small shapes beside OpenBLAS sgemm in the same run.")
public final class BenchGemmCommand implements Runnable {
    @Option(names = "--json", description = "One JSON object per case instead of a table.")
    boolean json;

    @Override
    public void run() {
        throw new UnsupportedOperationException("gemm benchmark: not written yet");
    }
}
