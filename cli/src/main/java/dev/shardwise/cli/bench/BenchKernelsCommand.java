package dev.shardwise.cli.bench;

import dev.shardwise.core.machine.CpuPeak;
import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.ParameterException;
import picocli.CommandLine.Spec;

import java.util.List;
import java.util.function.Predicate;

/** {@code shardwise bench kernels}: attention (GFLOP/s, fraction of peak) and memory-bound kernels (GB/s vs a copy). */
@Command(name = "kernels", mixinStandardHelpOptions = true,
        description = "Attention, the MoE block (beside the dense MLP), cross-entropy, norms, GELU, softmax, AdamW: GFLOP/s "
                + "or GB/s beside a memory copy.")
public final class BenchKernelsCommand implements Runnable {
    @Option(names = "--json", description = "One JSON object per case instead of a table.")
    boolean json;

    /** The groups of cases, in the order they run. */
    static final List<String> GROUPS = List.of("attention", "moe", "cross-entropy", "layernorm", "gelu", "softmax", "adamw", "bf16");

    @Option(names = "--only", split = ",", paramLabel = "GROUP",
            description = "Run only these groups (comma-separated): attention, moe (the moe-tiny MoE block beside the "
                    + "dense MLP of the same active FLOPs), cross-entropy, layernorm, gelu, softmax, adamw, bf16. Default: all.")
    List<String> only;

    @Spec
    CommandSpec spec;

    @Override
    public void run() {
        if (only != null) {
            for (String g : only) {
                if (!GROUPS.contains(g)) {
                    throw new ParameterException(spec.commandLine(), "--only: unknown group '" + g + "'; use one or more of "
                            + String.join(", ", GROUPS) + ", comma-separated");
                }
            }
        }
        Predicate<String> wanted = g -> only == null || only.contains(g);
        BenchOutput out = new BenchOutput(System.out, json);
        CpuPeak peak = CpuPeak.measure();
        out.info(peak.describe());
        if (wanted.test("attention")) AttentionBenchmarks.run(out, peak);
        if (wanted.test("moe")) MoeBenchmarks.run(out, peak);
        ElementwiseBenchmarks.run(out, peak, wanted);
    }
}
