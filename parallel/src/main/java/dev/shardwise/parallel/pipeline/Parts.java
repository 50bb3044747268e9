package dev.shardwise.parallel.pipeline;

/**
 * The chunk convention every builder, the validator and the executor share: the model is cut into v·p parts in
 * order; chunk {@code chunk} of stage {@code stage} is part {@code chunk·p + stage}. So part k's successor is on
 * stage (s + 1) mod p (as chunk c + 1 when s = p − 1) and its predecessor on stage (s − 1) mod p (as chunk c − 1
 * when s = 0). Part 0 reads the batch; part v·p − 1 ends in the loss.
 *
 * <p>Example, p = 4, v = 2 (8 parts): stage 0 holds parts 0 and 4, stage 1 parts 1 and 5, stage 3 parts 3 and 7;
 * part 3 (stage 3, chunk 0) sends its activation to part 4 (stage 0, chunk 1).
 */
final class Parts {
    private Parts() { }

    /** The model part chunk {@code chunk} of {@code stage} holds; 0 <= stage < p. */
    static int part(int p, int stage, int chunk) {
        return chunk * p + stage;
    }

    /** True when (stage, chunk) is part 0, whose input is the batch. */
    static boolean isFirst(int stage, int chunk) {
        return stage == 0 && chunk == 0;
    }

    /** True when (stage, chunk) is the last part, whose backward starts from the loss. */
    static boolean isLast(int p, int v, int stage, int chunk) {
        return stage == p - 1 && chunk == v - 1;
    }

    /** Stage of the next part (where activations go, and output gradients come from). */
    static int nextStage(int p, int stage) {
        return (stage + 1) % p;
    }

    /** Chunk of the next part on {@link #nextStage}. */
    static int nextChunk(int p, int stage, int chunk) {
        return stage == p - 1 ? chunk + 1 : chunk;
    }

    /** Stage of the previous part (where activations come from, and input gradients go). */
    static int previousStage(int p, int stage) {
        return (stage - 1 + p) % p;
    }

    /** Chunk of the previous part on {@link #previousStage}. */
    static int previousChunk(int stage, int chunk) {
        return stage == 0 ? chunk - 1 : chunk;
    }
}
