package dev.shardwise.parallel;

import dev.shardwise.model.Gpt;
import dev.shardwise.model.ParameterSet;

import java.util.concurrent.Callable;
import java.util.function.Consumer;

/**
 * Gradient reduction overlapped with the step's last backward (PyTorch DDP's reducer, Li et al. 2020): the model's
 * hooks run the last micro-batch's backward on a {@link PassOverlap} helper thread and hand each parameter unit it
 * finishes, whose gradients are then final for the step, to {@code unitDone}, which {@link #post}s the unit's
 * collectives to the rank thread while backward goes on with the units below. Earlier micro-batches' backward runs
 * on the rank thread, posting nothing.
 */
final class LastBackwardOverlap implements Gpt.Hooks, AutoCloseable {
    private final PassOverlap overlap;
    private final Consumer<ParameterSet.Unit> unitDone;
    private boolean lastMicroBatch = true;

    /** A helper thread named {@code threadName}; {@code unitDone} is called on it, once per unit, in the last backward. */
    LastBackwardOverlap(String threadName, Consumer<ParameterSet.Unit> unitDone) {
        this.overlap = new PassOverlap(threadName);
        this.unitDone = unitDone;
    }

    /** Micro-batch {@code index} of {@code count} begins: only the last one's backward overlaps. */
    void beginMicroBatch(int index, int count) {
        lastMicroBatch = index == count - 1;
    }

    /** The last micro-batch's backward runs on the helper thread while this (rank) thread runs the collectives it posts. */
    void backward(Runnable backward) {
        if (lastMicroBatch) overlap.run("backward", backward);
        else backward.run();
    }

    /**
     * True: a split backward (zero-bubble pipelines) calls {@link #afterBackward} in each pass's W, and the W's of
     * one model part run in micro-batch order, so the last micro-batch's call for a unit still comes after every
     * contribution to its gradient; nothing is bound between a unit's B and W.
     */
    @Override
    public boolean allowsDeferredWeightGradients() {
        return true;
    }

    @Override
    public void afterBackward(ParameterSet.Unit unit) {
        if (lastMicroBatch) unitDone.accept(unit);
    }

    /** Queues {@code collective} for the rank thread (from {@code unitDone}). */
    void post(Callable<?> collective) {
        overlap.post(collective);
    }

    /** Runs what is still queued: the exposed part of the overlapped communication. */
    void drain() {
        overlap.drain();
    }

    @Override
    public void close() {
        overlap.close();
    }
}
