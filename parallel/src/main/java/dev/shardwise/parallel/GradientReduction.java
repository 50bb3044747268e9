package dev.shardwise.parallel;

import dev.shardwise.core.tensor.Tensor;
import dev.shardwise.model.Gpt;

/**
 * How the gradients one rank computed become the gradients its model replica applies, and how per-rank
 * scalars (the loss) are combined: nothing on a single rank, an average over the data-parallel group under
 * data parallelism. The trainer calls it once per optimizer step, after the last micro-batch's backward.
 */
public interface GradientReduction {

    /** A single rank: gradients and scalars stay as they are. */
    GradientReduction NONE = new GradientReduction() {
        @Override
        public void reduce(Tensor grads) { }

        @Override
        public double mean(double value) {
            return value;
        }
    };

    /** Hooks the model must call for the reduction to overlap backward (see {@link dev.shardwise.model.optim.ParameterUpdate#hooks}). */
    default Gpt.Hooks hooks() {
        return Gpt.Hooks.NONE;
    }

    /** See {@link dev.shardwise.model.optim.ParameterUpdate#beginMicroBatch}. */
    default void beginMicroBatch(int index, int count) { }

    /** See {@link dev.shardwise.model.optim.ParameterUpdate#backward}. */
    default void backward(Runnable backward) {
        backward.run();
    }

    /** See {@link dev.shardwise.model.optim.ParameterUpdate#settle}. */
    default void settle() { }

    /** Replaces this rank's gradients, flat [P], by the ones the optimizer must apply. */
    void reduce(Tensor grads);

    /** The mean of {@code value} over the replicas (every rank gets the same result). */
    double mean(double value);
}
