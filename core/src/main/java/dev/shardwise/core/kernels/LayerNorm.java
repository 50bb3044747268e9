package dev.shardwise.core.kernels;
import dev.shardwise.core.tensor.Tensor;
/** TEMPORARY placeholder (replaced by the elementwise branch). */
public final class LayerNorm {
    private LayerNorm() { }
    public static void forward(Tensor out, Tensor mean, Tensor rstd, Tensor x, Tensor w, Tensor b, double eps) {
        int n = x.dim(0), c = x.dim(1);
        for (int i = 0; i < n; i++) {
            double m = 0; for (int j = 0; j < c; j++) m += x.getDouble(i, j); m /= c;
            double v = 0; for (int j = 0; j < c; j++) { double d = x.getDouble(i, j) - m; v += d * d; } v /= c;
            double r = 1 / Math.sqrt(v + eps);
            for (int j = 0; j < c; j++) out.set((x.getDouble(i, j) - m) * r * w.getDouble(j) + b.getDouble(j), i, j);
            mean.set(m, i); rstd.set(r, i);
        }
    }
    public static void backward(Tensor dx, Tensor dw, Tensor db, Tensor dout, Tensor x, Tensor mean, Tensor rstd, Tensor w) {
        int n = x.dim(0), c = x.dim(1);
        for (int i = 0; i < n; i++) {
            double m = mean.getDouble(i), r = rstd.getDouble(i), dnMean = 0, dnXhat = 0;
            for (int j = 0; j < c; j++) { double xh = (x.getDouble(i, j) - m) * r; double dn = w.getDouble(j) * dout.getDouble(i, j); dnMean += dn; dnXhat += dn * xh; }
            dnMean /= c; dnXhat /= c;
            for (int j = 0; j < c; j++) {
                double xh = (x.getDouble(i, j) - m) * r; double dn = w.getDouble(j) * dout.getDouble(i, j);
                db.set(db.getDouble(j) + dout.getDouble(i, j), j); dw.set(dw.getDouble(j) + xh * dout.getDouble(i, j), j);
                dx.set(dx.getDouble(i, j) + (dn - dnMean - xh * dnXhat) * r, i, j);
            }
        }
    }
}
