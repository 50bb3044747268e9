package dev.shardwise.core.kernels;

/** Float64 reference softmax (see {@link Softmax}). */
final class SoftmaxReference {
    private SoftmaxReference() { }

    static void forward(Rows out, Rows x) {
        int c = x.cols();
        double[] e = new double[c];
        for (int n = 0; n < x.rows(); n++) {
            double m = Double.NEGATIVE_INFINITY;
            for (int i = 0; i < c; i++) m = Math.max(m, Ref.get(x, n, i));
            double s = 0;
            for (int i = 0; i < c; i++) s += e[i] = Math.exp(Ref.get(x, n, i) - m);
            for (int i = 0; i < c; i++) Ref.set(out, n, i, e[i] / s);
        }
    }

    static void backward(Rows dx, Rows dy, Rows y) {
        int c = y.cols();
        for (int n = 0; n < y.rows(); n++) {
            double dot = 0;
            for (int i = 0; i < c; i++) dot += Ref.get(dy, n, i) * Ref.get(y, n, i);
            for (int i = 0; i < c; i++) Ref.add(dx, n, i, Ref.get(y, n, i) * (Ref.get(dy, n, i) - dot));
        }
    }
}
