package dev.shardwise.model.optim;

/**
 * The step from this rank's accumulated gradients to updated parameters: gradient reduction over replicas (if
 * any), global-norm clipping and the optimizer, however they are distributed (replicated AdamW, ZeRO).
 * Called once per optimizer step, after the last micro-batch's backward; every rank of a group calls it.
 */
public interface ParameterUpdate extends AutoCloseable {

    /**
     * What one update did.
     *
     * @param gradNorm        global gradient norm before clipping
     * @param communicationNs time in collectives (the exposed grads-reduce time)
     */
    record Applied(double gradNorm, long communicationNs) { }

    /**
     * Updates the parameters with learning rate {@code lr}, first clipping the global gradient norm to
     * {@code maxNorm} (no clipping when {@code maxNorm <= 0}).
     *
     * @throws IllegalStateException if the gradient norm is not finite; the parameters are then left unchanged
     */
    Applied apply(double lr, double maxNorm);

    /** The mean of a per-rank scalar (the loss) over the replicas; the value itself on a single rank. */
    double mean(double value);

    /** Updates applied so far. */
    long steps();

    @Override
    void close();
}
