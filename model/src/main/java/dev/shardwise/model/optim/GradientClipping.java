package dev.shardwise.model.optim;

import dev.shardwise.core.kernels.Vectors;
import dev.shardwise.core.tensor.Tensor;

/** Global-norm gradient clipping (Pascanu et al. 2013), as PyTorch's clip_grad_norm_ does it. */
public final class GradientClipping {
    private GradientClipping() { }

    /**
     * Scales {@code grads} by maxNorm / (norm + 1e-6) when their global L2 norm exceeds {@code maxNorm}.
     * A non-positive {@code maxNorm} disables clipping (the norm is still computed and returned).
     *
     * @param grads all gradients, flat [P]
     * @return the norm before clipping (NaN or infinite if a gradient is)
     */
    public static double clip(Tensor grads, double maxNorm) {
        double norm = norm(grads);
        double scale = scaleFor(norm, maxNorm);
        if (scale != 1.0) Vectors.scale(grads, scale);
        return norm;
    }

    /** The global L2 norm of {@code grads} (flat [P]), accumulated in float64 (NaN or infinite if a gradient is). */
    public static double norm(Tensor grads) {
        return Math.sqrt(Vectors.sumOfSquares(grads));
    }

    /**
     * The factor {@link #clip} scales the gradients by: maxNorm / (norm + 1e-6) when {@code norm} exceeds a
     * positive {@code maxNorm}, else 1.
     */
    public static double scaleFor(double norm, double maxNorm) {
        return maxNorm > 0 && norm > maxNorm ? maxNorm / (norm + 1e-6) : 1.0;
    }
}
