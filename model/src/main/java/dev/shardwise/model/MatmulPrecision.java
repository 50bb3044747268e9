package dev.shardwise.model;

import dev.shardwise.core.memory.StepArena;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;

/**
 * How a model's weight products run and what their inputs are kept as for backward: {@link #FP32} throughout, or
 * {@link Bf16Precision} (Megatron's bf16 recipe: bf16 operands, fp32 accumulation and output, fp32 master
 * weights). One object per rank, shared by every layer of its {@link ParameterSet} ({@link ParameterSet#precision()}),
 * so the serial and the tensor-parallel linears read the same choice. Norms, softmax, the loss and the optimizer
 * are fp32 whatever this says.
 *
 * <p>Contract of a forward that keeps a matmul input for backward: it fills {@code t = staging(arena, slot, dtype, shape)},
 * then keeps {@code keep(arena, t)} (in fp32 that is t itself, allocated in the arena; in bf16 a rounded copy in
 * the arena, t being a reused buffer valid only until the next {@code staging} call for its slot), forward computes
 * on from {@code asKept(t, kept)} (the values backward will read) and the kept tensor goes to the linear, forward
 * and backward. A layer output written into a staging buffer must be read before the next layer runs. {@link #widen} turns a kept tensor back into fp32 for a non-matmul reader.
 * Not thread-safe: one rank's training thread (and the helper threads it hands its passes to, one at a time).
 */
public sealed interface MatmulPrecision extends AutoCloseable permits MatmulPrecision.Fp32, Bf16Precision {

    /** fp32 (or, for float64 checks, f64) operands and activations through {@link dev.shardwise.core.kernels.Gemm}; nothing cached. */
    MatmulPrecision FP32 = new Fp32();

    /** {@code fp32} or {@code bf16}, as configs spell it. */
    String label();

    /** The operand a product with {@code weight}'s value uses: the value itself, or its bf16 copy for this step. */
    Tensor operand(Parameter weight);

    /**
     * {@code c = alpha·op(a)·op(b) + beta·c} (shapes as {@link dev.shardwise.core.kernels.Gemm#matmul}); c is f32
     * (or f64 under FP32), a and b f32 or, under bf16, either f32 (rounded to bf16 on the way in) or bf16.
     */
    void matmul(Tensor c, Tensor a, Tensor b, boolean transA, boolean transB, float alpha, float beta);

    /**
     * A tensor for forward to fill and then {@link #keep} (or use at once): in the arena (fp32), or staging buffer
     * {@code slot} (0 or 1 for a layer's own tensors, 2 for a block's mid-block residual stream), reused and valid until
     * the next call for the same slot (bf16, where dtype must be f32).
     */
    Tensor staging(StepArena arena, int slot, DType dtype, int... shape);

    /**
     * {@code staged} holding exactly the values of {@code kept} (its {@link #keep} copy), so that forward computes
     * from what backward will read: staged itself in fp32, staged overwritten with the widened bf16 values in bf16.
     */
    Tensor asKept(Tensor staged, Tensor kept);

    /** What backward keeps of a matmul input x: x itself (fp32), or its bf16 rounding, allocated in {@code arena}. */
    Tensor keep(StepArena arena, Tensor x);

    /**
     * A kept tensor as f32 for a reader other than a product (backward's attention, GELU): itself if it is f32 or
     * f64, else widened into staging buffer {@code slot}, valid until the next use of that slot, so that backward's
     * widened copies never pile up in the step arena.
     */
    Tensor widen(int slot, Tensor kept);

    /** Says the master weights changed (an optimizer step, a checkpoint load): cached bf16 copies are remade on next use. */
    void weightsChanged();

    /** Frees cached copies and buffers; the precision must not be used afterwards. */
    @Override
    void close();

    /**
     * The precision named {@code label}: {@link #FP32} for {@code fp32}, a new {@link Bf16Precision} charging its
     * buffers to {@code pool} for {@code bf16}.
     *
     * @throws IllegalArgumentException      for another label
     * @throws UnsupportedOperationException for bf16 without oneDNN (the message names the package to install)
     */
    static MatmulPrecision of(String label, dev.shardwise.core.memory.MemoryPool pool) {
        return switch (label) {
            case "fp32" -> FP32;
            case "bf16" -> new Bf16Precision(pool);
            default -> throw new IllegalArgumentException("precision must be fp32 or bf16, got '" + label + "'");
        };
    }

    /** The fp32 path: products through Gemm, inputs kept as they are. */
    final class Fp32 implements MatmulPrecision {
        private Fp32() { }

        @Override public String label() { return "fp32"; }

        @Override public Tensor operand(Parameter weight) { return weight.value(); }

        @Override
        public void matmul(Tensor c, Tensor a, Tensor b, boolean transA, boolean transB, float alpha, float beta) {
            dev.shardwise.core.kernels.Gemm.matmul(c, a, b, transA, transB, alpha, beta);
        }

        @Override
        public Tensor staging(StepArena arena, int slot, DType dtype, int... shape) {
            return arena.allocateForOverwrite(dtype, shape);
        }

        @Override public Tensor asKept(Tensor staged, Tensor kept) { return staged; }

        @Override public Tensor keep(StepArena arena, Tensor x) { return x; }

        @Override public Tensor widen(int slot, Tensor kept) { return kept; }

        @Override public void weightsChanged() { }

        @Override public void close() { }

        @Override public String toString() { return "fp32"; }
    }
}
