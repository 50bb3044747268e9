package dev.shardwise.data;

import java.util.concurrent.atomic.AtomicInteger;

/**
 * A tokenizer for tests: one token per char ({@code c mod (vocab - 1)}), end-of-text = vocab - 1; optionally
 * throws when asked to encode its {@code failOnCall}-th text (0-based).
 */
final class FakeTokenizer implements Tokenizer {
    private final int vocabSize;
    private final int failOnCall;
    private final AtomicInteger calls = new AtomicInteger();

    FakeTokenizer(int vocabSize) {
        this(vocabSize, -1);
    }

    FakeTokenizer(int vocabSize, int failOnCall) {
        this.vocabSize = vocabSize;
        this.failOnCall = failOnCall;
    }

    @Override public String name() { return "fake-" + vocabSize; }
    @Override public int vocabSize() { return vocabSize; }
    @Override public int endOfText() { return vocabSize - 1; }
    @Override public long fingerprint() { return 1000 + vocabSize; }

    @Override
    public int[] encode(String text) {
        if (calls.getAndIncrement() == failOnCall) {
            throw new IllegalStateException("fake tokenizer fails on call " + failOnCall);
        }
        return text.chars().map(c -> c % (vocabSize - 1)).toArray();
    }

    @Override
    public String decode(int[] tokens) {
        StringBuilder sb = new StringBuilder();
        for (int t : tokens) sb.append((char) t);
        return sb.toString();
    }
}
