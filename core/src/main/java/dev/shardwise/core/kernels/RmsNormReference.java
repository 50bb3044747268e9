package dev.shardwise.core.kernels;

/** Float64 reference RMS norm (see {@link RmsNorm}). */
final class RmsNormReference {
    private RmsNormReference() { }

    static void forward(Rows out, Rows rstd, Rows x, Rows w, double eps) {
        int c = x.cols();
        for (int n = 0; n < x.rows(); n++) {
            double ss = 0;
            for (int i = 0; i < c; i++) ss += Ref.get(x, n, i) * Ref.get(x, n, i);
            double rs = 1.0 / Math.sqrt(ss / c + eps);
            Ref.set(rstd, n, rs);
            for (int i = 0; i < c; i++) Ref.set(out, n, i, Ref.get(x, n, i) * rs * Ref.get(w, i));
        }
    }

    static void backward(Rows dx, Rows dw, Rows dout, Rows x, Rows rstd, Rows w) {
        int c = x.cols();
        for (int n = 0; n < x.rows(); n++) {
            double rs = Ref.get(rstd, n);
            double gnMean = 0;
            for (int i = 0; i < c; i++) gnMean += Ref.get(dout, n, i) * Ref.get(w, i) * Ref.get(x, n, i) * rs;
            gnMean /= c;
            for (int i = 0; i < c; i++) {
                double d = Ref.get(dout, n, i);
                double norm = Ref.get(x, n, i) * rs;
                Ref.add(dx, n, i, (d * Ref.get(w, i) - norm * gnMean) * rs);
                Ref.add(dw, i, d * norm);
            }
        }
    }
}
