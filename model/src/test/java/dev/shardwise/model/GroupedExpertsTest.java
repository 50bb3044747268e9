package dev.shardwise.model;

import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.memory.StepArena;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.*;

/**
 * The grouped experts' tiles against a plain float64 reference, one row and one expert at a time: forward outputs,
 * input gradients and every weight and bias gradient, on uneven rows per expert (0, 1, an expert cut into several row
 * tiles, a few) and hidden features that cut each weight gradient into tiles of unequal rows.
 */
class GroupedExpertsTest {
    private static final double TOLERANCE = 1e-10;
    private final MemoryPool pool = MemoryPool.unlimited("rank 0");

    @ParameterizedTest(name = "{0}")
    @ValueSource(strings = {"gelu", "swiglu"})
    void tilesMatchThePerRowReferenceOnUnevenExperts(String mlp) {
        int c = 6, hidden = GroupedExperts.WEIGHT_TILE + 9;   // each hidden-sized weight gradient cut into 512 + 9 rows
        int[] rows = {0, 1, GroupedExperts.ROW_TILE + 7, 5};   // the third expert runs as two row tiles
        ModelConfig config = mlp.equals("gelu") ? ModelConfig.gpt(64, 16, 1, c, 2) : ModelConfig.llama(64, 16, 1, c, 1, 1, 16);
        ParameterSet.Builder builder = ParameterSet.builder();
        GroupedExperts.declare(builder, "g", config, rows.length, hidden);
        ParameterSet params = builder.allocate(pool, DType.F64);
        params.initialize(7);
        double[] v = params.values().toDoubleArray();   // biases away from 0, so their gradients and use are checked
        for (int i = 0; i < v.length; i++) v[i] = v[i] * 10 + 0.1 * Math.sin(i);
        params.values().copyFrom(v);
        GroupedExperts experts = new GroupedExperts(params, "g", config, rows.length, hidden);
        int[] offsets = new int[rows.length + 1];
        for (int e = 0; e < rows.length; e++) offsets[e + 1] = offsets[e] + rows[e];
        int m = offsets[rows.length];
        Tensor xs = random(1, m, c), dys = random(2, m, c);
        try (StepArena arena = new StepArena(pool)) {
            GroupedExperts.Saved saved = experts.forward(arena, xs, offsets);
            Tensor dxs = arena.allocateForOverwrite(DType.F64, m, c);
            experts.backward(arena, dxs, dys, xs, offsets, saved, null);

            String[] parts = config.mlp() == ModelConfig.Mlp.SWIGLU ? new String[]{"gate", "up", "down"} : new String[]{"fc", "proj"};
            double[][] wantGrads = new double[rows.length * parts.length * 2][];
            int checkedRows = 0;
            for (int e = 0; e < rows.length; e++) {
                Reference ref = new Reference(params, "g." + e, parts, config.bias());
                for (int r = offsets[e]; r < offsets[e + 1]; r++) {
                    double[] x = row(xs, r), dy = row(dys, r);
                    double[] dx = ref.run(x, dy);
                    assertClose(ref.y, row(saved.out(), r), "forward " + mlp + " expert " + e + " row " + r);
                    assertClose(dx, row(dxs, r), "dx " + mlp + " expert " + e + " row " + r);
                    checkedRows++;
                }
                for (int i = 0; i < parts.length; i++) {
                    String name = "g." + e + "." + parts[i];
                    assertClose(ref.dW[i], params.get(name + ".weight").grad().toDoubleArray(), name + ".weight grad");
                    if (config.bias()) assertClose(ref.db[i], params.get(name + ".bias").grad().toDoubleArray(), name + ".bias grad");
                }
            }
            assertEquals(m, checkedRows, "every routed row checked");
        }
    }

    /** One expert's MLP, forward and backward, in plain float64 loops; accumulates its gradients over the rows run. */
    private static final class Reference {
        final double[][] w, b, dW, db;
        final boolean swiGlu;
        double[] y;

        Reference(ParameterSet params, String name, String[] parts, boolean bias) {
            swiGlu = parts.length == 3;
            w = new double[parts.length][];
            b = new double[parts.length][];
            dW = new double[parts.length][];
            db = new double[parts.length][];
            for (int i = 0; i < parts.length; i++) {
                w[i] = params.get(name + "." + parts[i] + ".weight").value().toDoubleArray();
                b[i] = bias ? params.get(name + "." + parts[i] + ".bias").value().toDoubleArray() : null;
                dW[i] = new double[w[i].length];
                db[i] = bias ? new double[b[i].length] : null;
            }
        }

        /** Sets y for one row x and returns dx for dy. */
        double[] run(double[] x, double[] dy) {
            int last = w.length - 1, c = x.length, f = w[0].length / c;
            double[] first = linear(0, x, f), second = swiGlu ? linear(1, x, f) : null, h = new double[f];
            for (int j = 0; j < f; j++) h[j] = swiGlu ? silu(first[j]) * second[j] : gelu(first[j]);
            y = linear(last, h, c);
            double[] dh = new double[f];
            for (int o = 0; o < c; o++) {
                for (int j = 0; j < f; j++) {
                    dh[j] += w[last][o * f + j] * dy[o];
                    dW[last][o * f + j] += dy[o] * h[j];
                }
                if (db[last] != null) db[last][o] += dy[o];
            }
            double[] dx = new double[c];
            for (int j = 0; j < f; j++) {
                double g = first[j];
                if (swiGlu) {
                    double s = sigmoid(g);
                    accumulate(0, dh[j] * second[j] * s * (1 + g * (1 - s)), x, dx, j);
                    accumulate(1, dh[j] * silu(g), x, dx, j);
                } else {
                    accumulate(0, dh[j] * geluGrad(g), x, dx, j);
                }
            }
            return dx;
        }

        /** For hidden feature j of linear i with gradient d: dx += d·W_i[j, :], dW_i[j, :] += d·x, db_i[j] += d. */
        private void accumulate(int i, double d, double[] x, double[] dx, int j) {
            int c = x.length;
            for (int q = 0; q < c; q++) {
                dx[q] += d * w[i][j * c + q];
                dW[i][j * c + q] += d * x[q];
            }
            if (db[i] != null) db[i][j] += d;
        }

        private double[] linear(int i, double[] in, int out) {
            double[] r = new double[out];
            for (int o = 0; o < out; o++) {
                double s = b[i] == null ? 0 : b[i][o];
                for (int q = 0; q < in.length; q++) s += w[i][o * in.length + q] * in[q];
                r[o] = s;
            }
            return r;
        }
    }

    private static final double K = Math.sqrt(2 / Math.PI);

    private static double gelu(double v) {
        return 0.5 * v * (1 + Math.tanh(K * (v + 0.044715 * v * v * v)));
    }

    private static double geluGrad(double v) {
        double t = Math.tanh(K * (v + 0.044715 * v * v * v));
        return 0.5 * (1 + t) + 0.5 * v * (1 - t * t) * K * (1 + 3 * 0.044715 * v * v);
    }

    private static double sigmoid(double v) {
        return 1 / (1 + Math.exp(-v));
    }

    private static double silu(double v) {
        return v * sigmoid(v);
    }

    private Tensor random(long seed, int rows, int cols) {
        Tensor t = Tensor.allocate(pool, MemoryCategory.BUFFERS, DType.F64, rows, cols);
        SplittableRandom r = new SplittableRandom(seed);
        double[] v = new double[rows * cols];
        for (int i = 0; i < v.length; i++) v[i] = r.nextGaussian();
        return t.copyFrom(v);
    }

    private static double[] row(Tensor t, int r) {
        double[] v = new double[t.dim(1)];
        for (int j = 0; j < v.length; j++) v[j] = t.getDouble(r, j);
        return v;
    }

    private static void assertClose(double[] want, double[] got, String what) {
        assertEquals(want.length, got.length, what + ": length");
        double max = 0, scale = 1e-300;
        for (int i = 0; i < want.length; i++) {
            max = Math.max(max, Math.abs(want[i] - got[i]));
            scale = Math.max(scale, Math.abs(want[i]));
        }
        assertTrue(max <= TOLERANCE * Math.max(1, scale), what + ": max abs diff " + max + " > " + TOLERANCE + " × max(1, " + scale + ")");
    }
}
