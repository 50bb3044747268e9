package dev.shardwise.core.kernels;
import dev.shardwise.core.tensor.Tensor;
/** TEMPORARY placeholder (replaced by the elementwise branch). */
public final class AdamW {
    private AdamW() { }
    public static void step(Tensor param, Tensor grad, Tensor m, Tensor v, double lr, double beta1, double beta2, double eps, double wd, long t) {
        double[] p = param.toDoubleArray(), g = grad.toDoubleArray(), mm = m.toDoubleArray(), vv = v.toDoubleArray();
        for (int i = 0; i < p.length; i++) {
            mm[i] = beta1 * mm[i] + (1 - beta1) * g[i]; vv[i] = beta2 * vv[i] + (1 - beta2) * g[i] * g[i];
            double mh = mm[i] / (1 - Math.pow(beta1, t)), vh = vv[i] / (1 - Math.pow(beta2, t));
            p[i] -= lr * (mh / (Math.sqrt(vh) + eps) + wd * p[i]);
        }
        param.copyFrom(p); m.copyFrom(mm); v.copyFrom(vv);
    }
}
