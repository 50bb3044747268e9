package dev.shardwise.core.kernels;

/** Float64 reference layer norm (see {@link LayerNorm}). */
final class LayerNormReference {
    private LayerNormReference() { }

    static void forward(Rows out, Rows mean, Rows rstd, Rows x, Rows w, Rows b, double eps) {
        int c = x.cols();
        for (int n = 0; n < x.rows(); n++) {
            double mu = 0;
            for (int i = 0; i < c; i++) mu += Ref.get(x, n, i);
            mu /= c;
            double var = 0;
            for (int i = 0; i < c; i++) {
                double u = Ref.get(x, n, i) - mu;
                var += u * u;
            }
            double rs = 1.0 / Math.sqrt(var / c + eps);
            Ref.set(mean, n, mu);
            Ref.set(rstd, n, rs);
            for (int i = 0; i < c; i++) Ref.set(out, n, i, (Ref.get(x, n, i) - mu) * rs * Ref.get(w, i) + Ref.get(b, i));
        }
    }

    static void backward(Rows dx, Rows base, Rows dw, Rows db, Rows dout, Rows x, Rows mean, Rows rstd, Rows w) {
        int c = x.cols();
        for (int n = 0; n < x.rows(); n++) {
            double mu = Ref.get(mean, n), rs = Ref.get(rstd, n);
            double gMean = 0, gnMean = 0;
            for (int i = 0; i < c; i++) {
                double g = Ref.get(dout, n, i) * Ref.get(w, i);
                gMean += g;
                gnMean += g * (Ref.get(x, n, i) - mu) * rs;
            }
            gMean /= c;
            gnMean /= c;
            for (int i = 0; i < c; i++) {
                double d = Ref.get(dout, n, i);
                double norm = (Ref.get(x, n, i) - mu) * rs;
                Ref.set(dx, n, i, Ref.get(base, n, i) + (d * Ref.get(w, i) - gMean - norm * gnMean) * rs);
                Ref.add(dw, i, d * norm);
                Ref.add(db, i, d);
            }
        }
    }
}
