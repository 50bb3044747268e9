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
 * qkv, att, GELU's pre-activation and output (SwiGLU: only silu(gate)∘up) in bf16, RoPE's rotated q and k in fp32,
 * and the branch outputs not at all: 0.50x of this for GPT-2, measured by {@code Bf16PrecisionTest}):
 * <pre>
 *   layer         what forward saves                              elements
 *   N1            y [N, C]; mean, rstd [N] (RMSNorm: rstd only)   N·C + 2·N        (RMSNorm: N·C + N)
 *   attention     qkv [N, (NH + 2·NKV)·HS]                        N·(NH + 2·NKV)·HS
 *                 q, k after RoPE [B, T, NH + NKV, HS]            N·(NH + NKV)·HS  (rotary positions only)
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
        if (b <= 0 || t <= 0) throw new IllegalArgumentException("B and T must be positive, got B=" + b + ", T=" + t);
        if (dtype != DType.F32 && dtype != DType.F64) {
            throw new IllegalArgumentException("activations are F32 (training) or F64 (checks), got " + dtype);
        }
        long n = (long) b * t, c = config.hidden();
        long elements = switch (policy) {
            case FULL -> n * c;
            case NONE, SELECTIVE -> 2 * normElements(config, n)
                    + attentionElements(config, n, policy == Recompute.SELECTIVE)
                    + feedForwardElements(config, n)
                    + 2 * n * c;   // the two residual sums
        };
        return elements * dtype.byteSize();
    }

    /** A norm: y [N, C] and its statistics, mean and rstd [N] (RMSNorm: rstd only). */
    static long normElements(ModelConfig config, long n) {
        return n * config.hidden() + (config.norm() == ModelConfig.Norm.LAYER_NORM ? 2 * n : n);
    }

    /** Causal self-attention: qkv, rotated q and k (RoPE), att and lse (unless recomputed), and its output [N, C]. */
    static long attentionElements(ModelConfig config, long n, boolean recomputeCore) {
        long hs = config.headSize(), nh = config.heads(), nkv = config.kvHeads();
        long elements = n * (nh + 2 * nkv) * hs + n * config.hidden();
        if (config.positions() == ModelConfig.Positions.ROTARY) elements += n * (nh + nkv) * hs;
        if (!recomputeCore) elements += n * nh * hs + n * nh;
        return elements;
    }

    /** The feed-forward block: its [N, F] intermediates (two for GELU, three for SwiGLU) and its output [N, C]. */
    static long feedForwardElements(ModelConfig config, long n) {
        long intermediates = config.mlp() == ModelConfig.Mlp.GELU ? 2 : 3;
        return intermediates * n * config.ffnHidden() + n * config.hidden();
    }
}
