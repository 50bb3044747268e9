package dev.shardwise.model.optim;

/** Global-norm gradient clipping (Pascanu et al. 2013), as PyTorch's clip_grad_norm_ does it. */
public final class GradientClipping {
    private GradientClipping() { }

    /**
     * The factor that clips gradients of global norm {@code norm} to {@code maxNorm}: maxNorm / (norm + 1e-6) when
     * {@code norm} exceeds a positive {@code maxNorm}, else 1 (a non-positive {@code maxNorm} disables clipping).
     */
    public static double scaleFor(double norm, double maxNorm) {
        return maxNorm > 0 && norm > maxNorm ? maxNorm / (norm + 1e-6) : 1.0;
    }
}
