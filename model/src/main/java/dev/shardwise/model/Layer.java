package dev.shardwise.model;

import dev.shardwise.core.memory.StepArena;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;

/**
 * A layer with explicit forward and backward (llm.c's style), x [N, C] -> y [N, C'] over the N = B·T rows of a
 * micro-batch: {@link #forward} computes y and returns it inside what {@link #backward} reads ({@code S}), and
 * {@link #backward} turns the gradient of the loss with respect to y into the gradient with respect to x.
 *
 * <p>The gradient rule is the same for every layer: backward WRITES dx (its old contents are never read, so a
 * caller may allocate it with {@link StepArena#allocateForOverwrite} and it may hold garbage) and ACCUMULATES
 * ({@code +=}) into the gradient buffer of every parameter it uses; zeroing the parameter gradients is the
 * training loop's business. A layer whose input gradient must be added onto another (a residual stream) either
 * adds it afterwards or offers a fused variant of its own ({@link Norm#backwardOnto}).
 *
 * <p>Memory: forward allocates what it saves in the caller's {@code arena}; the saved tensors belong to that arena
 * and stay valid until it is reset or closed, so the caller keeps the arena open from forward to the matching
 * backward and keeps x unchanged in between. Backward allocates its temporaries in the arena it is given (or in a
 * scratch arena of its own that it closes before returning). A layer with a {@link Recompute} policy keeps less
 * than this in the arena and rebuilds the rest inside backward; its results are bit-identical either way. Layers
 * are not thread-safe: one layer instance runs on one rank's training thread.
 *
 * @param <S> what forward saves for backward
 */
interface Layer<S extends Layer.Saved> {

    /** What a layer's forward leaves for its backward; {@link #out()} is the layer's output y. */
    interface Saved {
        /** The layer's output y [N, C'], allocated in the forward's arena. */
        Tensor out();
    }

    /**
     * The rows a layer runs over: B sequences of T positions, flattened into N = B·T rows in sequence-major
     * order (row n is position n mod T of sequence n / T). Under sequence parallelism (Korthikanti et al. 2022) a
     * layer's x and y hold this rank's T/tp positions of each sequence, [B·T/tp, C] in the same order, while B and T
     * here (and positions) stay the whole micro-batch's.
     *
     * @param b         B, sequences in the micro-batch
     * @param t         T, positions per sequence
     * @param positions i32 [B·T], the position each row predicts from (the top query layer's E_q rows), or null
     *                  when no layer that runs over these rows reads positions
     */
    record Rows(int b, int t, Tensor positions) {
        /**
         * @throws IllegalArgumentException if B or T is not positive, or positions is not i32 [B·T]
         */
        public Rows {
            if (b <= 0 || t <= 0) throw new IllegalArgumentException("rows need B > 0 and T > 0, got B=" + b + ", T=" + t);
            if (positions != null && (positions.dtype() != DType.I32 || positions.numel() != (long) b * t)) {
                throw new IllegalArgumentException("positions must be i32 [B·T] = [" + b * t + "], got " + positions.describe());
            }
        }

        /** B·T rows without positions (the blocks do not read them: rotary positions are implied by T). */
        static Rows of(int b, int t) {
            return new Rows(b, t, null);
        }

        /** N = B·T. */
        int n() {
            return b * t;
        }
    }

    /**
     * x [N, C] -> y [N, C'], returned inside what backward reads; everything it saves is allocated in
     * {@code arena}.
     */
    S forward(StepArena arena, Tensor x, Rows rows);

    /**
     * Writes dx [N, C] (not read; may hold garbage) and accumulates every parameter gradient of the layer, from
     * dy [N, C']. Reads x, which must be the tensor forward read, unchanged, and {@code saved}, which must come
     * from this layer's forward over the same rows, with its arena still open. Temporaries go in {@code arena}.
     */
    default void backward(StepArena arena, Tensor dx, Tensor dy, Tensor x, Rows rows, S saved) {
        backward(arena, dx, dy, x, rows, saved, null);
    }

    /**
     * As {@link #backward(StepArena, Tensor, Tensor, Tensor, Rows, Saved)}, split for zero-bubble pipelines (Qi et
     * al. 2023): writes dx now and queues the weight-gradient work on {@code weights} (null: does it now, the
     * whole backward). What the queued work reads (dy, x, temporaries) is then kept in {@code arena}, never in a
     * scratch arena closed before returning, unless the layer runs that work itself before closing it; dy and x
     * must stay unchanged until the queue runs. Either way the gradients come out bit-identical.
     */
    void backward(StepArena arena, Tensor dx, Tensor dy, Tensor x, Rows rows, S saved, WeightGradients weights);
}
