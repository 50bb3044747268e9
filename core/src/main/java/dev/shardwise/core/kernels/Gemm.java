package dev.shardwise.core.kernels;
import dev.shardwise.core.tensor.Tensor;
/** TEMPORARY placeholder (replaced by the gemm branch). */
public final class Gemm {
    private Gemm() { }
    public static void matmul(Tensor c, Tensor a, Tensor b, boolean transA, boolean transB, float alpha, float beta) {
        int m = c.dim(0), n = c.dim(1), k = transA ? a.dim(0) : a.dim(1);
        for (int i = 0; i < m; i++) for (int j = 0; j < n; j++) {
            double s = 0;
            for (int p = 0; p < k; p++) s += (transA ? a.getDouble(p, i) : a.getDouble(i, p)) * (transB ? b.getDouble(j, p) : b.getDouble(p, j));
            c.set(alpha * s + (beta == 0 ? 0 : beta * c.getDouble(i, j)), i, j);
        }
    }
}
