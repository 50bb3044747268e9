package dev.shardwise.plan;

/**
 * The few numbers the cost model takes from calibration rather than from datasheets.
 *
 * <p>Matrix-multiply efficiency is a function of the GEMM's shape, not one constant: a GEMM (M, N, K) runs at
 * {@code gemmPeakFraction · g(M) · g(N) · g(K)} of the fp16 peak, with g(d) = d / (d + gemmHalfDim), so a dimension
 * of gemmHalfDim halves the rate (thin GEMMs, small head sizes and heavy tensor parallelism pay; large square
 * ones approach gemmPeakFraction). Collectives reach {@code commEfficiency} of the link bandwidth (NCCL's bus
 * bandwidth over the wire rate). Element-wise kernels (layer norm, GeLU, dropout, softmax, Adam) reach
 * {@code memoryEfficiency} of the memory bandwidth.
 *
 * @param gemmPeakFraction  the fraction of peak a very large GEMM reaches, in (0, 1]
 * @param gemmHalfDim       the dimension at which a GEMM runs at half that, elements
 * @param commEfficiency    achieved over nominal link bandwidth for collectives and transfers, in (0, 1]
 * @param memoryEfficiency  achieved over nominal memory bandwidth for element-wise kernels, in (0, 1]
 * @param reservedBytes     device memory not available to the model: CUDA context, cuBLAS workspace, NCCL buffers,
 *                          allocator fragmentation
 * @param overlapGradReduce whether the data-parallel gradient reduction overlaps the last micro-batch's backward
 *                          (Megatron's --overlap-grad-reduce, Li et al. 2020's bucketing); Megatron of 2021-22, which
 *                          produced the published rows, reduced after the pipeline flush
 */
public record CostParameters(double gemmPeakFraction, double gemmHalfDim, double commEfficiency, double memoryEfficiency,
                             double reservedBytes, boolean overlapGradReduce) {

    /**
     * Fitted on the 7 rows of {@code calibration_runs.csv} (Narayanan et al. 2021 Table 1; Korthikanti et al. 2022
     * Table 5) by a grid search (CalibrationFit in the tests) over gemmPeakFraction 0.60..0.95, gemmHalfDim 16..256 and
     * commEfficiency 0.5..0.9, with the reduction after the flush as those runs did, minimizing the mean absolute
     * throughput error plus a quarter of the worst: 0.75 of peak, half rate at 16 elements, 0.9 of link bandwidth.
     * memoryEfficiency 0.7 and 3 GB reserved are assumed, not fitted. See CalibrationTest.
     */
    public static final CostParameters FITTED = new CostParameters(0.75, 16, 0.90, 0.7, 3e9, true);

    /** @throws IllegalArgumentException naming the parameter if a fraction is outside (0, 1] or a size negative */
    public CostParameters {
        fraction("gemmPeakFraction", gemmPeakFraction);
        fraction("commEfficiency", commEfficiency);
        fraction("memoryEfficiency", memoryEfficiency);
        if (gemmHalfDim < 0) throw new IllegalArgumentException("gemmHalfDim=" + gemmHalfDim + " must not be negative");
        if (reservedBytes < 0) throw new IllegalArgumentException("reservedBytes=" + reservedBytes + " must not be negative");
    }

    /** These parameters with the gradient reduction overlapped ({@code true}) or after the flush ({@code false}). */
    public CostParameters withOverlap(boolean overlap) {
        return new CostParameters(gemmPeakFraction, gemmHalfDim, commEfficiency, memoryEfficiency, reservedBytes, overlap);
    }

    /** The GEMM shape's fraction of peak: gemmPeakFraction · g(M) · g(N) · g(K). */
    public double gemmEfficiency(double m, double n, double k) {
        return gemmPeakFraction * g(m) * g(n) * g(k);
    }

    private double g(double d) {
        return d / (d + gemmHalfDim);
    }

    private static void fraction(String name, double value) {
        if (!(value > 0 && value <= 1)) throw new IllegalArgumentException(name + "=" + value + " must be in (0, 1]");
    }
}
