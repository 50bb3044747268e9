package dev.shardwise.cli;

import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.train.CheckpointTools;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

import java.io.IOException;
import java.io.PrintWriter;
import java.nio.file.Path;
import java.util.Locale;
import java.util.concurrent.Callable;

/** {@code shardwise ckpt}: look into a checkpoint, or export it for other tools. */
@Command(name = "ckpt", mixinStandardHelpOptions = true,
        description = "Inspect a checkpoint (tensors, layout, sizes, checksums) or export it (Hugging Face GPT-2 or LLaMA safetensors).",
        subcommands = {CkptCommand.Inspect.class, CkptCommand.Export.class},
        footer = {"", "Examples:", "  shardwise ckpt inspect runs/a/checkpoints/step-000200",
                "  shardwise ckpt export --format safetensors runs/a -o runs/a/hf", ""})
public final class CkptCommand implements Runnable {
    @CommandLine.Spec
    CommandLine.Model.CommandSpec spec;

    @Override
    public void run() {
        spec.commandLine().usage(spec.commandLine().getOut());
    }

    /** {@code ckpt inspect DIR}. */
    @Command(name = "inspect", mixinStandardHelpOptions = true,
            description = {"List a checkpoint's tensors (global name, dtype, shape, bytes, pieces), the layout it was saved "
                    + "under and its files, and verify every checksum; exit status 2 if it is damaged."})
    static final class Inspect implements Callable<Integer> {
        @Parameters(paramLabel = "DIR", description = "A checkpoint (checkpoints/step-NNNNNN) or a run directory (its newest).")
        Path dir;

        @CommandLine.Spec
        CommandLine.Model.CommandSpec spec;

        @Override
        public Integer call() throws IOException {
            PrintWriter out = spec.commandLine().getOut();
            CheckpointTools.Inspection c = CheckpointTools.inspect(dir);
            out.printf(Locale.ROOT, "%s: %s, step %d%n", c.dir(), c.format(), c.step());
            out.printf(Locale.ROOT, "saved under: %s%n", c.layout().isEmpty() ? "one rank (format 1 records no layout)" : c.layout());
            out.printf(Locale.ROOT, "model: %s%n", c.model());
            out.printf(Locale.ROOT, "%-36s %-5s %-16s %12s %7s%n", "tensor", "dtype", "shape", "bytes", "pieces");
            long total = 0;
            for (CheckpointTools.TensorRow t : c.tensors()) {
                out.printf(Locale.ROOT, "%-36s %-5s %-16s %12d %7d%n", t.name(), t.dtype(), t.shape(), t.bytes(), t.pieces());
                total += t.bytes();
            }
            out.printf(Locale.ROOT, "%d tensors, %s%n", c.tensors().size(), MemoryPool.formatBytes(total));
            for (CheckpointTools.FileRow f : c.files()) {
                out.printf(Locale.ROOT, "file %-20s %s%n", f.name(), f.bytes() < 0 ? "MISSING" : MemoryPool.formatBytes(f.bytes()));
            }
            out.flush();
            if (c.problem().isPresent()) {
                spec.commandLine().getErr().println("shardwise: checkpoint " + c.dir() + " is damaged: " + c.problem().get()
                        + "; resume from another (--resume-from step-N)");
                return 2;
            }
            out.println("checksums: all verified");
            out.flush();
            return 0;
        }
    }

    /** {@code ckpt export --format safetensors DIR -o OUT}. */
    @Command(name = "export", mixinStandardHelpOptions = true,
            description = {"Write a checkpoint's weights for other tools: --format safetensors writes a GPT-2 as Hugging Face's "
                    + "GPT2LMHeadModel (Conv1D weights as [in, out]) and a LLaMA-style model as LlamaForCausalLM (q_proj, k_proj, "
                    + "v_proj split from our fused qkv), the head tied to the embedding, as OUT/model.safetensors and OUT/config.json; "
                    + "train --init-from OUT starts a run from it."})
    static final class Export implements Callable<Integer> {
        @Parameters(paramLabel = "DIR", description = "A checkpoint (checkpoints/step-NNNNNN) or a run directory (its newest).")
        Path dir;

        @Option(names = "--format", paramLabel = "FORMAT", defaultValue = "safetensors", description = "safetensors (the only one).")
        String format;

        @Option(names = {"-o", "--output"}, paramLabel = "OUT", required = true, description = "Directory to write.")
        Path output;

        @CommandLine.Spec
        CommandLine.Model.CommandSpec spec;

        @Override
        public Integer call() throws IOException {
            if (!format.equals("safetensors")) {
                throw new IllegalArgumentException("--format " + format + " is not supported; use --format safetensors");
            }
            Path out = CheckpointTools.exportSafetensors(dir, output);
            spec.commandLine().getOut().println("wrote " + out.resolve("model.safetensors") + " and " + out.resolve("config.json"));
            spec.commandLine().getOut().flush();
            return 0;
        }
    }
}
