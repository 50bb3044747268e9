package dev.shardwise.data;

import java.io.IOException;
import java.nio.file.FileAlreadyExistsException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Objects;
import java.util.Optional;

/**
 * Turns texts into training and validation token files ({@link TokenDataset} format): cut each text into
 * documents, optionally train a byte-level BPE tokenizer on the training documents, encode every document
 * followed by end-of-text, and write {@value #TRAIN_FILE}, {@value #VAL_FILE} and, for a trained tokenizer,
 * {@value #TOKENIZER_FILE} into the output directory.
 *
 * <p>All or nothing: outputs are written to temporary files in the output directory, forced to disk, and
 * renamed into place only when every one is complete. On any error the temporary files, and output
 * directories this call created, are removed, so no partial output is left behind; files that existed
 * before are untouched.
 */
public final class DatasetPreparer {
    public static final String TRAIN_FILE = "train.tokens";
    public static final String VAL_FILE = "val.tokens";
    public static final String TOKENIZER_FILE = "tokenizer.bpe";

    private DatasetPreparer() {}

    /** Which tokenizer encodes the documents. */
    public sealed interface TokenizerChoice permits UseTokenizer, TrainTokenizer {}

    /** Encode with an existing tokenizer. */
    public record UseTokenizer(Tokenizer tokenizer) implements TokenizerChoice {
        public UseTokenizer {
            Objects.requireNonNull(tokenizer, "tokenizer");
        }
    }

    /** Train a {@link ByteLevelBpe} of {@code vocabSize} ids on the training documents, and save it. */
    public record TrainTokenizer(int vocabSize) implements TokenizerChoice {
        public TrainTokenizer {
            if (vocabSize < 257 || vocabSize > 1 << 20) {
                throw new IllegalArgumentException("tokenizer vocab size " + vocabSize
                        + " must be in [257, 1048576]; try 1024 to 32768");
            }
        }
    }

    /** Where the validation documents come from. */
    public sealed interface ValSplit permits ValFraction, ValSources {}

    /** The last {@code fraction} of the training documents (at least one), in order, become validation data. */
    public record ValFraction(double fraction) implements ValSplit {
        public ValFraction {
            if (!(fraction > 0 && fraction < 1)) {
                throw new IllegalArgumentException("validation fraction " + fraction
                        + " must be in (0, 1), e.g. 0.1; or pass a separate validation file");
            }
        }
    }

    /** Validation documents from their own texts. */
    public record ValSources(List<TextSource> sources) implements ValSplit {
        public ValSources {
            sources = List.copyOf(sources);
            if (sources.isEmpty()) throw new IllegalArgumentException("no validation text given");
        }
    }

    /**
     * What to prepare.
     *
     * @param train     training texts, in order
     * @param val       where validation documents come from
     * @param separator how texts are cut into documents
     * @param tokenizer which tokenizer to use or train
     * @param outDir    output directory, created if missing
     */
    public record Request(List<TextSource> train, ValSplit val, DocSeparator separator, TokenizerChoice tokenizer,
                          Path outDir) {
        public Request {
            train = List.copyOf(train);
            if (train.isEmpty()) throw new IllegalArgumentException("no input text given; pass at least one file");
            Objects.requireNonNull(val, "val");
            Objects.requireNonNull(separator, "separator");
            Objects.requireNonNull(tokenizer, "tokenizer");
            Objects.requireNonNull(outDir, "outDir");
        }
    }

    /**
     * Figures for one written token file.
     *
     * @param file       the token file
     * @param documents  documents written
     * @param tokens     tokens written, including one end-of-text per document
     * @param characters Unicode code points in the documents' text
     */
    public record SplitSummary(Path file, long documents, long tokens, long characters) {
        /** Text tokens (end-of-text excluded) per character. */
        public double tokensPerChar() {
            return characters == 0 ? 0 : (double) (tokens - documents) / characters;
        }
    }

    /**
     * What {@link #prepare} did.
     *
     * @param tokenizerFile     where the trained tokenizer was saved, if one was trained
     * @param tokenizerTraining time spent training it (zero if none)
     * @param total             wall time of the whole call
     */
    public record Summary(SplitSummary train, SplitSummary val, Tokenizer tokenizer, Optional<Path> tokenizerFile,
                          Duration tokenizerTraining, Duration total) {}

    /**
     * Prepares the token files described by {@code request}.
     *
     * @param progress told about phases {@code "bpe merges"} and {@code "encoding"} (documents done)
     * @throws IOException if the output cannot be written; nothing is left behind
     * @throws IllegalArgumentException if the inputs hold no documents or the split leaves one side empty
     */
    public static Summary prepare(Request request, ProgressListener progress) throws IOException {
        long t0 = System.nanoTime();
        List<String> trainDocs = new ArrayList<>();
        for (TextSource s : request.train()) trainDocs.addAll(request.separator().split(s.text()));
        if (trainDocs.isEmpty()) {
            throw new IllegalArgumentException("inputs " + names(request.train()) + " contain no documents "
                    + "(only blank lines?); pass files with text");
        }
        List<String> valDocs;
        switch (request.val()) {
            case ValFraction(double f) -> {
                int n = trainDocs.size();
                int k = Math.max(1, (int) Math.round(f * n));
                if (k >= n) {
                    throw new IllegalArgumentException("validation fraction " + f + " of " + n + " document"
                            + (n == 1 ? "" : "s") + " leaves no training documents (document separator '"
                            + request.separator() + "'); pass a separate validation file, use a smaller fraction, "
                            + "or a separator that finds more documents");
                }
                valDocs = new ArrayList<>(trainDocs.subList(n - k, n));
                trainDocs = new ArrayList<>(trainDocs.subList(0, n - k));
            }
            case ValSources(List<TextSource> sources) -> {
                valDocs = new ArrayList<>();
                for (TextSource s : sources) valDocs.addAll(request.separator().split(s.text()));
                if (valDocs.isEmpty()) {
                    throw new IllegalArgumentException("validation inputs " + names(sources)
                            + " contain no documents; pass files with text");
                }
            }
        }

        Tokenizer tokenizer;
        Duration training = Duration.ZERO;
        switch (request.tokenizer()) {
            case UseTokenizer(Tokenizer t) -> tokenizer = t;
            case TrainTokenizer(int vocab) -> {
                long s = System.nanoTime();
                tokenizer = BpeTrainer.train(trainDocs, vocab, progress);
                training = Duration.ofNanos(System.nanoTime() - s);
            }
        }

        Path outDir = request.outDir();
        Path firstCreated = createDirectories(outDir);
        List<AtomicFiles.Move> moves = new ArrayList<>();
        boolean committed = false;
        TokenFileWriter trainWriter = null;
        TokenFileWriter valWriter = null;
        try {
            long total = trainDocs.size() + valDocs.size();
            trainWriter = new TokenFileWriter(outDir.resolve(TRAIN_FILE), tokenizer);
            long trainChars = write(trainWriter, trainDocs, tokenizer, progress, 0, total);
            valWriter = new TokenFileWriter(outDir.resolve(VAL_FILE), tokenizer);
            long valChars = write(valWriter, valDocs, tokenizer, progress, trainDocs.size(), total);
            SplitSummary train = new SplitSummary(trainWriter.target(), trainWriter.documents(),
                    trainWriter.tokens(), trainChars);
            SplitSummary val = new SplitSummary(valWriter.target(), valWriter.documents(), valWriter.tokens(),
                    valChars);
            moves.add(trainWriter.finish());
            moves.add(valWriter.finish());
            Optional<Path> tokenizerFile = Optional.empty();
            if (tokenizer instanceof ByteLevelBpe bpe && request.tokenizer() instanceof TrainTokenizer) {
                Path file = outDir.resolve(TOKENIZER_FILE);
                moves.add(AtomicFiles.writeTemp(file, bpe.toBytes()));
                tokenizerFile = Optional.of(file);
            }
            AtomicFiles.commit(moves);
            committed = true;
            return new Summary(train, val, tokenizer, tokenizerFile, training,
                    Duration.ofNanos(System.nanoTime() - t0));
        } finally {
            if (!committed) {
                try {
                    if (trainWriter != null) trainWriter.close();
                    if (valWriter != null) valWriter.close();
                    for (AtomicFiles.Move m : moves) Files.deleteIfExists(m.temp());
                } catch (IOException e) {
                    // Keep the original error; a temp file that could not be deleted is named .*.tmp.
                }
                removeCreated(firstCreated, outDir);
            }
        }
    }

    private static long write(TokenFileWriter w, List<String> docs, Tokenizer tokenizer, ProgressListener progress,
                              long doneBefore, long total) throws IOException {
        long chars = 0;
        for (int i = 0; i < docs.size(); i++) {
            String doc = docs.get(i);
            w.addDocument(tokenizer.encode(doc));
            chars += doc.codePointCount(0, doc.length());
            if ((i & 255) == 0) progress.progress("encoding", doneBefore + i, total);
        }
        progress.progress("encoding", doneBefore + docs.size(), total);
        return chars;
    }

    /** Creates {@code dir} and missing parents; returns the topmost directory created, or null if none. */
    private static Path createDirectories(Path dir) throws IOException {
        Path abs = dir.toAbsolutePath();
        Path firstMissing = null;
        for (Path p = abs; p != null && !Files.exists(p); p = p.getParent()) firstMissing = p;
        if (Files.exists(abs) && !Files.isDirectory(abs)) {
            throw new IOException("output " + dir + " exists and is not a directory; choose another -o");
        }
        try {
            Files.createDirectories(abs);
        } catch (FileAlreadyExistsException e) {
            throw new IOException("cannot create output directory " + dir + ": " + e.getFile()
                    + " is a file, not a directory; choose another -o", e);
        } catch (IOException e) {
            String why = e instanceof java.nio.file.FileSystemException f && f.getReason() != null
                    ? f.getFile() + ": " + f.getReason() : e.toString();
            throw new IOException("cannot create output directory " + dir + " (" + why + "); choose another -o "
                    + "or fix the permissions of its parent", e);
        }
        return firstMissing;
    }

    /** Deletes the directories this call created, from {@code dir} up to {@code top}, while they are empty. */
    private static void removeCreated(Path top, Path dir) {
        if (top == null) return;
        try {
            for (Path p = dir.toAbsolutePath(); p != null && p.startsWith(top); p = p.getParent()) {
                if (!Files.isDirectory(p)) continue;
                try (var entries = Files.list(p)) {
                    if (entries.findAny().isPresent()) return;
                }
                Files.delete(p);
            }
        } catch (IOException e) {
            // Best effort: the original error matters more than an empty directory left behind.
        }
    }

    private static String names(List<TextSource> sources) {
        return String.join(", ", sources.stream().map(TextSource::name).toList());
    }
}
