package dev.shardwise.data;

import org.junit.jupiter.api.Assumptions;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;

/** Test corpora: slices of the shared data directory (found by walking up from the working directory). */
final class TestTexts {
    private TestTexts() {}

    /** The first {@code chars} characters (cut at a line end) of {@code shared/data/FILE}; skips if absent. */
    static String sharedSlice(String file, int chars) {
        Path found = null;
        for (Path dir = Path.of("").toAbsolutePath(); dir != null && found == null; dir = dir.getParent()) {
            Path p = dir.resolve("shared").resolve("data").resolve(file);
            if (Files.isRegularFile(p)) found = p;
        }
        Assumptions.assumeTrue(found != null, "shared/data/" + file + " not found above " + Path.of("").toAbsolutePath());
        try {
            String text = Files.readString(found);
            if (text.length() <= chars) return text;
            int cut = text.lastIndexOf('\n', chars);
            return text.substring(0, cut < 0 ? chars : cut + 1);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    /** The first {@code chars} characters (cut at a line end) of bundled tiny Shakespeare's training text. */
    static String shakespeare(int chars) {
        String text = BundledCorpus.tinyShakespeare().train().text();
        int cut = text.lastIndexOf('\n', chars);
        return text.substring(0, cut + 1);
    }
}
