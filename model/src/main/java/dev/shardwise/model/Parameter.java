package dev.shardwise.model;

import dev.shardwise.core.tensor.Tensor;

import java.util.Arrays;

/**
 * A trainable tensor, its gradient (same shape), and whether AdamW decays it.
 *
 * <p>Layers read {@link #value()} and {@link #grad()} each time they run, never keep them: normally both are
 * views into the model's flat buffers, bound once; under ZeRO stages 2 and 3 (sharded data parallelism) the
 * gradient, and at stage 3 the value too, exist only while the parameter's unit runs, in a transient buffer
 * that the sharding code {@linkplain #bind binds} before and unbinds after.
 */
public final class Parameter {
    private final String name;
    private final int[] shape;
    private final boolean weightDecay;
    private final long offset;
    private final ParameterSet.Slice slice;
    private final boolean sequenceParallel;
    private Tensor value;
    private Tensor grad;

    /**
     * @param name        global name, e.g. {@code h.3.attn.qkv.weight}; checkpoints key on it
     * @param shape       the tensor's shape, fixed whatever it is bound to
     * @param weightDecay true for matrices; false for norms, biases and embeddings by default
     * @param offset      where the parameter starts in its set's flat buffers, in elements
     * @param slice       the part of the global tensor held under tensor parallelism, or null for the whole tensor
     * @param sequenceParallel whether each tp rank's gradient covers only its sequence shard (see {@link #sequenceParallel})
     */
    Parameter(String name, int[] shape, boolean weightDecay, long offset, ParameterSet.Slice slice, boolean sequenceParallel) {
        this.slice = slice;
        this.sequenceParallel = sequenceParallel;
        this.name = name;
        this.shape = shape.clone();
        this.weightDecay = weightDecay;
        this.offset = offset;
    }

    /** Global name, e.g. {@code h.3.attn.qkv.weight}; checkpoints key on it. */
    public String name() { return name; }

    /** True for matrices; false for norms, biases and embeddings by default. */
    public boolean weightDecay() { return weightDecay; }

    /** The part of the global tensor this rank holds under tensor parallelism, or null when it holds all of it. */
    public ParameterSet.Slice slice() { return slice; }

    /**
     * Whether every tensor-parallel rank holds the whole tensor (norms, row-parallel biases, learned positions):
     * then their gradients are equal and a global gradient norm counts the parameter once, not once per rank.
     */
    public boolean replicatedOverTensorParallel() { return slice == null; }

    /**
     * Whether the parameter is used in the sequence-parallel region (Korthikanti et al. 2022: norms), so each tp
     * rank's gradient is the partial sum over its T/tp positions and the update sums it over the tp group before
     * the norm and the step (Megatron's {@code sequence_parallel} attribute). Such a parameter is whole on every
     * tp rank ({@link #replicatedOverTensorParallel}), counted once in the gradient norm after the sum.
     */
    public boolean sequenceParallel() { return sequenceParallel; }

    /** The shape of the value and of the gradient. */
    public int[] shape() { return shape.clone(); }

    /** Number of elements. */
    public long numel() {
        long n = 1;
        for (int s : shape) n *= s;
        return n;
    }

    /** Where the parameter starts in its set's flat buffers (and in every flat [P'] tensor laid out like them). */
    long offset() { return offset; }

    /**
     * The weights, with {@link #shape()}.
     *
     * @throws IllegalStateException if they are not on this rank now (ZeRO stage 3 between uses)
     */
    public Tensor value() {
        Tensor v = value;
        if (v == null) throw notResident("value");
        return v;
    }

    /**
     * The gradient, with {@link #shape()}; backward accumulates into it.
     *
     * @throws IllegalStateException if it is not on this rank now (ZeRO stages 2 and 3 outside backward)
     */
    public Tensor grad() {
        Tensor g = grad;
        if (g == null) throw notResident("gradient");
        return g;
    }

    /** Whether {@link #value()} is bound now. */
    public boolean hasValue() { return value != null; }

    /** Whether {@link #grad()} is bound now. */
    public boolean hasGrad() { return grad != null; }

    /**
     * Points the parameter at new storage; null leaves it unbound. Sharded data parallelism calls it around the
     * use of a unit; the tensors must stay valid until the next bind.
     *
     * @throws IllegalArgumentException if a tensor's shape is not {@link #shape()}
     */
    public void bind(Tensor value, Tensor grad) {
        check(value, "value");
        check(grad, "gradient");
        this.value = value;
        this.grad = grad;
    }

    /** As {@link #bind}, for the value only; the gradient's binding stays. */
    public void bindValue(Tensor value) {
        check(value, "value");
        this.value = value;
    }

    /** As {@link #bind}, for the gradient only; the value's binding stays. */
    public void bindGrad(Tensor grad) {
        check(grad, "gradient");
        this.grad = grad;
    }

    private void check(Tensor t, String what) {
        if (t != null && !Arrays.equals(t.shape(), shape)) {
            throw new IllegalArgumentException("parameter " + name + ": cannot bind a " + what + " of shape "
                    + Arrays.toString(t.shape()) + "; its shape is " + Arrays.toString(shape));
        }
    }

    private IllegalStateException notResident(String what) {
        return new IllegalStateException("the " + what + " of parameter " + name + " is not on this rank now: ZeRO "
                + "shards it and gathers it only while its unit runs; run the model with the sharding's hooks "
                + "(Gpt.useHooks) or gather the parameters first");
    }

    @Override
    public String toString() {
        return name + Arrays.toString(shape);
    }
}
