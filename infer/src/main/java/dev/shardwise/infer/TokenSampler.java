package dev.shardwise.infer;

import java.util.Arrays;
import java.util.SplittableRandom;

/**
 * Picks the next token from logits: temperature scaling, then top-k (Fan et al. 2018) and top-p / nucleus
 * (Holtzman et al. 2020) truncation, then a draw from a seeded generator. Temperature 0 is greedy (argmax).
 * Not thread-safe (it owns a random generator).
 */
public final class TokenSampler {
    private final double temperature;
    private final int topK;
    private final double topP;
    private final SplittableRandom random;

    /**
     * @param temperature >= 0; 0 means greedy
     * @param topK        keep the k most likely tokens (0: all)
     * @param topP        keep the smallest set whose probability reaches p (1: all)
     * @param seed        seeds the draws
     * @throws IllegalArgumentException naming a value out of range
     */
    public TokenSampler(double temperature, int topK, double topP, long seed) {
        if (!(temperature >= 0)) throw new IllegalArgumentException("--temperature must be >= 0, got " + temperature);
        if (topK < 0) throw new IllegalArgumentException("--top-k must be >= 0 (0 keeps all tokens), got " + topK);
        if (!(topP > 0 && topP <= 1)) throw new IllegalArgumentException("--top-p must be in (0, 1], got " + topP);
        this.temperature = temperature;
        this.topK = topK;
        this.topP = topP;
        this.random = new SplittableRandom(seed);
    }

    /** The next token id given {@code logits} [V]. */
    public int sample(float[] logits) {
        int v = logits.length;
        if (temperature == 0) {
            int best = 0;
            for (int i = 1; i < v; i++) if (logits[i] > logits[best]) best = i;
            return best;
        }
        Integer[] order = new Integer[v];
        for (int i = 0; i < v; i++) order[i] = i;
        Arrays.sort(order, (a, b) -> Float.compare(logits[b], logits[a]));   // most likely first; stable for ties
        int keep = topK > 0 ? Math.min(topK, v) : v;
        double max = logits[order[0]];
        double[] probs = new double[keep];
        double sum = 0;
        for (int i = 0; i < keep; i++) {
            probs[i] = Math.exp((logits[order[i]] - max) / temperature);
            sum += probs[i];
        }
        double cumulative = 0;
        int nucleus = keep;
        for (int i = 0; i < keep; i++) {
            cumulative += probs[i] / sum;
            if (cumulative >= topP) {
                nucleus = i + 1;
                break;
            }
        }
        double total = 0;
        for (int i = 0; i < nucleus; i++) total += probs[i];
        double r = random.nextDouble() * total;
        for (int i = 0; i < nucleus; i++) {
            r -= probs[i];
            if (r < 0) return order[i];
        }
        return order[nucleus - 1];
    }
}
