package dev.shardwise.model;

import dev.shardwise.core.tensor.DType;

/**
 * The activation memory of a transformer block: the bytes one transformer block's forward leaves charged
 * to the step arena until its backward, under each {@link Recompute} policy. Korthikanti et al. 2022 (§4.1)
 * count s·b·h·(34 + 5·a·s/h) bytes per layer for fp16 GPT with dropout; this is the same count redone for what
 * our layers save, term by term, so a pool's measured live bytes can be predicted (and are, exactly, by the tests).
 *
 * <p>With N = B·T rows, every tensor [N, ·] unless said, in elements (times the dtype's size; all activations
 * have the parameters' dtype under fp32 {@link MatmulPrecision}; under bf16 a pre-LN block keeps the norms' outputs,
 * qkv, att, GELU's pre-activation and output (SwiGLU: gate, up and silu(gate)∘up) and the mid-block residual x1 (N2's
 * input) in bf16 and the branch outputs not at all: 0.48x of this for GPT-2 and LLaMA, measured by
 * {@code Bf16PrecisionTest}):
 * <pre>
 *   layer         what forward saves                              elements
 *   N1            y [N, C]; mean, rstd [N] (RMSNorm: rstd only)   N·C + 2·N        (RMSNorm: N·C + N)
 *   attention     qkv [N, (NH + 2·NKV)·HS], q, k after RoPE        N·(NH + 2·NKV)·HS
 *                 att, the core's output [N, NH·HS]               N·NH·HS          (dropped by SELECTIVE)
 *                 lse, log-sum-exp [B, NH, T]                     N·NH             (dropped by SELECTIVE)
 *                 A(·), the projection's output [N, C]            N·C
 *   residual      x1 (pre-LN) or α·x + A(x) (post-LN) [N, C]      N·C
 *   N2            as N1                                           N·C + 2·N        (RMSNorm: N·C + N)
 *   feed-forward  GELU: pre-activation, GELU [N, F]; F(·) [N, C]  2·N·F + N·C
 *                 SwiGLU: gate, up, silu(gate)∘up [N, F]; F(·)    3·N·F + N·C
 *   residual      y (pre-LN) or α·x1 + F(x1) (post-LN) [N, C]     N·C
 * </pre>
 * Post-LN's N1 output is x1 and its N2 output is y, so the table holds for every residual placement. Under FULL
 * the block keeps y alone, N·C (its input x is the previous block's y, counted there). The block input is not
 * counted: the caller holds it.
 *
 * <p>For GPT-2 (LayerNorm, learned positions, NKV = NH = a, NH·HS = C = h, F = 4h) in fp32, with s = T and
 * b = B, this is s·b·h·(72 + 4·(a + 4)/h) bytes under NONE, s·b·h·(68 + 16/h) under SELECTIVE and 4·s·b·h under
 * FULL. Korthikanti's 34 is 16 elements in fp16 (32 bytes: the two norm inputs, N1's output, q, k, v, att, N2's
 * output, the GELU's input and output at 4 each) plus two one-byte dropout masks; our 72 is 18 elements in fp32:
 * the same 16 (the norm inputs are x, counted as the previous block's y, and x1) plus the two branch outputs
 * A(·) and F(·), which backward does not read but the arena cannot free singly, and no dropout. Their 5·a·s/h
 * (the T×T softmax, its dropout mask and output per head) becomes our 4·a/h: the FlashAttention-style kernel keeps
 * one log-sum-exp per query and head instead of the scores, so nothing is quadratic in s, and SELECTIVE, which
 * drops att and lse instead of the scores, saves s·b·h·(4 + 4·a/h) bytes here rather than 5·a·s²·b.
 *
 * <p>Tensor and sequence parallelism, per rank of tp (Korthikanti et al. 2022, §4.2.2-4.2.3): the tensor-parallel
 * region (qkv, att, lse, the feed-forward intermediates) holds NH/tp query heads, NKV' kv heads
 * (NKV/tp, or 1 when kv heads are replicated because NKV &lt; tp) and F/tp features of all N rows; the sequence region
 * (the two norms' outputs and statistics, the two branch outputs, the two residual sums) holds N rows without sequence
 * parallelism and N/tp with it. Korthikanti's s·b·h·(10 + 24/t + 5·a·s/(h·t)) for tensor parallelism becomes
 * s·b·h·(34/t + 5·a·s/(h·t)) with sequence parallelism (fp16); here, in fp32 for GPT-2 without recompute, the block's
 * s·b·h·(72 + 4·(a + 4)/h) bytes split as
 * <pre>
 *   sequence region   4·(2·(C + 2) + 2·C + 2·C) per row, N or N/t rows  = s·b·h·(24 + 16/h), or that / t
 *   tensor region     4·(3·C + C + a + 2·4·C) per row / t, N rows        = s·b·h·(48 + 4·a/h) / t
 * </pre>
 * so with sequence parallelism the whole block's bytes are 1/t of the single rank's ({@link #sequenceRegionBytes},
 * {@link #tensorRegionBytes}). The gathered inputs and the partial products before a reduce-scatter live in scratch
 * arenas closed before forward returns; backward gathers the inputs again instead of keeping them.
 *
 * <p>A mixture-of-experts block ({@link MoeFeedForward}; {@link #moeBlockBytes}) keeps the same sequence region and
 * attention, and in place of the MLP's intermediates, with M = N·k kept assignments (dropless):
 * <pre>
 *   router        logits [N, E] (noisy gate: and x·W_noiseᵀ [N, E])           N·E (2·N·E)
 *   dispatch      the dispatched tokens xs and the experts' outputs [M, C]      2·M·C
 *   experts       GELU: pre-activation, GELU [M, F_e/tp]; SwiGLU: 3 of them   2·M·F_e/tp (3·M·F_e/tp)
 *   shared        the same over N rows of S·F_e/tp features, output [N, C]    2·N·S·F_e/tp + N·C (SwiGLU: 3·)
 * </pre>
 * The router is whole on every tp rank and the tokens are the same there (under sequence parallelism the gathered
 * sequence), so the router's and the [·, C] tensors are not split by tp, with or without sequence parallelism; only
 * the experts' hidden features are.
 */
public final class ActivationMemory {
    private ActivationMemory() { }

    /**
     * Bytes one block's forward over {@code b}·{@code t} rows leaves in the arena for its backward under
     * {@code policy}, its output y included and its input x not.
     *
     * @throws IllegalArgumentException if b or t is not positive, or dtype is not a float type
     */
    public static long blockBytes(ModelConfig config, int b, int t, Recompute policy, DType dtype) {
        return blockBytes(config, b, t, policy, dtype, 1, false);
    }

    /**
     * As {@link #blockBytes(ModelConfig, int, int, Recompute, DType)}, on one rank of a tensor-parallel group of
     * {@code tp} ranks, with or without sequence parallelism: {@link #sequenceRegionBytes} + {@link #tensorRegionBytes}.
     *
     * @throws IllegalArgumentException as there, or if tp is below 1, sequence parallelism is asked for with tp = 1,
     *                                  or tp does not divide T under it
     */
    public static long blockBytes(ModelConfig config, int b, int t, Recompute policy, DType dtype, int tp,
                                  boolean sequenceParallel) {
        return sequenceRegionBytes(config, b, t, policy, dtype, tp, sequenceParallel)
                + tensorRegionBytes(config, b, t, policy, dtype, tp);
    }

    /**
     * The bytes of the block's sequence region on one rank: the norms' outputs and statistics, the branch outputs and
     * the residual sums (under FULL the output y alone), over N rows, or N/tp under sequence parallelism.
     *
     * @throws IllegalArgumentException as {@link #blockBytes(ModelConfig, int, int, Recompute, DType, int, boolean)}
     */
    public static long sequenceRegionBytes(ModelConfig config, int b, int t, Recompute policy, DType dtype, int tp,
                                           boolean sequenceParallel) {
        check(b, t, dtype, tp, sequenceParallel);
        long rows = sequenceParallel ? (long) b * t / tp : (long) b * t, c = config.hidden();
        long elements = switch (policy) {
            case FULL -> rows * c;
            case NONE, SELECTIVE -> 2 * normElements(config, rows)
                    + 2 * rows * c     // the branch outputs A(·) and F(·)
                    + 2 * rows * c;    // the two residual sums
        };
        return elements * dtype.byteSize();
    }

    /**
     * The bytes of the block's tensor-parallel region on one rank: qkv, the attention core's output
     * and log-sum-exp (unless recomputed) and the feed-forward intermediates, for this rank's heads and features over
     * all N rows; 0 under FULL.
     *
     * @throws IllegalArgumentException as {@link #blockBytes(ModelConfig, int, int, Recompute, DType, int, boolean)}
     */
    public static long tensorRegionBytes(ModelConfig config, int b, int t, Recompute policy, DType dtype, int tp) {
        check(b, t, dtype, tp, false);
        if (policy == Recompute.FULL) return 0;
        long n = (long) b * t;
        long elements = attentionCoreElements(config, n, policy == Recompute.SELECTIVE, tp)
                + (config.mlp() == ModelConfig.Mlp.GELU ? 2 : 3) * n * (config.ffnHidden() / tp);
        return elements * dtype.byteSize();
    }

    /**
     * As {@link #blockBytes(ModelConfig, int, int, Recompute, DType, int, boolean)} for a mixture-of-experts block of
     * {@code config} at expert parallelism 1, dropless (every rank runs all E experts' slices over all N·k
     * assignments; with a capacity or expert parallelism the rows depend on the routing): the sequence region, the
     * attention's tensor-parallel tensors and the MoE tensors of the class comment.
     *
     * @throws IllegalArgumentException as there, or if the config has no dropless MoE section
     */
    public static long moeBlockBytes(ModelConfig config, int b, int t, Recompute policy, DType dtype, int tp,
                                     boolean sequenceParallel) {
        MoeConfig moe = config.moe();
        if (moe == null || !moe.dropless()) {
            throw new IllegalArgumentException("moeBlockBytes counts dropless mixture-of-experts blocks (model.moe with capacityFactor 0), got "
                    + (moe == null ? "a dense model" : "capacityFactor " + moe.capacityFactor()) + "; use blockBytes for a dense block");
        }
        long sequence = sequenceRegionBytes(config, b, t, policy, dtype, tp, sequenceParallel);
        if (policy == Recompute.FULL) return sequence;
        long n = (long) b * t, m = n * moe.topK(), c = config.hidden(), fe = moe.expertHidden() / tp;
        int hidden = config.mlp() == ModelConfig.Mlp.GELU ? 2 : 3;
        long elements = attentionCoreElements(config, n, policy == Recompute.SELECTIVE, tp)
                + n * moe.experts() * (moe.gate() == MoeConfig.Gate.NOISY ? 2 : 1)
                + 2 * m * c
                + hidden * m * fe
                + (moe.sharedExperts() > 0 ? hidden * n * ((long) moe.sharedExperts() * moe.expertHidden() / tp) + n * c : 0);
        return sequence + elements * dtype.byteSize();
    }

    private static void check(int b, int t, DType dtype, int tp, boolean sequenceParallel) {
        if (b <= 0 || t <= 0) throw new IllegalArgumentException("B and T must be positive, got B=" + b + ", T=" + t);
        if (dtype != DType.F32 && dtype != DType.F64) {
            throw new IllegalArgumentException("activations are F32 (training) or F64 (checks), got " + dtype);
        }
        if (tp < 1) throw new IllegalArgumentException("tp=" + tp + " must be at least 1");
        if (sequenceParallel && (tp < 2 || t % tp != 0)) {
            throw new IllegalArgumentException("sequence parallelism needs tp >= 2 dividing T; got tp=" + tp + ", T=" + t);
        }
    }

    /** Attention's tensor-parallel tensors on one rank: qkv (q and k rotated in place under RoPE), att and lse (unless recomputed). */
    static long attentionCoreElements(ModelConfig config, long n, boolean recomputeCore, int tp) {
        long hs = config.headSize(), nh = config.heads() / tp, nkv = Math.max(1, config.kvHeads() / tp);
        long elements = n * (nh + 2 * nkv) * hs;
        if (!recomputeCore) elements += n * nh * hs + n * nh;
        return elements;
    }

    /** A norm: y [N, C] and its statistics, mean and rstd [N] (RMSNorm: rstd only). */
    static long normElements(ModelConfig config, long n) {
        return n * config.hidden() + (config.norm() == ModelConfig.Norm.LAYER_NORM ? 2 * n : n);
    }

}
