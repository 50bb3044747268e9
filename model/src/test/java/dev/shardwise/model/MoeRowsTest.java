package dev.shardwise.model;

import dev.shardwise.core.exec.ComputePool;
import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.*;

/**
 * The MoE row moves against plain loops over odd shapes (N not a multiple of the token block, C not a multiple of a
 * vector, dropped assignments, an expert of 1 row), in f32 and f64, and bit-identical for 1 and 3 threads.
 */
class MoeRowsTest {
    private static final int N = 130, C = 37, K = 2;
    private final MemoryPool pool = MemoryPool.unlimited("rank 0");

    /** rowOf [N·K] in dispatch order (by expert, then token), every 5th assignment dropped; fills tokenOf [M]. */
    private static int[] routing(int[] tokenOf) {
        int experts = 4;
        int[] expertOf = new int[N * K];
        for (int a = 0; a < N * K; a++) expertOf[a] = a % 5 == 0 ? -1 : (a / K) % 3 == 0 && a % K == 0 ? 0 : 2 + (a * 7) % 2;
        expertOf[3] = 1;   // expert 1 gets one row; experts 0, 2, 3 many
        int[] rowOf = new int[N * K];
        int next = 0;
        for (int e = 0; e < experts; e++) {
            for (int a = 0; a < N * K; a++) {
                if (expertOf[a] != e) continue;
                rowOf[a] = next;
                if (tokenOf != null) tokenOf[next] = a / K;
                next++;
            }
        }
        for (int a = 0; a < N * K; a++) if (expertOf[a] < 0) rowOf[a] = -1;
        return rowOf;
    }

    private static int rows(int[] rowOf) {
        int m = 0;
        for (int r : rowOf) if (r >= 0) m++;
        return m;
    }

    @ParameterizedTest(name = "{0}")
    @EnumSource(value = DType.class, names = {"F32", "F64"})
    void rowMovesMatchPlainLoopsAndAreTheSameBitsForAnyThreadCount(DType dtype) {
        int[] probe = routing(null);
        int m = rows(probe);
        int[] tokenOf = new int[m], rowOf = routing(tokenOf);
        double[] gate = new double[N * K];
        SplittableRandom random = new SplittableRandom(3);
        for (int a = 0; a < gate.length; a++) gate[a] = random.nextDouble();
        double scale = 1.5, tolerance = dtype == DType.F32 ? 1e-5 : 1e-12;
        Tensor x = random(dtype, 1, N), base = random(dtype, 2, N), ys = random(dtype, 3, m), dy = random(dtype, 4, N);
        Tensor dxs = random(dtype, 5, m), dx0 = random(dtype, 6, N);

        double[][] got1 = run(1, dtype, x, base, ys, dy, dxs, dx0, tokenOf, rowOf, gate, scale, m);
        double[][] got3 = run(3, dtype, x, base, ys, dy, dxs, dx0, tokenOf, rowOf, gate, scale, m);
        String[] names = {"gather", "combine", "combine without base", "dys", "dgate", "scatterAdd", "scatterAdd without extra"};
        for (int i = 0; i < names.length; i++) {
            assertArrayEquals(got1[i], got3[i], dtype + " " + names[i] + ": 1 and 3 threads differ");
        }

        // plain loops in float64
        double[] xv = x.toDoubleArray(), bv = base.toDoubleArray(), yv = ys.toDoubleArray(), dyv = dy.toDoubleArray();
        double[] dxsv = dxs.toDoubleArray(), dx0v = dx0.toDoubleArray();
        double[] gather = new double[m * C], combine = bv.clone(), bare = new double[N * C], dys = new double[m * C];
        double[] dgate = new double[N * K], scatter = dx0v.clone(), scatterBare = dx0v.clone();
        for (int r = 0; r < m; r++) System.arraycopy(xv, tokenOf[r] * C, gather, r * C, C);
        for (int a = 0; a < N * K; a++) {
            int r = rowOf[a], n = a / K;
            if (r < 0) continue;
            for (int j = 0; j < C; j++) {
                combine[n * C + j] += scale * gate[a] * yv[r * C + j];
                bare[n * C + j] += scale * gate[a] * yv[r * C + j];
                dys[r * C + j] = scale * gate[a] * dyv[n * C + j];
                dgate[a] += scale * dyv[n * C + j] * yv[r * C + j];
                scatter[n * C + j] += dxsv[r * C + j];
                scatterBare[n * C + j] += dxsv[r * C + j];
            }
        }
        for (int i = 0; i < N * C; i++) scatter[i] += bv[i];
        double[][] want = {gather, combine, bare, dys, dgate, scatter, scatterBare};
        for (int i = 0; i < names.length; i++) {
            double max = 0;
            for (int j = 0; j < want[i].length; j++) max = Math.max(max, Math.abs(want[i][j] - got1[i][j]));
            assertTrue(max <= tolerance, dtype + " " + names[i] + ": max abs diff " + max + " > " + tolerance);
        }
    }

    /**
     * The per-tile row moves that the expert tiles run on their own rows at ep 1 (dispatch by assignment, combine's
     * backward by dispatched row), over ragged row ranges, give the same bits as the whole passes over the pool.
     */
    @ParameterizedTest(name = "{0}")
    @EnumSource(value = DType.class, names = {"F32", "F64"})
    void tileRowMovesAreTheSameBitsAsTheWholePasses(DType dtype) {
        int m = rows(routing(null));
        int[] tokenOf = new int[m], rowOf = routing(tokenOf), assigned = new int[m];
        for (int a = 0; a < N * K; a++) if (rowOf[a] >= 0) assigned[rowOf[a]] = a;
        double[] gate = new double[N * K];
        SplittableRandom random = new SplittableRandom(5);
        for (int a = 0; a < gate.length; a++) gate[a] = random.nextDouble();
        Tensor x = random(dtype, 1, N), ys = random(dtype, 3, m), dy = random(dtype, 4, N);
        Tensor whole = alloc(dtype, m), wholeDys = alloc(dtype, m), byAssignment = alloc(dtype, m);
        double[] wholeDgate = new double[N * K];
        MoeRows.gather(whole, x, tokenOf);
        MoeRows.gatherAssigned(byAssignment, x, assigned, K);
        MoeRows.combineBackward(wholeDys, wholeDgate, dy, ys, rowOf, K, gate, 0.75);

        Tensor tiled = alloc(dtype, m), tiledDys = alloc(dtype, m);
        double[] tiledDgate = new double[N * K];
        for (int at = 0, size = 1; at < m; at += size, size = size * 3 % 17 + 1) {   // ragged ranges, one of 1 row
            int rows = Math.min(size, m - at);
            MoeRows.gatherAssigned(tiled, x, assigned, K, at, rows);
            MoeRows.combineBackwardRows(tiledDys, tiledDgate, dy, ys, assigned, K, gate, 0.75, at, rows);
        }
        assertArrayEquals(whole.toDoubleArray(), byAssignment.toDoubleArray(), dtype + " gather by assignment");
        assertArrayEquals(whole.toDoubleArray(), tiled.toDoubleArray(), dtype + " gather by tile rows");
        assertArrayEquals(wholeDys.toDoubleArray(), tiledDys.toDoubleArray(), dtype + " dys by tile rows");
        assertArrayEquals(wholeDgate, tiledDgate, dtype + " dgate by tile rows");
    }

    /** Expert parallelism's return to source order: out[order[i]] = in[i] over a permutation, any thread count the same bits. */
    @ParameterizedTest(name = "{0}")
    @EnumSource(value = DType.class, names = {"F32", "F64"})
    void scatterInvertsGatherAndIsTheSameBitsForAnyThreadCount(DType dtype) {
        int m = 3 * 64 + 5;   // not a multiple of the token block
        int[] order = new int[m];
        for (int i = 0; i < m; i++) order[i] = i;
        SplittableRandom random = new SplittableRandom(11);
        for (int i = m - 1; i > 0; i--) {
            int j = random.nextInt(i + 1), t = order[i];
            order[i] = order[j];
            order[j] = t;
        }
        Tensor in = random(dtype, 7, m);
        double[] inv = in.toDoubleArray(), want = new double[m * C];
        for (int i = 0; i < m; i++) System.arraycopy(inv, i * C, want, order[i] * C, C);
        for (int threads : new int[] {1, 3}) {
            double[] got = new double[0], back = new double[0];
            try (ComputePool compute = new ComputePool("test", threads)) {
                double[][] result = new double[2][];
                ComputePool.runWith(compute, () -> {
                    Tensor out = alloc(dtype, m), again = alloc(dtype, m);
                    MoeRows.scatter(out, in, order);
                    MoeRows.gather(again, out, order);
                    result[0] = out.toDoubleArray();
                    result[1] = again.toDoubleArray();
                });
                got = result[0];
                back = result[1];
            }
            assertArrayEquals(want, got, dtype + " scatter, " + threads + " threads: rows are not the source rows moved exactly");
            assertArrayEquals(inv, back, dtype + " gather after scatter, " + threads + " threads: not the input");
        }
    }

    private double[][] run(int threads, DType dtype, Tensor x, Tensor base, Tensor ys, Tensor dy, Tensor dxs, Tensor dx0,
                           int[] tokenOf, int[] rowOf, double[] gate, double scale, int m) {
        double[][] out = new double[7][];
        try (ComputePool compute = new ComputePool("test", threads)) {
            ComputePool.runWith(compute, () -> {
                Tensor g = alloc(dtype, m), y = alloc(dtype, N), bare = alloc(dtype, N), dys = alloc(dtype, m);
                MoeRows.gather(g, x, tokenOf);
                MoeRows.combine(y, base, ys, rowOf, K, gate, scale);
                MoeRows.combine(bare, null, ys, rowOf, K, gate, scale);
                double[] dgate = new double[N * K];
                MoeRows.combineBackward(dys, dgate, dy, ys, rowOf, K, gate, scale);
                Tensor dx = alloc(dtype, N).copyFrom(dx0.toDoubleArray()), dxBare = alloc(dtype, N).copyFrom(dx0.toDoubleArray());
                MoeRows.scatterAdd(dx, dxs, rowOf, K, base);
                MoeRows.scatterAdd(dxBare, dxs, rowOf, K, null);
                double[] dysv = dys.toDoubleArray();   // every row of dys is a kept assignment's: all are written
                out[0] = g.toDoubleArray();
                out[1] = y.toDoubleArray();
                out[2] = bare.toDoubleArray();
                out[3] = dysv;
                out[4] = dgate;
                out[5] = dx.toDoubleArray();
                out[6] = dxBare.toDoubleArray();
            });
        }
        return out;
    }

    private Tensor alloc(DType dtype, int rows) {
        return Tensor.allocate(pool, MemoryCategory.BUFFERS, dtype, rows, C);
    }

    private Tensor random(DType dtype, long seed, int rows) {
        SplittableRandom r = new SplittableRandom(seed);
        double[] v = new double[rows * C];
        for (int i = 0; i < v.length; i++) v[i] = r.nextGaussian();
        return alloc(dtype, rows).copyFrom(v);
    }
}
