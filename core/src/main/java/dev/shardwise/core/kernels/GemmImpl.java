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
    /**
     * OpenBLAS {@code cblas_sgemm} (the {@code org.bytedeco:openblas} artifact, through the FFM API), run
     * single-threaded on each thread of the compute pool over its own block of C: OpenBLAS starts no threads
     * of its own, so ranks that bind their own pools never oversubscribe the cores.
     */
    OPENBLAS,
    /**
     * OpenBLAS {@code cblas_sgemm} with its own pthreads, as many as the compute pool has: OpenBLAS as it
     * runs out of the box, the peer of {@code shardwise bench gemm}. AUTO never picks it: its threads live
     * outside the compute pool, the thread count is a process-wide OpenBLAS setting, and they keep spinning
     * for a while after each call, slowing whatever kernel runs next on the same cores.
     */
    OPENBLAS_THREADED
}
