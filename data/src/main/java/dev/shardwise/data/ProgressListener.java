package dev.shardwise.data;

/**
 * Receives progress of long data work (tokenizer training, encoding), for a progress line. Called on the
 * working thread; implementations should return quickly.
 */
@FunctionalInterface
public interface ProgressListener {
    /** A listener that ignores everything. */
    ProgressListener NONE = (phase, done, total) -> {};

    /**
     * @param phase what is running, e.g. {@code "bpe merges"}
     * @param done  units done so far
     * @param total units in all, or -1 if unknown
     */
    void progress(String phase, long done, long total);
}
