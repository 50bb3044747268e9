package dev.shardwise.data;

import com.knuddels.jtokkit.Encodings;
import com.knuddels.jtokkit.api.Encoding;
import com.knuddels.jtokkit.api.EncodingType;
import com.knuddels.jtokkit.api.IntArrayList;

import java.nio.charset.StandardCharsets;

/**
 * OpenAI's tiktoken encodings (GPT-2's r50k_base, cl100k_base) through jtokkit, whose jar carries the merge
 * ranks. Text is encoded as ordinary text (special-token strings are not recognised). Unpaired surrogates
 * cannot be represented in these encodings' UTF-8 and decode as U+FFFD; all other strings round-trip.
 */
final class TiktokenTokenizer implements Tokenizer {
    private final String name;
    private final Encoding encoding;
    private final int vocabSize;
    private final int endOfText;
    private final long fingerprint;

    private TiktokenTokenizer(String name, EncodingType type, int vocabSize, int endOfText) {
        this.name = name;
        this.encoding = Encodings.newLazyEncodingRegistry().getEncoding(type);
        this.vocabSize = vocabSize;
        this.endOfText = endOfText;
        this.fingerprint = ByteLevelBpe.leadingLong(
                ByteLevelBpe.sha256(("tiktoken:" + type.getName()).getBytes(StandardCharsets.UTF_8)));
    }

    /** GPT-2's encoding: 50,257 ids, {@code <|endoftext|>} = 50256 (Radford et al. 2019). */
    static TiktokenTokenizer gpt2() {
        return new TiktokenTokenizer("gpt2", EncodingType.R50K_BASE, 50257, 50256);
    }

    /**
     * cl100k_base (GPT-3.5/GPT-4): ids up to 100276 ({@code <|endofprompt|>}), {@code <|endoftext|>} = 100257;
     * the vocabulary size is 100277 as tiktoken reports it (a few ids in between are unused).
     */
    static TiktokenTokenizer cl100k() {
        return new TiktokenTokenizer("cl100k", EncodingType.CL100K_BASE, 100277, 100257);
    }

    @Override public String name() { return name; }
    @Override public int vocabSize() { return vocabSize; }
    @Override public int endOfText() { return endOfText; }
    @Override public long fingerprint() { return fingerprint; }

    @Override
    public int[] encode(String text) {
        return encoding.encodeOrdinary(text).toArray();
    }

    @Override
    public String decode(int[] tokens) {
        IntArrayList list = new IntArrayList(tokens.length);
        for (int t : tokens) {
            if (t < 0 || t >= vocabSize) {
                throw new IllegalArgumentException("token id " + t + " is outside [0, " + vocabSize
                        + ") of tokenizer " + name);
            }
            list.add(t);
        }
        byte[] bytes;
        try {
            bytes = encoding.decodeBytes(list);
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException("tokenizer " + name + " has no token for one of the ids: "
                    + e.getMessage(), e);
        }
        return Utf8.decode(bytes);
    }

    @Override
    public String toString() {
        return "TiktokenTokenizer[" + name + ", vocab " + vocabSize + "]";
    }
}
