package dev.shardwise.model.optim;

import dev.shardwise.core.tensor.Tensor;
import dev.shardwise.model.Gpt;
import dev.shardwise.model.Parameter;

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

    /**
     * Adds {@code delta} to {@code p}'s values, element i (row-major) by delta[i]: a change outside the optimizer,
     * such as loss-free balancing's routing bias after each step (its gradient stays 0, so AdamW leaves it alone).
     * Every rank of the group calls it with the same delta, after {@link #apply} and before the next pass; it is not
     * collective. Where the values are whole on every rank (ZeRO 0-2) each rank adds to all of them; where they are
     * sharded (ZeRO 3) each rank adds to the elements its shard holds, so the next gather sees the whole sum. The
     * float64 sum is rounded to the values' dtype, so every layout gets the same bits.
     *
     * @throws IllegalArgumentException if delta's length is not p's element count
     */
    default void addToValues(Parameter p, double[] delta) {
        addToWholeValues(p, delta);
    }

    /**
     * {@link #addToValues} where {@code p}'s values are whole on this rank.
     *
     * @throws IllegalArgumentException if delta's length is not p's element count
     * @throws IllegalStateException    if p's values are not on this rank (ZeRO 3 between uses)
     */
    static void addToWholeValues(Parameter p, double[] delta) {
        checkDelta(p, delta);
        Tensor v = p.value().view(Math.toIntExact(p.numel()));
        for (int i = 0; i < delta.length; i++) v.set(v.getDouble(i) + delta[i], i);
    }

    /** @throws IllegalArgumentException if delta's length is not p's element count */
    static void checkDelta(Parameter p, double[] delta) {
        if (delta.length != p.numel()) {
            throw new IllegalArgumentException("a change to parameter " + p.name() + " needs one value per element ("
                    + p.numel() + "), got " + delta.length);
        }
    }

    /** The mean of a per-rank scalar (the loss) over the replicas; the value itself on a single rank. */
    double mean(double value);

    /** Updates applied so far. */
    long steps();

    @Override
    void close();
}
