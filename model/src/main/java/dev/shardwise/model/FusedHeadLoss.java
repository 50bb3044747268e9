package dev.shardwise.model;

import dev.shardwise.core.kernels.CrossEntropy;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.memory.StepArena;
import dev.shardwise.core.tensor.Tensor;

/**
 * The output head and cross-entropy fused over row chunks (the idea of Liger-Kernel's fused linear cross-entropy
 * and Wijmans et al. 2024, "Cut Your Losses"): logits = h·Eᵀ are made {@link #CHUNK_ROWS} rows at a time, turned
 * into per-row losses and, for training, into d(loss·scale)/d(logits) in place, which is consumed at once by
 * dh = dlogits·E and dE += dlogitsᵀ·h. The whole [N, V] logits never exist: one chunk [R, V] does.
 *
 * <p>Shapes: h [N, C], E [V, C] (the tied embedding), targets [N] i32 (-1 excluded), losses [N], dh [N, C] written,
 * dE [V, C] accumulated. Products run in the set's {@link MatmulPrecision}; the softmax and the loss in fp32.
 * Each logits row is the same dot products as the unfused head's, so losses agree with it to round-off (bit for bit
 * when the GEMM's result for a row does not depend on the rows beside it); dE sums its rows chunk by chunk.
 */
final class FusedHeadLoss {
    /**
     * Rows per chunk: 256 rows keep the products' M dimension large enough for the GEMM to run near its peak while a
     * chunk stays small beside the logits (8 MiB for V = 8192, 51 MiB for GPT-2's 50257 in fp32).
     */
    static final int CHUNK_ROWS = 256;

    private FusedHeadLoss() { }

    /**
     * Writes losses, and with {@code dh} not null writes dh and accumulates {@code dE}. The chunk buffer lives in a
     * scratch arena on {@code pool} closed before returning, so it is not part of the backward's memory peak.
     *
     * @param dlossScale multiplies the gradient (1/counted targets · the micro-batch scale)
     */
    static void run(MemoryPool pool, MatmulPrecision precision, Tensor losses, Tensor dh, Tensor dE, Tensor h,
                    Parameter embedding, Tensor targets, double dlossScale) {
        int n = h.dim(0), v = embedding.value().dim(0);
        int rows = Math.min(CHUNK_ROWS, n);
        Tensor e = precision.operand(embedding);
        try (StepArena scratch = new StepArena(pool)) {
            run(precision, losses, dh, dE, h, e, targets, dlossScale, scratch.allocateForOverwrite(Linear.outputType(h), rows, v));
        }
    }

    private static void run(MatmulPrecision precision, Tensor losses, Tensor dh, Tensor dE, Tensor h, Tensor e,
                            Tensor targets, double dlossScale, Tensor chunk) {
        int n = h.dim(0), rows = chunk.dim(0);
        for (int r0 = 0; r0 < n; r0 += rows) {
            int r = Math.min(rows, n - r0);
            Tensor logits = chunk.slice(0, 0, r), hr = h.slice(0, r0, r);
            precision.matmul(logits, hr, e, false, true, 1f, 0f);
            if (dh == null) {
                CrossEntropy.loss(losses.slice(0, r0, r), logits, targets.slice(0, r0, r));
                continue;
            }
            CrossEntropy.forwardBackward(losses.slice(0, r0, r), logits, logits, targets.slice(0, r0, r), dlossScale);
            precision.matmul(dh.slice(0, r0, r), logits, e, false, false, 1f, 0f);   // dh = dlogits·E
            precision.matmul(dE, logits, hr, true, false, 1f, 1f);                   // dE += dlogitsᵀ·h
        }
    }
}
