package dev.shardwise.data;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.List;

/** Finds tokenizers: the built-in encodings by name, and tokenizer files saved by {@link ByteLevelBpe#save}. */
public final class Tokenizers {
    /** Names {@link #named} accepts. */
    public static final List<String> BUILT_IN = List.of("gpt2", "cl100k");

    private Tokenizers() {}

    /**
     * A built-in tokenizer: {@code gpt2} (also {@code r50k_base}; vocab 50257, {@code <|endoftext|>} = 50256)
     * or {@code cl100k} (also {@code cl100k_base}; vocab 100277, {@code <|endoftext|>} = 100257).
     *
     * @throws IllegalArgumentException for any other name; the message lists the known ones
     */
    public static Tokenizer named(String name) {
        return switch (name) {
            case "gpt2", "r50k_base" -> TiktokenTokenizer.gpt2();
            case "cl100k", "cl100k_base" -> TiktokenTokenizer.cl100k();
            default -> throw new IllegalArgumentException("unknown tokenizer '" + name + "'; built-in ones are "
                    + String.join(", ", BUILT_IN) + ", or pass the path of a tokenizer file");
        };
    }

    /**
     * Reads a tokenizer file written by {@link ByteLevelBpe#save}, checking its magic line, version and checksum.
     *
     * @throws IOException if the file cannot be read or is not a valid tokenizer file; the message names the
     *     file and what is wrong with it
     */
    public static ByteLevelBpe load(Path file) throws IOException {
        byte[] bytes;
        try {
            bytes = Files.readAllBytes(file);
        } catch (NoSuchFileException e) {
            throw new IOException("tokenizer file " + file + " does not exist; pass a built-in name ("
                    + String.join(", ", BUILT_IN) + ") or a file written by shardwise prepare --train-tokenizer", e);
        }
        int eol = 0;
        while (eol < bytes.length && eol < 64 && bytes[eol] != '\n') eol++;
        String first = new String(bytes, 0, eol, java.nio.charset.StandardCharsets.UTF_8);
        if (!first.equals(ByteLevelBpe.MAGIC)) {
            String what = first.startsWith("shardwise-tokenizer ")
                    ? "it has format version '" + first.substring(20) + "', this Shardwise reads version 1"
                    : "it does not start with '" + ByteLevelBpe.MAGIC + "'";
            throw new IOException("tokenizer file " + file + " cannot be read: " + what
                    + "; pass a file written by shardwise prepare --train-tokenizer");
        }
        return ByteLevelBpe.fromBytes(bytes, file);
    }

    /**
     * A built-in tokenizer if {@code nameOrPath} is one of {@link #BUILT_IN} (or their tiktoken names), else the
     * tokenizer file at that path.
     *
     * @throws IOException if it is neither a built-in name nor a readable tokenizer file
     */
    public static Tokenizer resolve(String nameOrPath) throws IOException {
        return switch (nameOrPath) {
            case "gpt2", "r50k_base", "cl100k", "cl100k_base" -> named(nameOrPath);
            default -> load(Path.of(nameOrPath));
        };
    }
}
