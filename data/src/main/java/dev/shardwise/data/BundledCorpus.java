package dev.shardwise.data;

import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;

/**
 * Corpora shipped inside the {@code shardwise-data} jar, so that demos and tests run without downloads.
 * See {@code dev/shardwise/data/corpora/README.md} in the resources for sources, licenses and checksums.
 */
public final class BundledCorpus {
    private static final String DIR = "/dev/shardwise/data/corpora/";

    private BundledCorpus() {}

    /**
     * A corpus split into training and validation text.
     *
     * @param name  short name, e.g. {@code tinyshakespeare}
     * @param train training text
     * @param val   validation text
     */
    public record Corpus(String name, TextSource train, TextSource val) {}

    /**
     * Tiny Shakespeare (karpathy/char-rnn, 1,115,394 ASCII characters of Shakespeare's plays, public-domain
     * text): the first 36,000 lines as training text, the last 4,000 lines as validation text.
     *
     * @throws UncheckedIOException if the resources are missing from the class path (a broken build)
     */
    public static Corpus tinyShakespeare() {
        return new Corpus("tinyshakespeare",
                new TextSource("bundled:tinyshakespeare.train.txt", resource("tinyshakespeare.train.txt")),
                new TextSource("bundled:tinyshakespeare.val.txt", resource("tinyshakespeare.val.txt")));
    }

    private static String resource(String file) {
        try (InputStream in = BundledCorpus.class.getResourceAsStream(DIR + file)) {
            if (in == null) {
                throw new UncheckedIOException(new IOException("resource " + DIR + file + " is not on the class "
                        + "path; rebuild shardwise-data (./mvnw -pl data package)"));
            }
            return new String(in.readAllBytes(), StandardCharsets.UTF_8);
        } catch (IOException e) {
            throw new UncheckedIOException("cannot read bundled corpus " + DIR + file, e);
        }
    }
}
