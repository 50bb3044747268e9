package dev.shardwise.core.kernels;
import dev.shardwise.core.tensor.Tensor;
/** TEMPORARY placeholder (replaced by the elementwise branch). */
public final class CrossEntropy {
    private CrossEntropy() { }
    public static void loss(Tensor losses, Tensor logits, Tensor targets) { run(losses, null, logits, targets, 0); }
    public static void forwardBackward(Tensor losses, Tensor dlogits, Tensor logits, Tensor targets, double scale) { run(losses, dlogits, logits, targets, scale); }
    private static void run(Tensor losses, Tensor dlogits, Tensor logits, Tensor targets, double scale) {
        int n = logits.dim(0), v = logits.dim(1);
        for (int i = 0; i < n; i++) {
            int tg = (int) targets.getDouble(i);
            double mx = Double.NEGATIVE_INFINITY; for (int j = 0; j < v; j++) mx = Math.max(mx, logits.getDouble(i, j));
            double s = 0; for (int j = 0; j < v; j++) s += Math.exp(logits.getDouble(i, j) - mx);
            double lse = mx + Math.log(s);
            losses.set(tg < 0 ? 0 : lse - logits.getDouble(i, tg), i);
            if (dlogits != null) for (int j = 0; j < v; j++) {
                double p = Math.exp(logits.getDouble(i, j) - lse);
                dlogits.set(tg < 0 ? 0 : (p - (j == tg ? 1 : 0)) * scale, i, j);
            }
        }
    }
}
