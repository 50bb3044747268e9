package dev.shardwise.cli;

import dev.shardwise.data.DatasetPreparer;
import dev.shardwise.data.DatasetPreparer.SplitSummary;
import dev.shardwise.data.DocSeparator;
import dev.shardwise.data.ProgressListener;
import dev.shardwise.data.TextSource;
import dev.shardwise.data.Tokenizers;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

import java.io.IOException;
import java.io.PrintWriter;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.Callable;

/** {@code shardwise prepare}: text files to memory-mappable train/val token files (and a trained tokenizer). */
@Command(name = "prepare", mixinStandardHelpOptions = true,
        description = {"Tokenize text files into memory-mapped train/val token files (optionally training a BPE tokenizer).",
                "Writes OUTDIR/train.tokens and OUTDIR/val.tokens (one <|endoftext|> after each document); with "
                        + "--train-tokenizer also learns a byte-level BPE tokenizer on the training text and saves it "
                        + "as OUTDIR/tokenizer.bpe.",
                "Outputs appear all at once or not at all."},
        footer = {"", "Examples:",
                "  shardwise prepare --tokenizer gpt2 corpus.txt -o data/corpus",
                "  shardwise prepare --train-tokenizer --vocab 8192 train.txt --val val.txt -o data/x", ""})
public final class PrepareCommand implements Callable<Integer> {
    @Parameters(paramLabel = "INPUT", arity = "1..*", description = "UTF-8 text files for training (in order).")
    List<Path> inputs;

    @Option(names = {"-o", "--output"}, paramLabel = "OUTDIR", required = true,
            description = "Output directory (created if missing).")
    Path outDir;

    @Option(names = "--tokenizer", paramLabel = "gpt2|cl100k|FILE",
            description = "Tokenizer to encode with: a built-in name or a tokenizer file (default: gpt2).")
    String tokenizer;

    @Option(names = "--train-tokenizer", description = "Train a byte-level BPE tokenizer on the training documents.")
    boolean trainTokenizer;

    @Option(names = "--vocab", paramLabel = "N",
            description = "Vocabulary size of the trained tokenizer, bytes and <|endoftext|> included (default: 8192).")
    Integer vocab;

    @Option(names = "--val-fraction", paramLabel = "F",
            description = "Fraction of the documents, taken from the end, that become validation data (default: 0.1).")
    Double valFraction;

    @Option(names = "--val", paramLabel = "FILE", description = "Validation text file(s) instead of --val-fraction.")
    List<Path> valFiles = new ArrayList<>();

    @Option(names = "--doc-separator", paramLabel = "blank-line|line|none", defaultValue = "blank-line",
            description = "How documents are separated: blank lines, every line, or one document per file "
                    + "(default: ${DEFAULT-VALUE}).")
    String docSeparator;

    @CommandLine.Spec
    CommandLine.Model.CommandSpec spec;

    @Override
    public Integer call() {
        PrintWriter out = spec.commandLine().getOut();
        PrintWriter err = spec.commandLine().getErr();
        try {
            DatasetPreparer.Request request = request();
            ProgressLine progress = new ProgressLine(err);
            DatasetPreparer.Summary s = DatasetPreparer.prepare(request, progress);
            progress.end();
            printSummary(out, s);
            return 0;
        } catch (IOException | IllegalArgumentException e) {
            err.println("shardwise prepare: " + e.getMessage());
            return 2;
        }
    }

    private DatasetPreparer.Request request() throws IOException {
        if (trainTokenizer && tokenizer != null) {
            throw new IllegalArgumentException("--tokenizer " + tokenizer + " and --train-tokenizer exclude each "
                    + "other; pass one");
        }
        if (vocab != null && !trainTokenizer) {
            throw new IllegalArgumentException("--vocab " + vocab + " only applies with --train-tokenizer");
        }
        if (valFraction != null && !valFiles.isEmpty()) {
            throw new IllegalArgumentException("--val-fraction " + valFraction + " and --val " + valFiles.getFirst()
                    + " exclude each other; pass one");
        }
        DocSeparator separator = DocSeparator.parse(docSeparator);
        List<TextSource> train = new ArrayList<>();
        for (Path p : inputs) train.add(TextSource.read(p));
        DatasetPreparer.ValSplit val;
        if (valFiles.isEmpty()) {
            val = new DatasetPreparer.ValFraction(valFraction == null ? 0.1 : valFraction);
        } else {
            List<TextSource> sources = new ArrayList<>();
            for (Path p : valFiles) sources.add(TextSource.read(p));
            val = new DatasetPreparer.ValSources(sources);
        }
        DatasetPreparer.TokenizerChoice choice = trainTokenizer
                ? new DatasetPreparer.TrainTokenizer(vocab == null ? 8192 : vocab)
                : new DatasetPreparer.UseTokenizer(Tokenizers.resolve(tokenizer == null ? "gpt2" : tokenizer));
        return new DatasetPreparer.Request(train, val, separator, choice, outDir);
    }

    private static void printSummary(PrintWriter out, DatasetPreparer.Summary s) {
        int vocab = s.tokenizer().vocabSize();
        String tok = s.tokenizerFile()
                .map(f -> " (trained in " + seconds(s.tokenizerTraining()) + ", saved to " + f + ")")
                .orElse("");
        out.printf(Locale.ROOT, "prepared in %s%n", seconds(s.total()));
        out.printf(Locale.ROOT, "  tokenizer  %s, vocab %,d%s, stored as uint%d%n", s.tokenizer().name(), vocab,
                tok, vocab <= 65536 ? 16 : 32);
        row(out, "train", s.train());
        row(out, "val", s.val());
        out.flush();
    }

    private static void row(PrintWriter out, String label, SplitSummary s) {
        out.printf(Locale.ROOT, "  %-9s  %,9d documents  %,11d tokens  %,11d chars  %.3f tokens/char  -> %s%n",
                label, s.documents(), s.tokens(), s.characters(), s.tokensPerChar(), s.file());
    }

    private static String seconds(Duration d) {
        return String.format(Locale.ROOT, "%.2f s", d.toNanos() / 1e9);
    }

    /** Rewrites one line on stderr at most every 200 ms. */
    private static final class ProgressLine implements ProgressListener {
        private final PrintWriter err;
        private long lastNanos;
        private boolean shown;

        ProgressLine(PrintWriter err) {
            this.err = err;
        }

        @Override
        public void progress(String phase, long done, long total) {
            long now = System.nanoTime();
            if (done != total && now - lastNanos < 200_000_000L) return;
            lastNanos = now;
            String pct = total > 0 ? String.format(Locale.ROOT, " (%.0f%%)", 100.0 * done / total) : "";
            err.print("\r" + phase + ": " + done + (total >= 0 ? " / " + total : "") + pct + "    ");
            err.flush();
            shown = true;
        }

        void end() {
            if (shown) {
                err.println();
                err.flush();
            }
        }
    }
}
