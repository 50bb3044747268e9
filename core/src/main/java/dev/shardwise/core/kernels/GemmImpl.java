package dev.shardwise.core.kernels;

/**
 * Which implementation {@link Gemm} runs for fp32 tensors. {@link #AUTO} is what model code uses; the others
 * exist so tests and benchmarks can check and time each path on its own. F64 tensors always run the float64
 * reference, whatever is chosen.
 */
public enum GemmImpl {
    /** Per shape, whichever of the other two is faster here (see {@link Gemm}); the Vector kernel if OpenBLAS is absent. */
    AUTO,
    /** Shardwise's own packed, cache-blocked Vector API kernel. */
    VECTOR,
    /** OpenBLAS {@code cblas_sgemm} from the {@code org.bytedeco:openblas} artifact, through the FFM API. */
    OPENBLAS
}
