package dev.shardwise.core.kernels;

import dev.shardwise.core.exec.ComputePool;
import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.*;

/** Bias and Embedding kernels against plain float64 loops, on odd shapes, in F32 and F64. */
class BiasAndEmbeddingTest {
    private final MemoryPool pool = MemoryPool.unlimited("rank 0");

    private Tensor random(DType dtype, long seed, int... shape) {
        Tensor t = Tensor.allocate(pool, MemoryCategory.BUFFERS, dtype, shape);
        SplittableRandom r = new SplittableRandom(seed);
        double[] v = new double[(int) t.numel()];
        for (int i = 0; i < v.length; i++) v[i] = r.nextDouble(-1, 1);
        return t.copyFrom(v);
    }

    @ParameterizedTest(name = "{0} N={1} C={2}")
    @CsvSource({"F32, 1, 1", "F32, 3, 7", "F32, 33, 129", "F32, 129, 1000", "F64, 7, 33", "F64, 129, 17"})
    void biasForwardAddsToEveryRowAndBackwardAccumulatesColumnSums(DType dtype, int n, int c) {
        try (Tensor out = random(dtype, 1, n, c); Tensor bias = random(dtype, 2, c); Tensor dbias = random(dtype, 3, c)) {
            double[] before = out.toDoubleArray(), b = bias.toDoubleArray(), db = dbias.toDoubleArray();
            Bias.forward(out, bias);
            double tol = dtype == DType.F32 ? 1e-6 : 1e-14;
            double[] after = out.toDoubleArray();
            for (int i = 0; i < n; i++) {
                for (int j = 0; j < c; j++) {
                    assertEquals(before[i * c + j] + b[j], after[i * c + j], tol, "Bias.forward " + dtype + " row " + i + " col " + j);
                }
            }
            Bias.backward(dbias, out);
            double[] got = dbias.toDoubleArray();
            for (int j = 0; j < c; j++) {
                double sum = db[j];
                for (int i = 0; i < n; i++) sum += after[i * c + j];
                assertEquals(sum, got[j], tol * (n + 1) * 4, "Bias.backward " + dtype + " col " + j);
            }
        }
    }

    @ParameterizedTest(name = "{0} N={1} C={2}")
    @CsvSource({"F32, 1, 1", "F32, 3, 7", "F32, 33, 129", "F32, 129, 1000", "F64, 7, 33"})
    void biasBroadcastWritesTheBiasIntoEveryRow(DType dtype, int n, int c) {
        try (Tensor out = random(dtype, 1, n, c); Tensor bias = random(dtype, 2, c)) {
            out.fill(Double.NaN);
            double[] b = bias.toDoubleArray();
            Bias.broadcast(out, bias);
            double[] got = out.toDoubleArray();
            for (int i = 0; i < n; i++) {
                for (int j = 0; j < c; j++) assertEquals(b[j], got[i * c + j], 0.0, "Bias.broadcast " + dtype + " row " + i + " col " + j);
            }
        }
    }

    @ParameterizedTest(name = "N={0} C={1}")
    @CsvSource({"1000, 257", "2048, 768", "31, 33"})
    void biasBackwardIsBitIdenticalForOneAndTwoThreads(int n, int c) {
        try (Tensor dout = random(DType.F32, 8, n, c)) {
            float[][] got = new float[2][];
            for (int threads = 1; threads <= 2; threads++) {
                try (Tensor dbias = random(DType.F32, 9, c); ComputePool compute = new ComputePool("t" + threads, threads)) {
                    ComputePool.runWith(compute, () -> Bias.backward(dbias, dout));
                    got[threads - 1] = dbias.toFloatArray();
                }
            }
            assertArrayEquals(got[0], got[1], "Bias.backward N=" + n + " C=" + c + " with 1 vs 2 threads");
        }
    }

    @ParameterizedTest(name = "{0} N={1} C={2} V={3}")
    @CsvSource({"F32, 1, 1, 1", "F32, 7, 33, 3", "F32, 129, 65, 50", "F64, 33, 7, 5"})
    void embeddingGathersRowsAndScatterAddsGradientsInOrder(DType dtype, int n, int c, int v) {
        try (Tensor table = random(dtype, 4, v, c); Tensor out = random(dtype, 5, n, c); Tensor dtable = random(dtype, 6, v, c);
             Tensor ids = Tensor.allocate(pool, MemoryCategory.BUFFERS, DType.I32, n)) {
            SplittableRandom r = new SplittableRandom(7);
            int[] id = new int[n];
            for (int i = 0; i < n; i++) ids.set(id[i] = r.nextInt(v), i);
            double[] t = table.toDoubleArray(), base = out.toDoubleArray(), dt = dtable.toDoubleArray();
            Embedding.forward(out, ids, table, true);
            double[] got = out.toDoubleArray();
            for (int i = 0; i < n; i++) {
                for (int j = 0; j < c; j++) assertEquals(base[i * c + j] + t[id[i] * c + j], got[i * c + j], 1e-6, "accumulate row " + i);
            }
            Embedding.forward(out, ids, table, false);
            got = out.toDoubleArray();
            for (int i = 0; i < n; i++) {
                for (int j = 0; j < c; j++) assertEquals(t[id[i] * c + j], got[i * c + j], 0.0, "gather row " + i);
            }
            Embedding.backward(dtable, out, ids);
            for (int i = 0; i < n; i++) for (int j = 0; j < c; j++) dt[id[i] * c + j] += got[i * c + j];
            double[] g = dtable.toDoubleArray();
            for (int k = 0; k < g.length; k++) assertEquals(dt[k], g[k], 1e-5, "scatter-add element " + k);
        }
    }

    @ParameterizedTest(name = "{0}")
    @CsvSource({"-1", "5"})
    void anIdOutsideTheVocabularyIsNamed(int badId) {
        try (Tensor table = random(DType.F32, 1, 5, 3); Tensor out = random(DType.F32, 2, 2, 3);
             Tensor ids = Tensor.allocate(pool, MemoryCategory.BUFFERS, DType.I32, 2)) {
            ids.set(badId, 1);
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> Embedding.forward(out, ids, table, false));
            assertTrue(e.getMessage().contains("row 1") && e.getMessage().contains(Integer.toString(badId)), e.getMessage());
        }
    }
}
