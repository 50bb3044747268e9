package dev.shardwise.core.kernels;

import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;

import java.lang.foreign.ValueLayout;

/**
 * Cross-entropy of a softmax over the vocabulary, fused with its backward: per row,
 * {@code loss = logsumexp(logits) - logits[target]} and {@code dlogits = (softmax(logits) - onehot(target)) · scale}.
 *
 * <p>Shapes: {@code logits [N, V]} (any leading dimensions flattened into N; rows may be padded, i.e. a row
 * stride larger than V), {@code targets [N]} (i32), {@code losses [N]}, {@code dlogits} the shape of logits.
 * A target of {@value #IGNORE_INDEX} marks a row to ignore: its loss is 0 and its gradient row is 0.
 * F32 tensors take the Vector API path, F64 tensors a plain float64 reference; all float arguments share
 * one dtype.
 *
 * <p>The fused {@link #forwardBackward} reads each logit row from memory once. A first pass over the row, in
 * L1-sized blocks, sums {@code exp(x - m)} against a running reference maximum m that is raised, with the sum
 * rescaled by {@code exp(m_old - m)}, whenever a block holds a logit far above it (online softmax, Milakov
 * and Gimelshein 2018), and stores those exponentials as the gradient; a second pass over the same row,
 * still in cache for rows up to a few hundred KiB (V = 50257 is 196 KiB), rescales each block to
 * {@code softmax · scale}. So forward plus backward moves about 8 bytes per logit (read once, gradient
 * written once) when {@code dlogits} aliases {@code logits}, and computes one exponential per logit
 * (F32: an inlined polynomial with relative error below 1e-7).
 *
 * <p>Results are bit-identical from run to run and for any thread count of the pool: each row is reduced
 * by one thread in a fixed order. Blocks on the calling thread until done; uses {@code ComputePool.current()}.
 */
public final class CrossEntropy {
    /** Target value that marks a row whose loss and gradient are zero (PyTorch's ignore_index default). */
    public static final int IGNORE_INDEX = -1;

    private CrossEntropy() { }

    /**
     * Loss and gradient in one call: {@code losses[n] = logsumexp(logits[n, :]) - logits[n, targets[n]]} and
     * {@code dlogits[n, :] = (softmax(logits[n, :]) - onehot(targets[n])) · dlossScale}.
     * {@code dlogits} is <em>written</em>, not accumulated (unlike other backward kernels), so it may be
     * the very tensor {@code logits} (in place, the usual use: the logits are not needed afterwards).
     * For a mean loss over N counted rows pass {@code dlossScale = 1/N}.
     *
     * <p>Shapes: losses [N], dlogits [N, V] (may alias logits), logits [N, V], targets [N] i32.
     *
     * @throws IllegalArgumentException if shapes or dtypes disagree, or a target is neither
     *                                  {@value #IGNORE_INDEX} nor in {@code [0, V)} (nothing is written then)
     */
    public static void forwardBackward(Tensor losses, Tensor dlogits, Tensor logits, Tensor targets, double dlossScale) {
        String op = "CrossEntropy.forwardBackward";
        DType dt = Kernels.floatType(op, new String[]{"losses", "dlogits", "logits"}, losses, dlogits, logits);
        Kernels.sameShape(op, "dlogits", dlogits, "logits", logits);
        Rows x = Rows.of(op, "logits", logits);
        Rows d = Rows.of(op, "dlogits", dlogits);
        Rows l = perRow(op, "losses", losses, x);
        Rows t = targets(op, targets, x);
        if (dt == DType.F32) CrossEntropyF32.run(l, d, x, t, (float) dlossScale, true);
        else CrossEntropyReference.run(l, d, x, t, dlossScale, true);
    }

    /**
     * Loss only (evaluation): {@code losses[n] = logsumexp(logits[n, :]) - logits[n, targets[n]]}, reading
     * each logit once. Shapes: losses [N], logits [N, V], targets [N] i32.
     *
     * @throws IllegalArgumentException as {@link #forwardBackward}
     */
    public static void loss(Tensor losses, Tensor logits, Tensor targets) {
        String op = "CrossEntropy.loss";
        DType dt = Kernels.floatType(op, new String[]{"losses", "logits"}, losses, logits);
        Rows x = Rows.of(op, "logits", logits);
        Rows l = perRow(op, "losses", losses, x);
        Rows t = targets(op, targets, x);
        if (dt == DType.F32) CrossEntropyF32.run(l, null, x, t, 0f, false);
        else CrossEntropyReference.run(l, null, x, t, 0, false);
    }

    private static Rows perRow(String op, String arg, Tensor t, Rows x) {
        Kernels.contiguous(op, arg, t);
        if (t.numel() != x.rows()) {
            throw new IllegalArgumentException(op + ": " + arg + " " + t.describe() + " has " + t.numel()
                    + " elements but logits have " + x.rows() + " rows; it needs one per row");
        }
        return Rows.of(op, arg, t.view(-1));
    }

    /** Checks dtype, count and range of the targets before anything is written. */
    private static Rows targets(String op, Tensor targets, Rows x) {
        if (targets.dtype() != DType.I32) {
            throw new IllegalArgumentException(op + ": targets is " + targets.describe() + "; token ids must be i32");
        }
        Rows t = perRow(op, "targets", targets, x);
        for (int n = 0; n < t.rows() * t.cols(); n++) {
            int target = t.segment().get(ValueLayout.JAVA_INT_UNALIGNED, t.base() + 4L * n);
            if (target != IGNORE_INDEX && (target < 0 || target >= x.cols())) {
                throw new IllegalArgumentException(op + ": targets[" + n + "] = " + target + " is outside the vocabulary [0, "
                        + x.cols() + "); use " + IGNORE_INDEX + " to ignore a row");
            }
        }
        return t;
    }
}
