package dev.shardwise.core.kernels;
import dev.shardwise.core.tensor.Tensor;
/** TEMPORARY placeholder (replaced by the elementwise branch). */
public final class Gelu {
    private Gelu() { }
    private static final double S = Math.sqrt(2 / Math.PI);
    public static void forward(Tensor out, Tensor x) {
        double[] v = x.toDoubleArray();
        for (int i = 0; i < v.length; i++) v[i] = 0.5 * v[i] * (1 + Math.tanh(S * (v[i] + 0.044715 * v[i] * v[i] * v[i])));
        out.copyFrom(v);
    }
    public static void backward(Tensor dx, Tensor dout, Tensor x) {
        double[] v = x.toDoubleArray(), d = dout.toDoubleArray(), g = dx.toDoubleArray();
        for (int i = 0; i < v.length; i++) {
            double u = S * (v[i] + 0.044715 * v[i] * v[i] * v[i]), th = Math.tanh(u);
            double du = S * (1 + 3 * 0.044715 * v[i] * v[i]);
            g[i] += d[i] * (0.5 * (1 + th) + 0.5 * v[i] * (1 - th * th) * du);
        }
        dx.copyFrom(g);
    }
}
