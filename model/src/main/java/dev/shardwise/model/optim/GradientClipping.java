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
        double norm = Math.sqrt(Vectors.sumOfSquares(grads));
        if (maxNorm > 0 && norm > maxNorm) Vectors.scale(grads, maxNorm / (norm + 1e-6));
        return norm;
    }
}
