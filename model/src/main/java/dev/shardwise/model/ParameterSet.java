package dev.shardwise.model;

import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;

/**
 * All parameters of a model in one flat buffer, and all gradients in another, with a named view per
 * parameter (llm.c's layout): the optimizer, gradient clipping and data-parallel reduction each run as one
 * flat loop, while layers see their own tensors by name.
 *
 * <p>Built in two steps: layers {@linkplain Builder#declare declare} name, shape, initialisation and decay;
 * {@link Builder#allocate} then charges both buffers to a rank's pool (PARAMETERS and GRADIENTS).
 * Initialisation is seeded per parameter from its name, so it does not depend on declaration order or on
 * how a later parallel layout splits the model.
 *
 * <p>Owns its two buffers: {@link #close()} frees them.
 */
public final class ParameterSet implements AutoCloseable {

    /** How a parameter starts. */
    public sealed interface Init permits Init.Normal, Init.SplitNormal, Init.Constant {
        /** Gaussian with mean 0 and standard deviation {@code std}. */
        record Normal(double std) implements Init { }
        /** Gaussian with std {@code std} for rows below {@code splitRow} and {@code stdAfter} from it on. */
        record SplitNormal(double std, int splitRow, double stdAfter) implements Init { }
        /** Every element equal to {@code value}. */
        record Constant(double value) implements Init { }
    }

    /** A declared parameter. */
    public record Spec(String name, int[] shape, Init init, boolean weightDecay) {
        public long numel() {
            long n = 1;
            for (int s : shape) n *= s;
            return n;
        }
    }

    private final DType dtype;
    private final Tensor values;
    private final Tensor grads;
    private final Map<String, Parameter> byName;
    private final List<Spec> specs;
    private final long count;

    private ParameterSet(DType dtype, Tensor values, Tensor grads, Map<String, Parameter> byName, List<Spec> specs,
                         long count) {
        this.dtype = dtype;
        this.values = values;
        this.grads = grads;
        this.byName = byName;
        this.specs = specs;
        this.count = count;
    }

    public static Builder builder() {
        return new Builder();
    }

    /** Collects parameter declarations in order. */
    public static final class Builder {
        private final Map<String, Spec> specs = new LinkedHashMap<>();

        /**
         * Declares a parameter.
         *
         * @throws IllegalArgumentException if the name was declared before
         */
        public Builder declare(String name, Init init, boolean weightDecay, int... shape) {
            if (specs.containsKey(name)) throw new IllegalArgumentException("parameter '" + name + "' declared twice");
            specs.put(name, new Spec(name, shape.clone(), init, weightDecay));
            return this;
        }

        /** Allocates the flat value and gradient buffers (zeroed) and the named views. */
        public ParameterSet allocate(MemoryPool pool, DType dtype) {
            return allocate(pool, dtype, 1);
        }

        /**
         * As {@link #allocate(MemoryPool, DType)}, with the flat buffers padded by zeros (belonging to no
         * parameter) to a multiple of {@code padMultiple} elements, so they split into equal shards (ZeRO).
         */
        public ParameterSet allocate(MemoryPool pool, DType dtype, int padMultiple) {
            if (padMultiple < 1) throw new IllegalArgumentException("padMultiple must be >= 1, got " + padMultiple);
            long total = 0;
            for (Spec s : specs.values()) total += s.numel();
            long real = total;
            total = (total + padMultiple - 1) / padMultiple * padMultiple;
            int n = Math.toIntExact(total);
            Tensor values = Tensor.allocate(pool, MemoryCategory.PARAMETERS, dtype, n);
            Tensor grads;
            try {
                grads = Tensor.allocate(pool, MemoryCategory.GRADIENTS, dtype, n);
            } catch (RuntimeException e) {
                values.close();
                throw e;
            }
            Map<String, Parameter> byName = new LinkedHashMap<>();
            int offset = 0;
            for (Spec s : specs.values()) {
                int size = (int) s.numel();
                byName.put(s.name, new Parameter(s.name, values.slice(0, offset, size).view(s.shape),
                        grads.slice(0, offset, size).view(s.shape), s.weightDecay));
                offset += size;
            }
            return new ParameterSet(dtype, values, grads, Collections.unmodifiableMap(byName),
                    List.copyOf(specs.values()), real);
        }
    }

    /**
     * The parameter called {@code name}.
     *
     * @throws IllegalArgumentException if there is none, listing a few that exist
     */
    public Parameter get(String name) {
        Parameter p = byName.get(name);
        if (p == null) {
            List<String> some = new ArrayList<>(byName.keySet()).subList(0, Math.min(8, byName.size()));
            throw new IllegalArgumentException("no parameter named '" + name + "' (the model has " + byName.size()
                    + ", e.g. " + some + ")");
        }
        return p;
    }

    /** Parameters in declaration order. */
    public List<Parameter> parameters() {
        return List.copyOf(byName.values());
    }

    public List<Spec> specs() { return specs; }
    public DType dtype() { return dtype; }
    /** All values, flat [P'] (P' = P rounded up to the padding multiple; the padding stays 0). */
    public Tensor values() { return values; }
    /** All gradients, flat [P']. */
    public Tensor grads() { return grads; }
    /** P, the number of parameters (padding excluded). */
    public long count() { return count; }

    /** Offset of {@code p} in the flat buffers, in elements. */
    public long offsetOf(Parameter p) {
        return p.value().offset() - values.offset();
    }

    /** Fills every parameter from its {@link Init}, seeded by {@code seed} and the parameter's name. */
    public void initialize(long seed) {
        for (Spec s : specs) {
            Tensor t = byName.get(s.name).value();
            long n = s.numel();
            double[] data = new double[(int) n];
            switch (s.init) {
                case Init.Normal(double std) -> {
                    SplittableRandom random = new SplittableRandom(seed * 0x9E3779B97F4A7C15L + s.name.hashCode());
                    for (int i = 0; i < n; i++) data[i] = random.nextGaussian() * std;
                }
                case Init.SplitNormal(double std, int splitRow, double stdAfter) -> {
                    SplittableRandom random = new SplittableRandom(seed * 0x9E3779B97F4A7C15L + s.name.hashCode());
                    long rowSize = n / s.shape[0];
                    for (int i = 0; i < n; i++) data[i] = random.nextGaussian() * (i / rowSize < splitRow ? std : stdAfter);
                }
                case Init.Constant(double value) -> Arrays.fill(data, value);
            }
            t.copyFrom(data);
        }
    }

    /** Sets every gradient to zero. */
    public void zeroGrads() {
        grads.segment().asSlice(grads.byteOffset(), grads.numel() * dtype.byteSize()).fill((byte) 0);
    }

    @Override
    public void close() {
        values.close();
        grads.close();
    }
}
