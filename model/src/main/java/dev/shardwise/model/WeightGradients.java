package dev.shardwise.model;

import java.util.ArrayList;
import java.util.List;

/**
 * The weight-gradient half of one backward pass, W in zero-bubble pipeline parallelism (Qi et al. 2023): the work
 * the input-gradient half B (dx = dy·W through every layer) leaves for later, queued in the order B reached it and
 * run in that order by {@link #run}. A layer's backward takes a queue, or null to do its weight-gradient work at
 * once (the whole backward); {@link #defer} is the one place that choice is made.
 *
 * <p>What is queued: every {@link Linear}'s dW += dyᵀ·x and db += Σ_rows dy, the tied head's dwte += dlogitsᵀ·h,
 * the scatter-adds of the embeddings (wte, wpe, the top query layer's E_q), and the hook calls that say a unit's
 * gradients are complete. The norms' dγ and dβ stay in B: their kernels produce them in the same pass over the rows
 * as dx, and they cost O(N·C) against the O(N·C·C') of a dW GEMM. Each queued step reads only tensors B leaves in
 * the pass's arena (dy, x), which stay valid, unchanged, until the arena is reset; and no parameter is written both
 * by B and by W, so running W later changes no gradient bit provided the passes' W's run in the order their whole
 * backwards would have (each parameter then gets the same additions in the same order).
 *
 * <p>Not thread-safe: B fills it and W runs it on one thread, one after the other.
 */
final class WeightGradients {
    private final List<Runnable> steps = new ArrayList<>();
    private boolean ran;

    /**
     * Runs {@code step} now when {@code weights} is null (the whole backward), else queues it on {@code weights}.
     * The step must read only tensors that stay unchanged until the queue runs.
     */
    static void defer(WeightGradients weights, Runnable step) {
        if (weights == null) {
            step.run();
        } else {
            if (weights.ran) throw new IllegalStateException("the weight-gradient half already ran; nothing may be queued after it");
            weights.steps.add(step);
        }
    }

    /**
     * Runs every queued step in queue order; once.
     *
     * @throws IllegalStateException if it already ran
     */
    void run() {
        if (ran) throw new IllegalStateException("the weight-gradient half of this pass already ran");
        ran = true;
        for (Runnable step : steps) step.run();
        steps.clear();
    }

    /** Steps queued and not yet run. */
    int pending() {
        return steps.size();
    }
}
