package dev.shardwise.model.optim;

import dev.shardwise.model.Gpt;

import java.util.function.Supplier;

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

    /**
     * What the model must call around each parameter unit for this update to work (ZeRO 2 and 3 gather and
     * reduce unit by unit; overlapped data parallelism starts reductions as units finish backward); install with
     * {@link Gpt#useHooks}. None by default.
     */
    default Gpt.Hooks hooks() {
        return Gpt.Hooks.NONE;
    }

    /**
     * Micro-batch {@code index} of {@code count} of the next update is about to run forward (gradient
     * accumulation: reductions may wait for the last one). Nothing by default.
     */
    default void beginMicroBatch(int index, int count) { }

    /**
     * Runs {@code forward} (the model's training forward pass for one micro-batch) and returns its result; an update
     * that gathers parameters unit by unit (ZeRO stage 3) runs it on a helper thread while this thread gathers the
     * next unit. At once by default.
     */
    default <T> T forward(Supplier<T> forward) {
        return forward.get();
    }

    /**
     * Runs {@code backward} (the model's backward pass for one micro-batch); an update that overlaps its gradient
     * communication with backward runs it on a helper thread while this thread communicates. At once by default.
     */
    default void backward(Runnable backward) {
        backward.run();
    }

    /**
     * Runs, on this thread, the collectives the last pass posted that are still queued (an overlapped reduction's
     * last buckets, ZeRO's last reduce-scatters and prefetched gathers). A pipeline stage calls it after each pass,
     * before it may block on another group (a receive from a neighbouring stage): a collective one data-parallel
     * peer has started and another has left queued would otherwise wait across stages in a cycle. Nothing by default.
     */
    default void settle() { }

    /** The mean of a per-rank scalar (the loss) over the replicas; the value itself on a single rank. */
    double mean(double value);

    /** Updates applied so far. */
    long steps();

    @Override
    void close();
}
