package dev.shardwise.train;

import dev.shardwise.data.BundledCorpus;
import dev.shardwise.data.DatasetPreparer;
import dev.shardwise.data.DocSeparator;
import dev.shardwise.data.ProgressListener;
import dev.shardwise.data.TokenDataset;
import dev.shardwise.data.Tokenizer;
import dev.shardwise.data.Tokenizers;

import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Locale;

/**
 * The train and validation token files of a run and the tokenizer that wrote them: either a directory made by
 * {@code shardwise prepare}, or the bundled tiny Shakespeare, prepared (with a byte-level BPE tokenizer of the
 * model's vocabulary size) once into a cache directory and reused.
 */
public record TrainingData(Path directory, TokenDataset train, TokenDataset val, Tokenizer tokenizer) implements AutoCloseable {

    /** Where bundled corpora are prepared: {@code $SHARDWISE_CACHE}, else {@code ~/.cache/shardwise}. */
    public static Path cacheDirectory() {
        String env = System.getenv("SHARDWISE_CACHE");
        return env != null && !env.isBlank() ? Path.of(env) : Path.of(System.getProperty("user.home"), ".cache", "shardwise");
    }

    /**
     * Opens {@code directory}, or prepares the bundled tiny Shakespeare for a {@code vocabSize} tokenizer when
     * it is null.
     *
     * @throws IOException if files are missing or damaged (the message names the file and what to do)
     */
    public static TrainingData open(Path directory, int vocabSize, PrintStream log) throws IOException {
        Path dir = directory != null ? directory : bundledShakespeare(vocabSize, log);
        Path trainFile = dir.resolve(DatasetPreparer.TRAIN_FILE), valFile = dir.resolve(DatasetPreparer.VAL_FILE);
        for (Path f : List.of(trainFile, valFile)) {
            if (!Files.isRegularFile(f)) {
                throw new IOException(f + " does not exist; make it with: shardwise prepare INPUT.txt -o " + dir);
            }
        }
        TokenDataset train = TokenDataset.open(trainFile);
        TokenDataset val = TokenDataset.open(valFile);
        Path tokenizerFile = dir.resolve(DatasetPreparer.TOKENIZER_FILE);
        Tokenizer tokenizer = Files.isRegularFile(tokenizerFile) ? Tokenizers.load(tokenizerFile)
                : Tokenizers.named(train.tokenizerName());
        train.checkTokenizer(tokenizer);
        val.checkTokenizer(tokenizer);
        return new TrainingData(dir, train, val, tokenizer);
    }

    private static Path bundledShakespeare(int vocabSize, PrintStream log) throws IOException {
        Path dir = cacheDirectory().resolve("tinyshakespeare-bpe" + vocabSize);
        if (Files.isRegularFile(dir.resolve(DatasetPreparer.TRAIN_FILE)) && Files.isRegularFile(dir.resolve(DatasetPreparer.VAL_FILE))) {
            return dir;
        }
        log.printf("preparing the bundled tiny Shakespeare with a %d-token byte-level BPE tokenizer into %s (once)%n",
                vocabSize, dir);
        BundledCorpus.Corpus corpus = BundledCorpus.tinyShakespeare();
        ProgressListener progress = new ProgressListener() {
            private long lastPrint;

            @Override
            public void progress(String phase, long done, long total) {
                long now = System.nanoTime();
                if (now - lastPrint > 500_000_000L || done == total) {
                    lastPrint = now;
                    log.printf(Locale.ROOT, "\r  %s: %d/%d   ", phase, done, total);
                    log.flush();
                }
            }
        };
        DatasetPreparer.Summary summary = DatasetPreparer.prepare(new DatasetPreparer.Request(List.of(corpus.train()),
                new DatasetPreparer.ValSources(List.of(corpus.val())), DocSeparator.BLANK_LINE,
                new DatasetPreparer.TrainTokenizer(vocabSize), dir), progress);
        log.printf(Locale.ROOT, "%n  %d train tokens, %d val tokens (%.3f tokens/char) in %.1f s%n",
                summary.train().tokens(), summary.val().tokens(), summary.train().tokensPerChar(),
                summary.total().toMillis() / 1000.0);
        return dir;
    }

    @Override
    public void close() {
        train.close();
        val.close();
    }
}
