package dev.shardwise.model;

import dev.shardwise.core.kernels.Bf16Convert;
import dev.shardwise.core.kernels.onednn.Bf16Matmul;
import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.memory.StepArena;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;

import java.util.IdentityHashMap;
import java.util.Map;

/**
 * bf16 mixed precision for weight products (Micikevicius et al. 2018; Megatron-LM's bf16 recipe, no loss
 * scaling): operands rounded to bfloat16, products accumulated and written in fp32 by oneDNN ({@link Bf16Matmul}),
 * against fp32 master weights that the optimizer updates.
 *
 * <p>Weights: {@link #operand} hands out a bf16 copy of a weight, made on its first use after
 * {@link #weightsChanged()} (once per step, however many micro-batches and products read it) or after the weight
 * was rebound to new storage (ZeRO stage 3 gathers a unit's values for each use: then once per gather, and the
 * copies of units whose values were released are freed as the next copy is made). The copies are charged to the
 * pool as PARAMETERS (2 bytes per weight element, on top of the fp32 masters).
 *
 * <p>Activations: f32 operands are rounded into two reused conversion buffers (BUFFERS) per product; a layer that
 * {@linkplain #keep keeps} an activation for backward keeps it as bf16 (half the bytes), computed in fp32 in a
 * {@linkplain #staging staging buffer} (BUFFERS, three of them, reused) that never reaches the step arena; the
 * weight-gradient products read the bf16 copies directly, other readers widen them back to fp32. Gradients stay fp32: dW is accumulated into the fp32 gradient by the product's
 * beta = 1 sum, so micro-batch accumulation and the data-parallel reduction run in fp32.
 */
public final class Bf16Precision implements MatmulPrecision {
    private final MemoryPool pool;
    private final Bf16Matmul matmul;
    private final Map<Parameter, Copy> copies = new IdentityHashMap<>();
    private final Buffer left = new Buffer(DType.BF16), right = new Buffer(DType.BF16);
    private final Buffer[] staging = {new Buffer(DType.F32), new Buffer(DType.F32), new Buffer(DType.F32)};
    private long generation;

    /** A weight's bf16 copy, made from {@code source} at {@code generation}. */
    private record Copy(Tensor source, long generation, Tensor bf16) { }

    /**
     * @throws UnsupportedOperationException without oneDNN; the message names the package to install
     */
    public Bf16Precision(MemoryPool pool) {
        this.pool = pool;
        try {
            this.matmul = new Bf16Matmul();
        } catch (UnsupportedOperationException | UnsatisfiedLinkError e) {
            throw new UnsupportedOperationException("--precision bf16 needs oneDNN 2.x: apt-get install libdnnl2 "
                    + "(or run scripts/ensure-onednn.sh), or train with --precision fp32");
        }
    }

    @Override public String label() { return "bf16"; }

    @Override
    public Tensor operand(Parameter weight) {
        Tensor value = weight.value();
        Copy copy = copies.get(weight);
        if (copy != null && copy.source == value && copy.generation == generation) return copy.bf16;
        dropUnbound();
        Tensor bf16 = copy != null && copy.source.numel() == value.numel() ? copy.bf16
                : Tensor.allocate(pool, MemoryCategory.PARAMETERS, DType.BF16, value.shape());
        if (copy != null && bf16 != copy.bf16) copy.bf16.close();
        Bf16Convert.fromFloat(bf16, value);
        copies.put(weight, new Copy(value, generation, bf16));
        return bf16;
    }

    /**
     * Frees the copies of weights whose values are no longer on this rank (ZeRO stage 3 released their unit), so
     * the copies held at once are those of the units gathered now, not the whole model's. Runs when a copy is made.
     */
    private void dropUnbound() {
        var entries = copies.entrySet().iterator();
        while (entries.hasNext()) {
            var e = entries.next();
            if (!e.getKey().hasValue()) {
                e.getValue().bf16.close();
                entries.remove();
            }
        }
    }

    @Override
    public void matmul(Tensor c, Tensor a, Tensor b, boolean transA, boolean transB, float alpha, float beta) {
        matmul.matmul(c, rounded(a, left), rounded(b, right), transA, transB, alpha, beta);
    }

    /** {@code t} if it is bf16, else its rounding in {@code buffer}. */
    private static Tensor rounded(Tensor t, Buffer buffer) {
        if (t.dtype() == DType.BF16) return t;
        Tensor out = buffer.take(t.shape());
        Bf16Convert.fromFloat(out, contiguous(t));
        return out;
    }

    private static Tensor contiguous(Tensor t) {
        if (!t.isContiguous()) {
            throw new IllegalArgumentException("bf16 products round contiguous f32 operands; got " + t.describe());
        }
        return t;
    }

    @Override
    public Tensor staging(StepArena arena, int slot, DType dtype, int... shape) {
        if (dtype != DType.F32) {
            throw new IllegalArgumentException("bf16 precision: activations must be f32, got " + dtype.label()
                    + " (float64 checks run under MatmulPrecision.FP32)");
        }
        return staging[slot].take(shape);
    }

    @Override
    public Tensor asKept(Tensor staged, Tensor kept) {
        if (kept != staged) Bf16Convert.toFloat(staged, kept);
        return staged;
    }

    @Override
    public Tensor keep(StepArena arena, Tensor x) {
        if (x.dtype() == DType.BF16) return x;
        requireF32(x, "keep");
        Tensor kept = arena.allocateForOverwrite(DType.BF16, x.shape());
        Bf16Convert.fromFloat(kept, contiguous(x));
        return kept;
    }

    @Override
    public Tensor widen(int slot, Tensor kept) {
        if (kept.dtype() != DType.BF16) return kept;
        Tensor wide = staging[slot].take(kept.shape());
        Bf16Convert.toFloat(wide, kept);
        return wide;
    }

    @Override
    public void weightsChanged() {
        generation++;
    }

    /** The oneDNN implementations the products ran on so far, e.g. {@code brg:avx512_core_amx}. */
    public java.util.List<String> implementations() {
        return matmul.implementations();
    }

    /** How many weights have a bf16 copy now (tests). */
    int cachedWeights() {
        return copies.size();
    }

    @Override
    public void close() {
        for (Copy c : copies.values()) c.bf16.close();
        copies.clear();
        left.close();
        right.close();
        for (Buffer b : staging) b.close();
        matmul.close();
    }

    @Override public String toString() { return "bf16"; }

    private static void requireF32(Tensor t, String what) {
        if (t.dtype() != DType.F32) {
            throw new IllegalArgumentException("bf16 precision " + what + ": activations must be f32, got " + t.describe()
                    + " (float64 checks run under MatmulPrecision.FP32)");
        }
    }

    /** A grow-only buffer of one dtype, handed out as views of the requested shape (valid until the next take). */
    private final class Buffer {
        private final DType dtype;
        private Tensor storage;

        Buffer(DType dtype) { this.dtype = dtype; }

        Tensor take(int[] shape) {
            long numel = 1;
            for (int s : shape) numel *= s;
            if (storage == null || storage.numel() < numel) {
                if (storage != null) storage.close();
                storage = Tensor.allocate(pool, MemoryCategory.BUFFERS, dtype, Math.toIntExact(numel));
            }
            return storage.slice(0, 0, (int) numel).view(shape);
        }

        void close() {
            if (storage != null) storage.close();
            storage = null;
        }
    }
}
