package dev.shardwise.core.kernels;

import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;

import java.util.Arrays;

/**
 * Causal scaled dot-product self-attention, computed tile by tile without a T×T score matrix, as
 * FlashAttention does (Dao et al. 2022; FlashAttention-2, Dao 2023): for each query row t,
 * {@code out[t] = sum_{s<=t} softmax_s(scale · q[t]·k[s]) · v[s]}, with an online (running max and sum)
 * softmax over key tiles, and a backward pass that recomputes the probabilities from q, k and the saved
 * log-sum-exp instead of storing them.
 *
 * <p>Grouped-query attention (Ainslie et al. 2023): k and v have {@code NKV} heads, {@code NKV} divides
 * {@code NH}, and query head {@code h} reads key/value head {@code h / (NH / NKV)}; {@code NKV == NH} is
 * plain multi-head attention, {@code NKV == 1} multi-query attention.
 *
 * <p>Shapes: q {@code [B, T, NH, HS]}, k and v {@code [B, T, NKV, HS]}, out {@code [B, T, NH, HS]},
 * lse {@code [B, NH, T]}. Every tensor may be a strided view (for example a slice of a fused qkv tensor
 * viewed as {@code [B, T, NH + 2·NKV, HS]}) as long as its last dimension is unit-stride.
 *
 * <p>Dtypes: all float arguments F32 (the tiled Vector API kernel) or all F64 (a plain float64 reference that
 * materialises the scores, used by tests and by finite-difference gradient checks). Both block the caller and
 * split the work over {@link dev.shardwise.core.exec.ComputePool#current()}. Extra memory of the f32 kernel: per
 * pool thread a few dozen tiles of 64×max(64, HS) floats, independent of T ({@link #f32ScratchBytesPerThread});
 * nothing O(T²), and nothing O(T) besides lse. Results are bit-identical from
 * run to run and for any number of threads: every output element is produced by one task in a fixed order, and
 * the exponential is the kernel's own polynomial (relative error below 3e-7), which gives the same bits compiled
 * or interpreted.
 *
 * <p>Outputs must not overlap inputs or each other.
 */
public final class Attention {
    private Attention() { }

    /**
     * Causal attention forward: q [B, T, NH, HS], k, v [B, T, NKV, HS] -> out [B, T, NH, HS] and
     * lse [B, NH, T], the natural log of {@code sum_{s<=t} exp(scale · q[t]·k[s])} per query row, which
     * {@link #backward} needs. Overwrites out and lse.
     *
     * @param scale the score scale, usually {@code 1/sqrt(HS)}
     * @throws IllegalArgumentException if dtypes are mixed or not F32/F64, if a shape does not match the
     *                                  shapes above, if NKV does not divide NH, or if a last dimension is strided
     */
    public static void forward(Tensor out, Tensor lse, Tensor q, Tensor k, Tensor v, double scale) {
        Dims d = check("forward", q, k, v);
        expect("forward", "out", out, d.b, d.t, d.nh, d.hs);
        expect("forward", "lse", lse, d.b, d.nh, d.t);
        sameDtype("forward", q.dtype(), new String[]{"out", "lse", "k", "v"}, out, lse, k, v);
        switch (q.dtype()) {
            case F32 -> AttentionF32.forward(out, lse, q, k, v, (float) scale);
            case F64 -> AttentionReference.forward(out, lse, q, k, v, scale);
            default -> throw unsupported("forward", q);
        }
    }

    /**
     * Causal attention backward: given dout [B, T, NH, HS] and what {@link #forward} read and wrote (out, lse,
     * q, k, v), ACCUMULATES the gradients of the loss into dq [B, T, NH, HS], dk and dv [B, T, NKV, HS]
     * ({@code +=}; the caller zeroes them). With {@code P = exp(scale·q·kᵀ - lse)} (causal) and
     * {@code D = rowsum(dout ∘ out)}: {@code dv += Pᵀ·dout}, {@code dS = P ∘ (dout·vᵀ - D)},
     * {@code dq += scale·dS·k}, {@code dk += scale·dSᵀ·q}. Probabilities are recomputed tile by tile.
     *
     * @throws IllegalArgumentException as {@link #forward}, naming the mismatched argument
     */
    public static void backward(Tensor dq, Tensor dk, Tensor dv, Tensor dout, Tensor out, Tensor lse,
                                Tensor q, Tensor k, Tensor v, double scale) {
        Dims d = check("backward", q, k, v);
        expect("backward", "dq", dq, d.b, d.t, d.nh, d.hs);
        expect("backward", "dk", dk, d.b, d.t, d.nkv, d.hs);
        expect("backward", "dv", dv, d.b, d.t, d.nkv, d.hs);
        expect("backward", "dout", dout, d.b, d.t, d.nh, d.hs);
        expect("backward", "out", out, d.b, d.t, d.nh, d.hs);
        expect("backward", "lse", lse, d.b, d.nh, d.t);
        sameDtype("backward", q.dtype(), new String[]{"dq", "dk", "dv", "dout", "out", "lse", "k", "v"},
                dq, dk, dv, dout, out, lse, k, v);
        switch (q.dtype()) {
            case F32 -> AttentionF32.backward(dq, dk, dv, dout, out, lse, q, k, v, (float) scale);
            case F64 -> AttentionReference.backward(dq, dk, dv, dout, q, k, v, scale);
            default -> throw unsupported("backward", q);
        }
    }

    /**
     * Heap scratch the f32 kernel allocates per pool thread and call, in bytes: a few dozen 64-row tiles, the same
     * for every sequence length T. Besides it, forward writes lse (4·B·NH·T bytes).
     */
    public static long f32ScratchBytesPerThread(int headSize) {
        return Math.max(AttentionF32.forwardScratchBytes(headSize), AttentionF32.backwardScratchBytes(headSize));
    }

    /** Sizes read from q and k: batch, sequence, query heads, key/value heads, head size. */
    record Dims(int b, int t, int nh, int nkv, int hs) { }

    private static Dims check(String op, Tensor q, Tensor k, Tensor v) {
        if (q.rank() != 4) {
            throw new IllegalArgumentException("attention " + op + ": q must be [B, T, NH, HS], got " + q.describe());
        }
        int b = q.dim(0), t = q.dim(1), nh = q.dim(2), hs = q.dim(3);
        if (k.rank() != 4) {
            throw new IllegalArgumentException("attention " + op + ": k must be [B, T, NKV, HS] = ["
                    + b + ", " + t + ", NKV, " + hs + "], got " + k.describe());
        }
        int nkv = k.dim(2);
        expect(op, "k", k, b, t, nkv, hs);
        expect(op, "v", v, b, t, nkv, hs);
        if (nkv < 1 || nh % nkv != 0) {
            throw new IllegalArgumentException("attention " + op + ": NKV=" + nkv + " key/value heads (k "
                    + k.describe() + ") must divide NH=" + nh + " query heads (q " + q.describe()
                    + "); use NKV in the divisors of NH");
        }
        expect(op, "q", q, b, t, nh, hs);
        return new Dims(b, t, nh, nkv, hs);
    }

    private static void expect(String op, String name, Tensor x, int... shape) {
        if (!Arrays.equals(x.shape(), shape)) {
            throw new IllegalArgumentException("attention " + op + ": " + name + " is " + x.describe()
                    + " but must be " + Arrays.toString(shape));
        }
        if (!x.hasUnitInnerStride()) {
            throw new IllegalArgumentException("attention " + op + ": " + name + " " + x.describe()
                    + " has last-dimension stride " + x.stride(-1) + "; it must be 1 (copy it to a contiguous tensor)");
        }
    }

    private static void sameDtype(String op, DType want, String[] names, Tensor... xs) {
        for (int i = 0; i < xs.length; i++) {
            if (xs[i].dtype() != want) {
                throw new IllegalArgumentException("attention " + op + ": " + names[i] + " is " + xs[i].describe()
                        + " but q is " + want.label() + "; pass all float arguments as f32, or all as f64");
            }
        }
    }

    private static IllegalArgumentException unsupported(String op, Tensor q) {
        return new IllegalArgumentException("attention " + op + ": dtype " + q.dtype().label() + " of q "
                + q.describe() + " is not supported; use f32 (fast kernel) or f64 (reference)");
    }
}
