package dev.shardwise.cli;

import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.infer.TokenSampler;
import dev.shardwise.train.ConfigLoader;
import dev.shardwise.train.TrainConfig;
import dev.shardwise.train.Trainer;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

import java.io.IOException;
import java.io.PrintWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.Callable;

/** {@code shardwise demo}: prepare tiny Shakespeare, train the tiny GPT for a few minutes, sample from it. */
@Command(name = "demo", mixinStandardHelpOptions = true,
        description = {"Train a small GPT on the bundled tiny Shakespeare for a few minutes and sample from it.",
                "Prepares the corpus and a byte-level BPE tokenizer once (cached in ~/.cache/shardwise), shows a "
                        + "progress line, prints the validation loss and three samples, and leaves a run directory "
                        + "with metrics.jsonl, loss.png and a checkpoint."})
public final class DemoCommand implements Callable<Integer> {
    static final List<String> PROMPTS = List.of("ROMEO:", "JULIET:\nO ", "First Citizen:\n");

    @Option(names = "--steps", defaultValue = "300", description = "Optimizer steps (default: ${DEFAULT-VALUE}).")
    int steps;

    @Option(names = "--run-dir", paramLabel = "DIR",
            description = "Run directory (default: the first free one of runs/demo, runs/demo-2, ...).")
    Path runDir;

    @CommandLine.Spec
    CommandLine.Model.CommandSpec spec;

    @Override
    public Integer call() throws IOException {
        PrintWriter out = spec.commandLine().getOut();
        Map<String, Object> flags = new LinkedHashMap<>();
        flags.put("preset", "tiny");
        flags.put("steps", steps);
        flags.put("evalEvery", Math.max(1, steps / 6));
        flags.put("checkpointEvery", 0);
        flags.put("warmupSteps", Math.max(1, steps / 10));
        flags.put("runDir", (runDir != null ? runDir : freeRunDirectory()).toString());
        TrainConfig config = ConfigLoader.resolve(Map.of(), "demo", flags);
        out.printf(Locale.ROOT, "Shardwise demo: training the 'tiny' GPT (%d layers, hidden %d, %d heads, vocab %d) "
                        + "on tiny Shakespeare for %d steps of %d tokens.%n", config.model().layers(), config.model().hidden(),
                config.model().heads(), config.model().vocabSize(), config.steps(), config.tokensPerStep());
        out.flush();
        Trainer.Result result = new Trainer(config, System.out).run(false);
        out.printf(Locale.ROOT, "%nvalidation loss %.4f nats/token after %d steps (%,.0f tokens/s, MFU %.1f%%, peak memory %s)%n",
                result.valLoss(), result.steps(), result.tokensPerSecond(), 100 * result.mfu(),
                MemoryPool.formatBytes(result.peakMemoryBytes()));
        for (int i = 0; i < PROMPTS.size(); i++) {
            out.printf("%n--- sample %d ---%n%s", i + 1, PROMPTS.get(i));
            out.flush();
            GenerateCommand.sample(result.runDir(), PROMPTS.get(i), 120, new TokenSampler(0.8, 40, 0.95, i + 1),
                    text -> { out.print(text); out.flush(); });
            out.println();
        }
        out.printf("%nRun directory: %s (loss.png, metrics.jsonl, checkpoints/). More text:%n"
                + "  ./shardwise generate --checkpoint %s --prompt \"KING RICHARD:\"%n", result.runDir(), result.runDir());
        out.flush();
        return 0;
    }

    private static Path freeRunDirectory() {
        Path dir = Path.of("runs", "demo");
        for (int i = 2; Files.exists(dir); i++) dir = Path.of("runs", "demo-" + i);
        return dir;
    }
}
