package dev.shardwise.cli.bench;

import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.train.CheckpointStall;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Comparator;
import java.util.Locale;

/**
 * {@code shardwise bench checkpoint}: the training-visible time of an asynchronous checkpoint (copy to host buffers)
 * beside a synchronous one (write, fsync, commit), measured in the same run on one rank of a preset model.
 */
@Command(name = "checkpoint", mixinStandardHelpOptions = true,
        description = "Training-visible stall of an asynchronous checkpoint beside a synchronous one (same run, one rank).")
public final class BenchCheckpointCommand implements Runnable {
    @Option(names = "--preset", defaultValue = "tiny", description = "Model preset, e.g. gpt2-124m (default: ${DEFAULT-VALUE}).")
    String preset;

    @Option(names = "--rounds", defaultValue = "3", description = "Saves of each kind, alternating (default: ${DEFAULT-VALUE}).")
    int rounds;

    @Option(names = "--dir", paramLabel = "DIR", description = "Where to write the checkpoints (default: a temporary directory, deleted after).")
    Path dir;

    @Option(names = "--json", description = "One JSON object per case instead of a table.")
    boolean json;

    @Override
    public void run() {
        BenchOutput out = new BenchOutput(System.out, json);
        Path where = dir;
        try {
            if (where == null) where = Files.createTempDirectory("shardwise-bench-ckpt");
            CheckpointStall.Result r = CheckpointStall.measure(preset, where, rounds);
            out.info(String.format(Locale.ROOT, "%s: %s of values and AdamW moments per checkpoint, median of %d saves each",
                    preset, MemoryPool.formatBytes(r.bytes()), r.rounds()));
            out.row(new BenchRow("checkpoint", preset + " async stall (copy to host buffers)", r.asyncStallMs(), "ms",
                    "sync save", r.syncMs(), Double.NaN, "training-visible time"));
            out.row(new BenchRow("checkpoint", preset + " async until committed", r.asyncTotalMs(), "ms",
                    "sync save", r.syncMs(), Double.NaN, "background writer, not visible to training"));
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        } finally {
            if (dir == null && where != null) delete(where);
        }
    }

    private static void delete(Path path) {
        try (var walk = Files.walk(path)) {
            for (Path p : walk.sorted(Comparator.reverseOrder()).toList()) Files.deleteIfExists(p);
        } catch (IOException ignored) {
            // a temporary directory left behind is harmless
        }
    }
}
