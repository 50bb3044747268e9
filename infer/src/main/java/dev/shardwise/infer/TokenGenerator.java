package dev.shardwise.infer;

import java.util.ArrayList;
import java.util.List;
import java.util.function.IntConsumer;

/** Autoregressive decoding: feed tokens one at a time, get the logits for the next position. */
public interface TokenGenerator extends AutoCloseable {

    /** Appends {@code token} at the next position and returns the logits [V] for the position after it. */
    float[] feed(int token);

    /**
     * Appends {@code tokens} in order and returns the logits [V] for the position after the last (one at a time here;
     * a generator may feed them at once).
     *
     * @throws IllegalArgumentException if tokens is empty
     */
    default float[] feed(int[] tokens) {
        if (tokens.length == 0) throw new IllegalArgumentException("no tokens to feed; give at least one");
        float[] next = null;
        for (int token : tokens) next = feed(token);
        return next;
    }

    /**
     * Feeds {@code prompt} ({@link #feed(int[])}), then samples up to {@code maxNewTokens} tokens, passing each to {@code onToken};
     * stops early at {@code stopToken} (not emitted; -1 for none).
     *
     * @return the new tokens
     * @throws IllegalArgumentException if the prompt is empty
     */
    default List<Integer> generate(int[] prompt, int maxNewTokens, TokenSampler sampler, int stopToken, IntConsumer onToken) {
        if (prompt.length == 0) throw new IllegalArgumentException("the prompt is empty; give at least one token");
        float[] next = feed(prompt);
        List<Integer> out = new ArrayList<>();
        for (int i = 0; i < maxNewTokens; i++) {
            int token = sampler.sample(next);
            if (token == stopToken) break;
            out.add(token);
            onToken.accept(token);
            next = feed(token);
        }
        return out;
    }

    @Override
    void close();
}
