package dev.shardwise.model;

import dev.shardwise.core.kernels.Vectors;
import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collection;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.SplittableRandom;
import java.util.function.Predicate;

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
 * <p>Parameters are grouped into {@linkplain Unit units} (contiguous in the flat buffers, each padded to the
 * padding multiple): what sharded data parallelism gathers and reduces at once. Under ZeRO 2 and 3 a set holds
 * only some of its flat buffers ({@link Residency}) and the sharding binds the rest unit by unit.
 *
 * <p>Owns its flat buffers: {@link #close()} frees them.
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

    /**
     * Which part of a global tensor a tensor-parallel rank holds (Shoeybi et al. 2019): along dimension {@code dim}
     * of the global tensor {@code globalShape}, the pieces [starts[i], starts[i] + lengths[i]) concatenated in
     * order, then {@code paddingRows} rows of zeros that belong to no global element (a vocabulary padded to a
     * multiple of tp). Every other dimension is whole. A fused qkv weight split by heads holds three pieces (its
     * q, k and v rows); a column- or row-parallel matrix one. Checkpoints will key a slice by the parameter's
     * global name and these fields, so any layout can read them.
     *
     * <p>Replicated pieces: piece i is held, with equal values, by {@code replicas[i]} consecutive tp ranks (those
     * with the same tpRank / replicas[i]), 1 for a piece no other rank holds. Grouped-query attention with fewer kv
     * heads than tp ranks replicates each kv head's k and v rows this way (Megatron): each of those ranks computes
     * only a part of the piece's gradient, which the update sums over them ({@code TensorParallelGradients}), and a
     * gather may take the piece from any of them (they are equal) while a scatter gives it to each.
     *
     * @param dim         the split dimension of the global tensor
     * @param globalShape the shape of the whole tensor, as the single-rank model declares it
     * @param starts      where each piece starts along {@code dim}, in global indices
     * @param lengths     each piece's length along {@code dim}
     * @param paddingRows zero rows after the pieces, along {@code dim} (only with dim 0)
     * @param replicas    for each piece, how many consecutive tp ranks hold it (at least 1)
     */
    public record Slice(int dim, int[] globalShape, int[] starts, int[] lengths, int paddingRows, int[] replicas) {
        /** @throws IllegalArgumentException if a piece leaves the global tensor or the arrays disagree */
        public Slice {
            globalShape = globalShape.clone();
            starts = starts.clone();
            lengths = lengths.clone();
            replicas = replicas.clone();
            if (dim < 0 || dim >= globalShape.length || starts.length != lengths.length || paddingRows < 0
                    || (paddingRows > 0 && dim != 0) || replicas.length != starts.length) {
                throw new IllegalArgumentException("bad slice: dim " + dim + " of " + Arrays.toString(globalShape) + ", starts "
                        + Arrays.toString(starts) + ", lengths " + Arrays.toString(lengths) + ", padding " + paddingRows
                        + ", replicas " + Arrays.toString(replicas));
            }
            for (int i = 0; i < starts.length; i++) {
                if (starts[i] < 0 || lengths[i] < 0 || starts[i] + lengths[i] > globalShape[dim]) {
                    throw new IllegalArgumentException("slice piece [" + starts[i] + ", " + (starts[i] + lengths[i])
                            + ") leaves dimension " + dim + " of " + Arrays.toString(globalShape));
                }
                if (replicas[i] < 1) throw new IllegalArgumentException("slice piece " + i + " has replicas " + replicas[i] + "; at least 1");
            }
        }

        /** Pieces no other tp rank holds (replicas all 1). */
        public Slice(int dim, int[] globalShape, int[] starts, int[] lengths, int paddingRows) {
            this(dim, globalShape, starts, lengths, paddingRows, ones(starts.length));
        }

        private static int[] ones(int n) {
            int[] a = new int[n];
            Arrays.fill(a, 1);
            return a;
        }

        /** Whether some piece is held by more than one tp rank. */
        public boolean replicated() {
            for (int r : replicas) if (r > 1) return true;
            return false;
        }

        /** One piece [start, start + length) along {@code dim}. */
        public static Slice of(int dim, int start, int length, int... globalShape) {
            return new Slice(dim, globalShape, new int[]{start}, new int[]{length}, 0);
        }

        /** The local tensor's shape: the global one with dimension {@code dim} cut to the pieces plus padding. */
        public int[] localShape() {
            int[] shape = globalShape.clone();
            int n = paddingRows;
            for (int l : lengths) n += l;
            shape[dim] = n;
            return shape;
        }

        /** The local elements taken from {@code global} (row-major, {@link #globalShape()}), padding rows 0. */
        public double[] take(double[] global) {
            int[] local = localShape();
            long inner = 1, outer = 1;
            for (int d = dim + 1; d < globalShape.length; d++) inner *= globalShape[d];
            for (int d = 0; d < dim; d++) outer *= globalShape[d];
            double[] out = new double[Math.toIntExact(outer * local[dim] * inner)];
            int at = 0;
            for (long o = 0; o < outer; o++) {
                for (int i = 0; i < starts.length; i++) {
                    int from = Math.toIntExact((o * globalShape[dim] + starts[i]) * inner);
                    int n = Math.toIntExact(lengths[i] * inner);
                    System.arraycopy(global, from, out, at, n);
                    at += n;
                }
                at += Math.toIntExact(paddingRows * inner);
            }
            return out;
        }

        @Override
        public String toString() {
            return "dim " + dim + " of " + Arrays.toString(globalShape) + " starts " + Arrays.toString(starts) + " lengths "
                    + Arrays.toString(lengths) + (paddingRows > 0 ? " + " + paddingRows + " padding rows" : "")
                    + (replicated() ? " replicas " + Arrays.toString(replicas) : "");
        }
    }

    /**
     * A declared parameter.
     *
     * @param shape the local shape (the slice's {@link Slice#localShape()} when sliced)
     * @param slice the part of the global tensor this rank holds under tensor parallelism, or null when it holds the
     *              whole tensor (then the parameter is replicated over the tensor-parallel group, if any)
     * @param sequenceParallel whether each tp rank computes the gradient over its sequence shard only (a whole tensor
     *              used in the sequence-parallel region: norms; Megatron's {@code sequence_parallel} attribute), so the
     *              update sums it over the tp group
     */
    public record Spec(String name, int[] shape, Init init, boolean weightDecay, Slice slice, boolean sequenceParallel) {
        public Spec(String name, int[] shape, Init init, boolean weightDecay) {
            this(name, shape, init, weightDecay, null, false);
        }

        public Spec(String name, int[] shape, Init init, boolean weightDecay, Slice slice) {
            this(name, shape, init, weightDecay, slice, false);
        }

        public long numel() {
            long n = 1;
            for (int s : shape) n *= s;
            return n;
        }
    }

    /**
     * A contiguous run of parameters that the model uses together (the embeddings, one transformer block, the
     * final layers): the grain at which sharded data parallelism gathers parameters and reduces gradients.
     *
     * @param index      position in {@link #units()}, which is declaration order
     * @param name       e.g. {@code embeddings}, {@code h.3}, {@code final}
     * @param parameters the unit's parameters in declaration order
     * @param offset     where the unit starts in the flat buffers, in elements (a multiple of the padding multiple)
     * @param size       elements, padded by zeros to a multiple of the padding multiple
     */
    public record Unit(int index, String name, List<Parameter> parameters, int offset, int size) { }

    /** Which flat buffers a set allocates; the others are left to a sharding scheme (ZeRO 2 and 3) to provide. */
    public enum Residency {
        /** Full values and full gradients: single rank, data parallelism, ZeRO 1. */
        VALUES_AND_GRADS,
        /** Full values only; gradients are bound unit by unit (ZeRO 2). */
        VALUES,
        /** Neither; values and gradients are bound unit by unit (ZeRO 3). */
        NONE
    }

    private final DType dtype;
    private final Tensor values;   // or null
    private final Tensor grads;    // or null
    private final Map<String, Parameter> byName;
    private final List<Spec> specs;
    private final List<Unit> units;
    private final long count;
    private final long padded;
    private MatmulPrecision precision = MatmulPrecision.FP32;

    private ParameterSet(DType dtype, Tensor values, Tensor grads, Map<String, Parameter> byName, List<Spec> specs,
                         List<Unit> units, long count, long padded) {
        this.dtype = dtype;
        this.values = values;
        this.grads = grads;
        this.byName = byName;
        this.specs = specs;
        this.units = units;
        this.count = count;
        this.padded = padded;
    }

    public static Builder builder() {
        return new Builder();
    }

    /** Collects parameter declarations, grouped into units, in order. */
    public static final class Builder {
        private final Map<String, Spec> specs = new LinkedHashMap<>();
        private final Map<String, String> unitOf = new LinkedHashMap<>();   // parameter -> unit name
        private final List<String> unitNames = new ArrayList<>();
        private Predicate<String> segmentKind = name -> false;   // where padding also goes inside a unit

        /**
         * Starts a new unit: the parameters declared from now on belong to {@code name} (parameters declared
         * before any call form a unit called {@code all}).
         *
         * @throws IllegalArgumentException if the name was used before
         */
        public Builder unit(String name) {
            if (unitNames.contains(name)) throw new IllegalArgumentException("unit '" + name + "' declared twice");
            unitNames.add(name);
            return this;
        }

        /**
         * Declares a parameter.
         *
         * @throws IllegalArgumentException if the name was declared before
         */
        public Builder declare(String name, Init init, boolean weightDecay, int... shape) {
            if (specs.containsKey(name)) throw new IllegalArgumentException("parameter '" + name + "' declared twice");
            if (unitNames.isEmpty()) unitNames.add("all");
            specs.put(name, new Spec(name, shape.clone(), init, weightDecay));
            unitOf.put(name, unitNames.getLast());
            return this;
        }

        /**
         * Declares a whole parameter that sequence parallelism (Korthikanti et al. 2022) uses on each tp rank's
         * sequence shard only, so each rank's gradient is a partial sum the update adds up over the tp group
         * ({@link Parameter#sequenceParallel}).
         *
         * @throws IllegalArgumentException if the name was declared before
         */
        public Builder declareSequenceParallel(String name, Init init, boolean weightDecay, int... shape) {
            if (specs.containsKey(name)) throw new IllegalArgumentException("parameter '" + name + "' declared twice");
            if (unitNames.isEmpty()) unitNames.add("all");
            specs.put(name, new Spec(name, shape.clone(), init, weightDecay, null, true));
            unitOf.put(name, unitNames.getLast());
            return this;
        }

        /**
         * Declares a tensor-parallel rank's {@code slice} of a parameter: its local shape is
         * {@link Slice#localShape()}, and {@link ParameterSet#initialize} gives it exactly the slice of the values
         * the whole tensor would get (the global tensor is generated from the name's seed, then sliced).
         *
         * @throws IllegalArgumentException if the name was declared before
         */
        public Builder declareSlice(String name, Init init, boolean weightDecay, Slice slice) {
            if (specs.containsKey(name)) throw new IllegalArgumentException("parameter '" + name + "' declared twice");
            if (unitNames.isEmpty()) unitNames.add("all");
            specs.put(name, new Spec(name, slice.localShape(), init, weightDecay, slice));
            unitOf.put(name, unitNames.getLast());
            return this;
        }

        /**
         * Pads each unit also where {@code kind} changes value between consecutive parameters, so every run of
         * parameters of one kind inside a unit (a segment) starts and ends on the padding multiple: what lets
         * expert parallelism shard an MoE block's experts over another group than its dense parameters (ZeRO 2 and 3
         * under ep). Applies to {@link #allocate} and {@link #paddedCount}; without it, a unit is one segment.
         */
        public Builder segmentedBy(Predicate<String> kind) {
            this.segmentKind = Objects.requireNonNull(kind, "kind");
            return this;
        }

        /** The declarations so far, in order. */
        public List<Spec> specs() {
            return List.copyOf(specs.values());
        }

        /** P, the elements declared so far (padding excluded), as {@link ParameterSet#count} of the allocated set. */
        public long count() {
            long n = 0;
            for (Spec s : specs.values()) n += s.numel();
            return n;
        }

        /** P': the flat buffers' length with every unit padded to a multiple of {@code padMultiple}, without allocating. */
        public long paddedCount(int padMultiple) {
            if (padMultiple < 1) throw new IllegalArgumentException("padMultiple must be >= 1, got " + padMultiple);
            long total = 0;
            String unit = null;
            Boolean kind = null;
            for (Spec s : specs.values()) {
                boolean k = segmentKind.test(s.name);
                if (unit != null && (!unit.equals(unitOf.get(s.name)) || k != kind)) total = padUp(total, padMultiple);
                unit = unitOf.get(s.name);
                kind = k;
                total += s.numel();
            }
            return padUp(total, padMultiple);
        }

        /**
         * The padded elements of the segments ({@link #segmentedBy}) whose kind is {@code kind}: with every unit and
         * segment padded to a multiple of {@code padMultiple}, what the flat layout gives the runs of that kind
         * ({@link #paddedCount} is the sum over both kinds).
         */
        public long paddedCount(int padMultiple, boolean kind) {
            if (padMultiple < 1) throw new IllegalArgumentException("padMultiple must be >= 1, got " + padMultiple);
            long total = 0, run = 0;
            String unit = null;
            Boolean current = null;
            for (Spec s : specs.values()) {
                boolean k = segmentKind.test(s.name);
                if (unit != null && (!unit.equals(unitOf.get(s.name)) || k != current)) {
                    if (current == kind) total += padUp(run, padMultiple);
                    run = 0;
                }
                unit = unitOf.get(s.name);
                current = k;
                run += s.numel();
            }
            if (current != null && current == kind) total += padUp(run, padMultiple);
            return total;
        }

        /**
         * How many segments ({@link #segmentedBy}) of kind {@code kind} the units have: runs of consecutive parameters of
         * one kind inside one unit, each of which ZeRO 2 and 3 gather and reduce-scatter by a collective of its own.
         * Without {@code segmentedBy} every unit is one segment of kind false.
         */
        public int segmentCount(boolean kind) {
            int count = 0;
            String unit = null;
            Boolean current = null;
            for (Spec s : specs.values()) {
                boolean k = segmentKind.test(s.name);
                if (unit == null || !unit.equals(unitOf.get(s.name)) || k != current) {
                    if (k == kind) count++;
                }
                unit = unitOf.get(s.name);
                current = k;
            }
            return count;
        }

        /** The largest unit's element count: what ZeRO 2 and 3 hold whole while a unit is reduced or gathered. */
        public long largestUnit() {
            return unitSizes().values().stream().mapToLong(Long::longValue).max().orElse(0);
        }

        /** Each unit's element count (before padding), by unit name in declaration order. */
        public Map<String, Long> unitSizes() {
            Map<String, Long> perUnit = new LinkedHashMap<>();
            for (Spec s : specs.values()) perUnit.merge(unitOf.get(s.name), s.numel(), Long::sum);
            return perUnit;
        }

        /** Allocates the flat value and gradient buffers (zeroed) and the named views. */
        public ParameterSet allocate(MemoryPool pool, DType dtype) {
            return allocate(pool, dtype, 1);
        }

        /**
         * As {@link #allocate(MemoryPool, DType)}, with every unit padded by zeros (belonging to no parameter) to a
         * multiple of {@code padMultiple} elements, so the flat buffers and each unit split into equal shards (ZeRO).
         */
        public ParameterSet allocate(MemoryPool pool, DType dtype, int padMultiple) {
            return allocate(pool, dtype, padMultiple, Residency.VALUES_AND_GRADS);
        }

        /**
         * As {@link #allocate(MemoryPool, DType, int)}, allocating only the flat buffers {@code residency} names;
         * parameters without a flat buffer start unbound (see {@link Parameter#bind}).
         */
        public ParameterSet allocate(MemoryPool pool, DType dtype, int padMultiple, Residency residency) {
            if (padMultiple < 1) throw new IllegalArgumentException("padMultiple must be >= 1, got " + padMultiple);
            Map<String, Parameter> byName = new LinkedHashMap<>();
            Map<String, List<Parameter>> members = new LinkedHashMap<>();
            Map<String, int[]> extent = new LinkedHashMap<>();   // unit -> {offset, padded size}
            long offset = 0, real = 0;
            String current = null;
            boolean currentKind = false;
            for (Spec s : specs.values()) {
                String unit = unitOf.get(s.name);
                boolean kind = segmentKind.test(s.name);
                if (unit.equals(current) && kind != currentKind) offset = padUp(offset, padMultiple);   // a new segment
                currentKind = kind;
                if (!unit.equals(current)) {
                    if (current != null) offset = close(extent, current, offset, padMultiple);
                    current = unit;
                    extent.put(unit, new int[]{Math.toIntExact(offset), 0});
                    members.put(unit, new ArrayList<>());
                }
                Parameter p = new Parameter(s.name, s.shape, s.weightDecay, offset, s.slice, s.sequenceParallel);
                byName.put(s.name, p);
                members.get(unit).add(p);
                offset += s.numel();
                real += s.numel();
            }
            if (current != null) offset = close(extent, current, offset, padMultiple);
            int n = Math.toIntExact(offset);
            List<Unit> units = new ArrayList<>();
            for (Map.Entry<String, int[]> e : extent.entrySet()) {
                units.add(new Unit(units.size(), e.getKey(), List.copyOf(members.get(e.getKey())), e.getValue()[0],
                        e.getValue()[1]));
            }
            Tensor values = residency == Residency.NONE ? null : Tensor.allocate(pool, MemoryCategory.PARAMETERS, dtype, n);
            Tensor grads;
            try {
                grads = residency == Residency.VALUES_AND_GRADS ? Tensor.allocate(pool, MemoryCategory.GRADIENTS, dtype, n) : null;
            } catch (RuntimeException e) {
                if (values != null) values.close();
                throw e;
            }
            for (Parameter p : byName.values()) {
                int at = Math.toIntExact(p.offset()), size = Math.toIntExact(p.numel());
                p.bind(values == null ? null : values.slice(0, at, size).view(p.shape()),
                        grads == null ? null : grads.slice(0, at, size).view(p.shape()));
            }
            return new ParameterSet(dtype, values, grads, Collections.unmodifiableMap(byName),
                    List.copyOf(specs.values()), List.copyOf(units), real, n);
        }

        private static long padUp(long end, int padMultiple) {
            return (end + padMultiple - 1) / padMultiple * padMultiple;
        }

        private static long close(Map<String, int[]> extent, String unit, long end, int padMultiple) {
            int[] e = extent.get(unit);
            long paddedEnd = padUp(end, padMultiple);
            e[1] = Math.toIntExact(paddedEnd - e[0]);
            return paddedEnd;
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

    /** Units in declaration order; together they cover the flat buffers without gaps. */
    public List<Unit> units() { return units; }

    public List<Spec> specs() { return specs; }
    public DType dtype() { return dtype; }

    /**
     * All values, flat [P'] (P' = P with every unit rounded up to the padding multiple; the padding stays 0).
     *
     * @throws IllegalStateException if this set holds no flat values (ZeRO 3)
     */
    public Tensor values() {
        if (values == null) throw new IllegalStateException("this parameter set holds no flat values (residency NONE: "
                + "ZeRO 3 keeps only a shard of them per rank); gather them through the sharding scheme");
        return values;
    }

    /**
     * All gradients, flat [P'].
     *
     * @throws IllegalStateException if this set holds no flat gradients (ZeRO 2 and 3)
     */
    public Tensor grads() {
        if (grads == null) throw new IllegalStateException("this parameter set holds no flat gradients (ZeRO 2 and 3 "
                + "keep only a shard of them per rank)");
        return grads;
    }

    /** Which flat buffers this set holds. */
    public Residency residency() {
        return values == null ? Residency.NONE : grads == null ? Residency.VALUES : Residency.VALUES_AND_GRADS;
    }

    /** P, the number of parameters (padding excluded). */
    public long count() { return count; }

    /** P', the length of the flat buffers (padding included), whether or not this set holds them. */
    public long paddedCount() { return padded; }

    /** Offset of {@code p} in the flat buffers, in elements. */
    public long offsetOf(Parameter p) {
        return p.offset();
    }

    /** Fills every parameter from its {@link Init}, seeded by {@code seed} and the parameter's name. */
    public void initialize(long seed) {
        initialize(seed, byName.values());
    }

    /**
     * As {@link #initialize(long)}, for {@code which} only (their values must be bound): the same values as a
     * whole-set initialisation gives them, so a sharded model can be initialised unit by unit.
     */
    public void initialize(long seed, Collection<Parameter> which) {
        Map<String, Spec> specByName = new LinkedHashMap<>();
        for (Spec s : specs) specByName.put(s.name, s);
        for (Parameter p : which) {
            Spec s = specByName.get(p.name());
            if (s == null) throw new IllegalArgumentException("parameter " + p.name() + " is not in this set");
            Tensor t = p.value();
            int[] globalShape = s.slice == null ? s.shape : s.slice.globalShape();
            long n = 1;
            for (int d : globalShape) n *= d;
            double[] data = new double[(int) n];
            switch (s.init) {
                case Init.Normal(double std) -> {
                    SplittableRandom random = new SplittableRandom(seed * 0x9E3779B97F4A7C15L + s.name.hashCode());
                    for (int i = 0; i < n; i++) data[i] = random.nextGaussian() * std;
                }
                case Init.SplitNormal(double std, int splitRow, double stdAfter) -> {
                    SplittableRandom random = new SplittableRandom(seed * 0x9E3779B97F4A7C15L + s.name.hashCode());
                    long rowSize = n / globalShape[0];
                    for (int i = 0; i < n; i++) data[i] = random.nextGaussian() * (i / rowSize < splitRow ? std : stdAfter);
                }
                case Init.Constant(double value) -> Arrays.fill(data, value);
            }
            t.copyFrom(s.slice == null ? data : s.slice.take(data));
        }
    }

    /**
     * How the layers over this set run their weight products ({@link MatmulPrecision#FP32} unless
     * {@link #usePrecision} said otherwise). Layers read it at each product, so every layer of the set shares one
     * choice and one cache of bf16 weight copies.
     */
    public MatmulPrecision precision() {
        return precision;
    }

    /**
     * Makes {@code precision} the set's (before a pass; the caller keeps ownership and closes it). Under bf16 the
     * set's dtype must be F32 (fp32 master weights).
     *
     * @throws IllegalArgumentException if bf16 is asked for a set that is not F32
     */
    public void usePrecision(MatmulPrecision precision) {
        if (precision != MatmulPrecision.FP32 && dtype != DType.F32) {
            throw new IllegalArgumentException("precision " + precision.label() + " needs f32 master weights, the set is " + dtype.label());
        }
        this.precision = java.util.Objects.requireNonNull(precision, "precision");
        precision.weightsChanged();
    }

    /** Sets every gradient to zero; nothing when this set holds no flat gradients (their owner zeroes them). */
    public void zeroGrads() {
        if (grads == null) return;
        if (dtype == DType.F32 || dtype == DType.F64) {
            Vectors.zero(grads);   // on the compute pool's threads
        } else {
            grads.segment().asSlice(grads.byteOffset(), grads.numel() * dtype.byteSize()).fill((byte) 0);
        }
    }

    @Override
    public void close() {
        if (values != null) values.close();
        if (grads != null) grads.close();
    }
}
