package dev.shardwise.infer.moefy;

import dev.shardwise.core.kernels.Bias;
import dev.shardwise.core.kernels.Gelu;
import dev.shardwise.core.kernels.Gemm;
import dev.shardwise.core.kernels.SwiGlu;
import dev.shardwise.core.memory.StepArena;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;
import dev.shardwise.model.ModelConfig;
import dev.shardwise.model.ParameterSet;

import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorSpecies;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;

/**
 * The feed-forward weights of one block read as E experts of S = F/E consecutive neurons (MoEfication, Zhang et al.
 * 2022), after {@link ExpertPermutation} has put each expert's neurons next to each other. Expert e owns rows
 * [e·S, (e+1)·S) of the input linears (fc, or SwiGLU's gate and up) with their biases, and the same columns of the
 * output linear (proj, or down):
 * <pre>
 *   GELU    y = Σ_e GELU(x·W_fc,eᵀ + b_fc,e)·W_proj,eᵀ + b_proj
 *   SWIGLU  y = Σ_e (silu(x·W_gate,eᵀ) ∘ x·W_up,eᵀ)·W_down,eᵀ (+ biases where the model has them)
 * </pre>
 * The expert tensors are views of the parameters (no copies); the output linear's expert slices are column slices
 * [C, S] with row stride F, which the GEMM takes as they are. Not thread-safe.
 */
final class ExpertWeights {
    private static final VectorSpecies<Float> FLOATS = FloatVector.SPECIES_PREFERRED;
    private final ModelConfig.Mlp mlp;
    private final int experts, size, hidden;   // E, S = F/E, C
    private final Tensor in, inBias, up, upBias, out, outBias;   // [F, C], [F], [F, C] | null, [F] | null, [C, F], [C]

    private ExpertWeights(ModelConfig.Mlp mlp, int experts, Tensor in, Tensor inBias, Tensor up, Tensor upBias, Tensor out,
                          Tensor outBias) {
        this.mlp = mlp;
        this.experts = experts;
        this.size = in.dim(0) / experts;
        this.hidden = in.dim(1);
        this.in = in;
        this.inBias = inBias;
        this.up = up;
        this.upBias = upBias;
        this.out = out;
        this.outBias = outBias;
    }

    /**
     * Block {@code layer}'s feed-forward in {@code params} as {@code experts} experts.
     *
     * @throws IllegalArgumentException if E does not divide F, naming both and the divisors to choose from
     */
    static ExpertWeights of(ParameterSet params, ModelConfig config, int layer, int experts) {
        checkExperts(config, experts);
        String p = "h." + layer + ".mlp.";
        boolean bias = config.bias();
        return switch (config.mlp()) {
            case GELU -> new ExpertWeights(config.mlp(), experts, value(params, p + "fc.weight"),
                    bias ? value(params, p + "fc.bias") : null, null, null, value(params, p + "proj.weight"),
                    bias ? value(params, p + "proj.bias") : null);
            case SWIGLU -> new ExpertWeights(config.mlp(), experts, value(params, p + "gate.weight"),
                    bias ? value(params, p + "gate.bias") : null, value(params, p + "up.weight"),
                    bias ? value(params, p + "up.bias") : null, value(params, p + "down.weight"),
                    bias ? value(params, p + "down.bias") : null);
        };
    }

    /** @throws IllegalArgumentException unless 1 <= E <= F and E divides F (model.ffnHidden) */
    static void checkExperts(ModelConfig config, int experts) {
        int f = config.ffnHidden();
        if (experts < 1 || experts > f || f % experts != 0) {
            StringBuilder divisors = new StringBuilder();
            for (int d = 2; d <= Math.min(f, 64); d++) if (f % d == 0) divisors.append(divisors.isEmpty() ? "" : ", ").append(d);
            throw new IllegalArgumentException("--experts " + experts + " must divide the FFN's " + f + " neurons "
                    + "(model.ffnHidden) into equal experts; choose one of " + divisors);
        }
    }

    private static Tensor value(ParameterSet params, String name) {
        return params.get(name).value();
    }

    int experts() { return experts; }

    /** S = F/E, neurons per expert. */
    int expertSize() { return size; }

    DType dtype() { return in.dtype(); }

    /**
     * The dense branch y [N, C] of x [N, C], all F neurons in one product each way; with {@code mass} not null also
     * writes each expert's activation mass [N, E] (see {@link #massOf}), the router's training target.
     */
    Tensor forwardDense(StepArena arena, Tensor x, Tensor mass) {
        int n = x.dim(0);
        Tensor a = activation(arena, x, 0, experts * size);                 // [N, F]
        if (mass != null) massOf(mass, a);
        Tensor y = arena.allocateForOverwrite(x.dtype(), n, hidden);
        Gemm.matmul(y, a, out, false, true, 1f, 0f);
        if (outBias != null) Bias.forward(y, outBias);
        return y;
    }

    /**
     * The sparse branch y [N, C]: row n gets only the neurons of its experts {@code chosen[n]} (distinct indices in
     * [0, E)), plus the output bias. Each expert runs once, over the rows that chose it: its rows of x are gathered
     * [n_e, C], multiplied by its S neurons' input weights and activated [n_e, S], multiplied by its output columns
     * [n_e, C], and added onto those rows of y. Work per token is K/E of the dense branch's.
     */
    Tensor forwardSparse(StepArena arena, Tensor x, int[][] chosen) {
        int n = x.dim(0);
        int[] count = new int[experts];
        for (int[] row : chosen) for (int e : row) count[e]++;
        int[][] rowsOf = new int[experts][];
        for (int e = 0; e < experts; e++) rowsOf[e] = new int[count[e]];
        int[] fill = new int[experts];
        for (int r = 0; r < n; r++) for (int e : chosen[r]) rowsOf[e][fill[e]++] = r;

        Tensor y = arena.allocate(x.dtype(), n, hidden);   // zeroed
        int most = 0;
        for (int c : count) most = Math.max(most, c);
        DType dt = x.dtype();
        // One set of buffers for the largest expert's rows; each expert works in their first n_e rows.
        try (StepArena scratch = new StepArena(arena.pool())) {
            Tensor xs = scratch.allocateForOverwrite(dt, most, hidden), hs = scratch.allocateForOverwrite(dt, most, size);
            Tensor us = up != null ? scratch.allocateForOverwrite(dt, most, size) : null;
            Tensor as = up != null ? scratch.allocateForOverwrite(dt, most, size) : hs;
            Tensor ys = scratch.allocateForOverwrite(dt, most, hidden);
            for (int e = 0; e < experts; e++) {
                int rows = count[e];
                if (rows == 0) continue;
                Tensor xe = xs.slice(0, 0, rows), a = as.slice(0, 0, rows), ye = ys.slice(0, 0, rows);
                gatherInto(xe, x, rowsOf[e]);                                                     // [n_e, C]
                activationInto(a, hs.slice(0, 0, rows), us == null ? null : us.slice(0, 0, rows), xe, e * size, size);
                Gemm.matmul(ye, a, out.slice(1, e * size, size), false, true, 1f, 0f);            // [n_e, S]·[C, S]ᵀ
                scatterAdd(y, ye, rowsOf[e]);
            }
        }
        if (outBias != null) Bias.forward(y, outBias);
        return y;
    }

    /** The activations [N, width] of neurons [first, first + width) on x [N, C]: GELU(h), or silu(g) ∘ u. */
    private Tensor activation(StepArena arena, Tensor x, int first, int width) {
        int n = x.dim(0);
        Tensor h = arena.allocateForOverwrite(x.dtype(), n, width);
        if (up == null) {
            activationInto(h, h, null, x, first, width);
            return h;
        }
        Tensor a = arena.allocateForOverwrite(x.dtype(), n, width);
        activationInto(a, h, arena.allocateForOverwrite(x.dtype(), n, width), x, first, width);
        return a;
    }

    /**
     * a [N, width] = the activations of neurons [first, first + width) on x [N, C], using h (and u, SwiGLU's up
     * product) [N, width] as workspace; under GELU a may be h.
     */
    private void activationInto(Tensor a, Tensor h, Tensor u, Tensor x, int first, int width) {
        linearInto(h, x, in, inBias, first, width);
        if (mlp == ModelConfig.Mlp.GELU) {
            Gelu.forward(a, h);
            return;
        }
        linearInto(u, x, up, upBias, first, width);
        SwiGlu.forward(a, h, u);
    }

    private static void linearInto(Tensor h, Tensor x, Tensor w, Tensor b, int first, int width) {
        Gemm.matmul(h, x, w.slice(0, first, width), false, true, 1f, 0f);
        if (b != null) Bias.forward(h, b.slice(0, first, width));
    }

    /**
     * mass [N, E] = each expert's share of the activation a [N, F]: the sum of its positive activations under GELU
     * (MoEfication's target: GELU's negative part is small, so these neurons carry the output), the sum of absolute
     * activations under SwiGLU (whose product is as likely to matter negative as positive).
     */
    void massOf(Tensor mass, Tensor a) {
        int n = a.dim(0), f = a.dim(1);
        boolean positive = mlp == ModelConfig.Mlp.GELU;
        double[] av = a.toDoubleArray(), sums = new double[n * experts];
        for (int r = 0; r < n; r++) {
            for (int e = 0; e < experts; e++) {
                double sum = 0;
                for (int j = e * size; j < (e + 1) * size; j++) {
                    double v = av[r * f + j];
                    sum += positive ? Math.max(v, 0) : Math.abs(v);
                }
                sums[r * experts + e] = sum;
            }
        }
        mass.copyFrom(sums);
    }

    /** The rows {@code rows} of x [N, C], in that order, as a new [rows, C] tensor. */
    static Tensor gather(StepArena arena, Tensor x, int[] rows) {
        Tensor g = arena.allocateForOverwrite(x.dtype(), rows.length, x.dim(1));
        gatherInto(g, x, rows);
        return g;
    }

    /** g[i] = x[rows[i]] for every i; g [rows, C] with contiguous rows. */
    private static void gatherInto(Tensor g, Tensor x, int[] rows) {
        long element = x.dtype().byteSize(), rowBytes = x.dim(1) * element;
        for (int i = 0; i < rows.length; i++) {
            MemorySegment.copy(x.segment(), x.byteOffset() + rows[i] * x.stride(0) * element,
                    g.segment(), g.byteOffset() + i * g.stride(0) * element, rowBytes);
        }
    }

    /** y[rows[i]] += part[i] for every i. */
    private static void scatterAdd(Tensor y, Tensor part, int[] rows) {
        int c = y.dim(1);
        MemorySegment ys = y.segment(), ps = part.segment();
        if (y.dtype() == DType.F32) {
            int lanes = FLOATS.length(), whole = c - c % lanes;
            for (int i = 0; i < rows.length; i++) {
                long yo = y.byteOffset() + 4L * rows[i] * y.stride(0), po = part.byteOffset() + 4L * i * part.stride(0);
                int j = 0;
                for (; j < whole; j += lanes) {
                    FloatVector.fromMemorySegment(FLOATS, ys, yo + 4L * j, ByteOrder.nativeOrder())
                            .add(FloatVector.fromMemorySegment(FLOATS, ps, po + 4L * j, ByteOrder.nativeOrder()))
                            .intoMemorySegment(ys, yo + 4L * j, ByteOrder.nativeOrder());
                }
                for (; j < c; j++) {
                    ys.set(ValueLayout.JAVA_FLOAT, yo + 4L * j,
                            ys.get(ValueLayout.JAVA_FLOAT, yo + 4L * j) + ps.get(ValueLayout.JAVA_FLOAT, po + 4L * j));
                }
            }
        } else {
            for (int i = 0; i < rows.length; i++) {
                long yo = y.byteOffset() + 8L * rows[i] * y.stride(0), po = part.byteOffset() + 8L * i * part.stride(0);
                for (int j = 0; j < c; j++) {
                    ys.set(ValueLayout.JAVA_DOUBLE, yo + 8L * j,
                            ys.get(ValueLayout.JAVA_DOUBLE, yo + 8L * j) + ps.get(ValueLayout.JAVA_DOUBLE, po + 8L * j));
                }
            }
        }
    }
}
