package dev.shardwise.cli;

import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.data.Tokenizer;
import dev.shardwise.infer.CachedGenerator;
import dev.shardwise.infer.RecomputingGenerator;
import dev.shardwise.infer.TokenGenerator;
import dev.shardwise.infer.TokenSampler;
import dev.shardwise.infer.moefy.MoefiedModel;
import dev.shardwise.model.Gpt;
import dev.shardwise.model.ModelConfig;
import dev.shardwise.train.Checkpoint;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

import java.io.IOException;
import java.io.PrintWriter;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.Callable;

/** {@code shardwise generate}: sample text from a checkpoint with a KV cache. */
@Command(name = "generate", mixinStandardHelpOptions = true,
        description = "Sample text from a trained model (a run directory or one of its checkpoints).",
        footer = {"", "Example:", "  shardwise generate --checkpoint runs/tiny --prompt \"ROMEO:\" --max-tokens 200", ""})
public final class GenerateCommand implements Callable<Integer> {
    @Option(names = "--checkpoint", paramLabel = "DIR", required = true,
            description = "A run directory (its latest checkpoint is used) or a checkpoints/step-NNNNNN directory.")
    Path checkpoint;

    @Option(names = "--prompt", paramLabel = "TEXT", defaultValue = "\n", description = "Text to continue (default: a newline).")
    String prompt;

    @Option(names = "--max-tokens", paramLabel = "N", defaultValue = "200", description = "Tokens to generate (default: ${DEFAULT-VALUE}).")
    int maxTokens;

    @Option(names = "--temperature", paramLabel = "T", defaultValue = "0.8", description = "0 is greedy (default: ${DEFAULT-VALUE}).")
    double temperature;

    @Option(names = "--top-k", paramLabel = "K", defaultValue = "40", description = "Keep the K likeliest tokens; 0 keeps all (default: ${DEFAULT-VALUE}).")
    int topK;

    @Option(names = "--top-p", paramLabel = "P", defaultValue = "0.95", description = "Nucleus sampling mass (default: ${DEFAULT-VALUE}).")
    double topP;

    @Option(names = "--seed", paramLabel = "S", defaultValue = "1", description = "Sampling seed (default: ${DEFAULT-VALUE}).")
    long seed;

    @Option(names = "--active", paramLabel = "K",
            description = "With a MoEfied checkpoint (shardwise moefy): run K of its E experts per token in every FFN.")
    Integer active;

    @CommandLine.Spec
    CommandLine.Model.CommandSpec spec;

    @Override
    public Integer call() throws IOException {
        PrintWriter out = spec.commandLine().getOut();
        TokenSampler sampler = new TokenSampler(temperature, topK, topP, seed);
        if (active != null) {
            sampleMoefied(checkpoint, active, sampler, out);
            out.println();
            out.flush();
            return 0;
        }
        out.print(prompt);
        out.print(sample(checkpoint, prompt, maxTokens, sampler, out::print));
        out.println();
        out.flush();
        return 0;
    }

    /** Loads the checkpoint under {@code path} and returns the text generated after {@code prompt}. */
    static String sample(Path path, String prompt, int maxTokens, TokenSampler sampler, java.util.function.Consumer<String> stream)
            throws IOException {
        Path dir = Checkpoint.resolve(path);
        ModelConfig config = Checkpoint.modelConfig(dir);
        Tokenizer tokenizer = Checkpoint.tokenizer(dir);
        MemoryPool pool = MemoryPool.unlimited("rank 0");
        try (Gpt model = new Gpt(config, Gpt.declare(config).allocate(pool, DType.F32))) {
            Checkpoint.loadParameters(dir, model.parameters());
            return sample(model, tokenizer, pool, prompt, maxTokens, sampler, stream);
        }
    }

    /** Samples from a MoEfied checkpoint with K = {@code k} experts per token (the sparse experts stand in for each block's FFN). */
    private void sampleMoefied(Path path, int k, TokenSampler sampler, PrintWriter out) throws IOException {
        MemoryPool pool = MemoryPool.unlimited("rank 0");
        try (MoefiedModel moefied = MoefiedModel.load(path, pool)) {
            moefied.useActive(k);
            Tokenizer tokenizer = Checkpoint.tokenizer(moefied.directory());
            out.print(prompt);
            String rest;
            try (TokenGenerator generator = generator(moefied.model(), pool)) {
                rest = generate(generator, tokenizer, prompt, maxTokens, sampler, out::print);
            }
            out.print(rest);
        }
    }

    /** Samples from {@code model} with the generator {@link #generator} picks. */
    private static String sample(Gpt model, Tokenizer tokenizer, MemoryPool pool, String prompt, int maxTokens,
                                 TokenSampler sampler, java.util.function.Consumer<String> stream) {
        try (TokenGenerator generator = generator(model, pool)) {
            return generate(generator, tokenizer, prompt, maxTokens, sampler, stream);
        }
    }

    /** The KV-cache decoder where the model can decode with one (every block type; not a top query layer), else recomputation over the context. */
    private static TokenGenerator generator(Gpt model, MemoryPool pool) {
        return Gpt.canDecode(model.config()) ? new CachedGenerator(model, pool) : new RecomputingGenerator(model, pool);
    }

    /** Feeds the prompt, streams whole characters of the continuation, returns what was not streamed yet. */
    private static String generate(TokenGenerator generator, Tokenizer tokenizer, String prompt, int maxTokens,
                                   TokenSampler sampler, java.util.function.Consumer<String> stream) {
        int[] promptTokens = tokenizer.encode(prompt);
        if (promptTokens.length == 0) promptTokens = new int[]{tokenizer.endOfText()};
        List<Integer> generated = new ArrayList<>();
        StringBuilder text = new StringBuilder();
        generator.generate(promptTokens, maxTokens, sampler, tokenizer.endOfText(), token -> {
            generated.add(token);
            String decoded = tokenizer.decode(generated.stream().mapToInt(Integer::intValue).toArray());
            // Print only whole characters: a token may end inside a multi-byte UTF-8 sequence.
            if (!decoded.endsWith("\uFFFD") && decoded.length() > text.length()) {
                stream.accept(decoded.substring(text.length()));
                text.setLength(0);
                text.append(decoded);
            }
        });
        String all = tokenizer.decode(generated.stream().mapToInt(Integer::intValue).toArray());
        return all.length() > text.length() ? all.substring(text.length()) : "";
    }
}
