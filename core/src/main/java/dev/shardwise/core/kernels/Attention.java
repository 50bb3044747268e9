package dev.shardwise.core.kernels;
import dev.shardwise.core.tensor.Tensor;
/** TEMPORARY placeholder (replaced by the attention branch). q [B,T,NH,HS], k/v [B,T,NKV,HS]. */
public final class Attention {
    private Attention() { }
    public static void forward(Tensor out, Tensor lse, Tensor q, Tensor k, Tensor v, double scale) {
        int B = q.dim(0), T = q.dim(1), NH = q.dim(2), HS = q.dim(3), G = NH / k.dim(2);
        for (int b = 0; b < B; b++) for (int h = 0; h < NH; h++) for (int t = 0; t < T; t++) {
            double[] s = new double[t + 1]; double mx = Double.NEGATIVE_INFINITY;
            for (int u = 0; u <= t; u++) { double d = 0; for (int e = 0; e < HS; e++) d += q.getDouble(b, t, h, e) * k.getDouble(b, u, h / G, e); s[u] = d * scale; mx = Math.max(mx, s[u]); }
            double z = 0; for (int u = 0; u <= t; u++) z += Math.exp(s[u] - mx);
            double l = mx + Math.log(z); lse.set(l, b, h, t);
            for (int e = 0; e < HS; e++) { double o = 0; for (int u = 0; u <= t; u++) o += Math.exp(s[u] - l) * v.getDouble(b, u, h / G, e); out.set(o, b, t, h, e); }
        }
    }
    public static void backward(Tensor dq, Tensor dk, Tensor dv, Tensor dout, Tensor out, Tensor lse, Tensor q, Tensor k, Tensor v, double scale) {
        int B = q.dim(0), T = q.dim(1), NH = q.dim(2), HS = q.dim(3), G = NH / k.dim(2);
        for (int b = 0; b < B; b++) for (int h = 0; h < NH; h++) for (int t = 0; t < T; t++) {
            int kh = h / G; double l = lse.getDouble(b, h, t);
            double D = 0; for (int e = 0; e < HS; e++) D += dout.getDouble(b, t, h, e) * out.getDouble(b, t, h, e);
            for (int u = 0; u <= t; u++) {
                double s = 0; for (int e = 0; e < HS; e++) s += q.getDouble(b, t, h, e) * k.getDouble(b, u, kh, e);
                double p = Math.exp(s * scale - l);
                double dp = 0; for (int e = 0; e < HS; e++) dp += dout.getDouble(b, t, h, e) * v.getDouble(b, u, kh, e);
                double ds = p * (dp - D) * scale;
                for (int e = 0; e < HS; e++) {
                    dv.set(dv.getDouble(b, u, kh, e) + p * dout.getDouble(b, t, h, e), b, u, kh, e);
                    dq.set(dq.getDouble(b, t, h, e) + ds * k.getDouble(b, u, kh, e), b, t, h, e);
                    dk.set(dk.getDouble(b, u, kh, e) + ds * q.getDouble(b, t, h, e), b, u, kh, e);
                }
            }
        }
    }
}
