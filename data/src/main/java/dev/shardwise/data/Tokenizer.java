package dev.shardwise.data;

/**
 * A text tokenizer: maps a string to token ids in {@code [0, vocabSize())} and back.
 *
 * <p>{@link #encode} treats its input as ordinary text: a literal {@code "<|endoftext|>"} in the text is
 * encoded as those characters, never as {@link #endOfText()}; data preparation appends the end-of-text id
 * itself after each document. Implementations are immutable and safe to use from several threads.
 *
 * <p>Built-in tokenizers come from {@link Tokenizers#named}, trained ones from {@link BpeTrainer}, saved ones
 * from {@link Tokenizers#load}.
 */
public interface Tokenizer {
    /** A short name, such as {@code gpt2}, {@code cl100k} or {@code bpe-8192}; stored in token file headers. */
    String name();

    /** Number of token ids, including special tokens; every id is in {@code [0, vocabSize())}. */
    int vocabSize();

    /** The id of {@code <|endoftext|>}, which separates documents. */
    int endOfText();

    /**
     * A 64-bit hash of everything that determines the ids (merges, special tokens, pre-tokenizer), stored in
     * token file headers so that a dataset can be checked against the tokenizer that will decode it.
     */
    long fingerprint();

    /** The token ids of {@code text}, which may be any string. */
    int[] encode(String text);

    /**
     * The text of {@code tokens}; byte sequences that are not valid UTF-8 (possible for an arbitrary slice of
     * ids) decode to U+FFFD.
     *
     * @throws IllegalArgumentException if an id is outside {@code [0, vocabSize())}
     */
    String decode(int[] tokens);
}
