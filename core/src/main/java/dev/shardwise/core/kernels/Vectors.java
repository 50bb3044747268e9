package dev.shardwise.core.kernels;
import dev.shardwise.core.tensor.Tensor;
/** TEMPORARY placeholder (replaced by the elementwise branch). */
public final class Vectors {
    private Vectors() { }
    public static void add(Tensor out, Tensor a, Tensor b) {
        double[] x = a.toDoubleArray(), y = b.toDoubleArray();
        for (int i = 0; i < x.length; i++) x[i] += y[i];
        out.copyFrom(x);
    }
    public static void accumulate(Tensor y, Tensor x) { add(y, y, x); }
    public static double sumOfSquares(Tensor x) { double s = 0; for (double d : x.toDoubleArray()) s += d * d; return s; }
    public static void scale(Tensor x, double a) { double[] d = x.toDoubleArray(); for (int i = 0; i < d.length; i++) d[i] *= a; x.copyFrom(d); }
}
