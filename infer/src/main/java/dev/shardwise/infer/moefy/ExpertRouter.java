package dev.shardwise.infer.moefy;

import dev.shardwise.core.kernels.Bias;
import dev.shardwise.core.kernels.Gemm;
import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.memory.StepArena;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;

/**
 * MoEfication's MLP expert predictor (Zhang et al. 2022) for one block: a two-layer network from the FFN input to a
 * score per expert, s = ReLU(x·W1ᵀ + b1)·W2ᵀ + b2, trained ({@link RouterTrainer}) to predict each expert's
 * activation mass; a token then runs the K experts of highest score ({@link #topK}). Sizes: x [N, C], W1 [R, C],
 * b1 [R], W2 [E, R], b2 [E], s [N, E]. Owns its four tensors ({@link #close()} frees them). Not thread-safe.
 */
final class ExpertRouter implements AutoCloseable {
    final Tensor w1, b1, w2, b2;

    private ExpertRouter(Tensor w1, Tensor b1, Tensor w2, Tensor b2) {
        this.w1 = w1;
        this.b1 = b1;
        this.w2 = w2;
        this.b2 = b2;
    }

    /** A router with zero biases and weights drawn uniformly in ±1/√fan-in (seeded), charged to {@code pool}. */
    static ExpertRouter create(MemoryPool pool, DType dtype, int hidden, int routerHidden, int experts, long seed) {
        ExpertRouter r = allocate(pool, dtype, hidden, routerHidden, experts);
        SplittableRandom random = new SplittableRandom(seed);
        fillUniform(r.w1, 1 / Math.sqrt(hidden), random);
        fillUniform(r.w2, 1 / Math.sqrt(routerHidden), random);
        return r;
    }

    /** A zeroed router (to be filled from a checkpoint). */
    static ExpertRouter allocate(MemoryPool pool, DType dtype, int hidden, int routerHidden, int experts) {
        return new ExpertRouter(Tensor.allocate(pool, MemoryCategory.PARAMETERS, dtype, routerHidden, hidden),
                Tensor.allocate(pool, MemoryCategory.PARAMETERS, dtype, routerHidden),
                Tensor.allocate(pool, MemoryCategory.PARAMETERS, dtype, experts, routerHidden),
                Tensor.allocate(pool, MemoryCategory.PARAMETERS, dtype, experts));
    }

    private static void fillUniform(Tensor t, double bound, SplittableRandom random) {
        double[] v = new double[Math.toIntExact(t.numel())];
        for (int i = 0; i < v.length; i++) v[i] = (2 * random.nextDouble() - 1) * bound;
        t.copyFrom(v);
    }

    int experts() { return w2.dim(0); }

    int routerHidden() { return w1.dim(0); }

    /** The tensors by their names under {@code prefix} (checkpoint entries). */
    Map<String, Tensor> tensors(String prefix) {
        return Map.of(prefix + "w1", w1, prefix + "b1", b1, prefix + "w2", w2, prefix + "b2", b2);
    }

    /** The four tensors, in the order W1, b1, W2, b2. */
    List<Tensor> parameters() {
        return List.of(w1, b1, w2, b2);
    }

    /** The hidden layer z = ReLU(x·W1ᵀ + b1) [N, R], in {@code arena}. */
    Tensor hiddenLayer(StepArena arena, Tensor x) {
        Tensor z = arena.allocateForOverwrite(x.dtype(), x.dim(0), routerHidden());
        Gemm.matmul(z, x, w1, false, true, 1f, 0f);
        Bias.forward(z, b1);
        relu(z);
        return z;
    }

    /** z = max(z, 0) in place (z contiguous, as the arena allocates it). */
    private static void relu(Tensor z) {
        MemorySegment seg = z.segment();
        long n = z.numel(), at = z.byteOffset();
        if (z.dtype() == DType.F32) {
            for (long i = 0; i < n; i++) if (seg.get(ValueLayout.JAVA_FLOAT, at + 4 * i) < 0) seg.set(ValueLayout.JAVA_FLOAT, at + 4 * i, 0f);
        } else {
            for (long i = 0; i < n; i++) if (seg.get(ValueLayout.JAVA_DOUBLE, at + 8 * i) < 0) seg.set(ValueLayout.JAVA_DOUBLE, at + 8 * i, 0d);
        }
    }

    /** Scores s [N, E] of x [N, C], in {@code arena}. */
    Tensor scores(StepArena arena, Tensor x) {
        return scoresFromHidden(arena, hiddenLayer(arena, x));
    }

    Tensor scoresFromHidden(StepArena arena, Tensor z) {
        Tensor s = arena.allocateForOverwrite(z.dtype(), z.dim(0), experts());
        Gemm.matmul(s, z, w2, false, true, 1f, 0f);
        Bias.forward(s, b2);
        return s;
    }

    /**
     * The {@code k} experts of highest score in each row of {@code scores} [N, E], best first (ties: the lower
     * index).
     *
     * @throws IllegalArgumentException unless 1 <= k <= E
     */
    static int[][] topK(Tensor scores, int k) {
        int n = scores.dim(0), e = scores.dim(1);
        if (k < 1 || k > e) throw new IllegalArgumentException("--active " + k + " must be between 1 and the " + e + " experts");
        double[] s = scores.toDoubleArray();
        int[][] chosen = new int[n][k];
        for (int r = 0; r < n; r++) {
            boolean[] taken = new boolean[e];
            for (int j = 0; j < k; j++) {
                int best = -1;
                for (int x = 0; x < e; x++) if (!taken[x] && (best < 0 || s[r * e + x] > s[r * e + best])) best = x;
                taken[best] = true;
                chosen[r][j] = best;
            }
        }
        return chosen;
    }

    /** Frees the tensors. */
    @Override
    public void close() {
        for (Tensor t : parameters()) t.close();
    }
}
