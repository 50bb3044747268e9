package dev.shardwise.infer.moefy;

import dev.shardwise.core.kernels.Gemm;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.memory.StepArena;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;

import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;

/**
 * Fits an {@link ExpertRouter} to predict each expert's activation mass from the FFN input (MoEfication's MLP
 * selection, Zhang et al. 2022): mean squared error between the scores and the masses scaled by their mean (so
 * that the loss is on the same scale for every block), minimised by Adam on random mini-batches. Accuracy is the
 * recall of the true top-K experts among the router's top K, on rows held out from training.
 */
final class RouterTrainer {
    /**
     * Settings: {@code steps} Adam steps of {@code batch} rows at learning rate {@code lr} (β1 0.9, β2 0.999,
     * ε 1e-8, as Kingma and Ba), {@code heldOut} of the rows kept aside for the recall, {@code seed} for the batches.
     */
    record Settings(int steps, int batch, double lr, double heldOut, long seed) {
        Settings {
            if (steps < 1) throw new IllegalArgumentException("--router-steps " + steps + " must be at least 1");
            if (batch < 1) throw new IllegalArgumentException("router batch " + batch + " must be at least 1");
            if (!(heldOut > 0 && heldOut < 1)) throw new IllegalArgumentException("held-out share " + heldOut + " must be in (0, 1)");
        }
    }

    /**
     * What training did: the loss of each step (on its batch), and the recall at K = E/4 and E/2 (at least 1) on the
     * held-out rows, beside that of a static choice (every token the K experts of largest mean mass over the training
     * rows), the baseline a router must beat to be worth its cost.
     */
    record Report(double[] losses, int kQuarter, double recallQuarter, int kHalf, double recallHalf, double staticQuarter,
                  double staticHalf) {
        /** Mean loss of the first (or last) tenth of the steps. */
        double meanLoss(boolean last) {
            int w = Math.max(1, losses.length / 10), from = last ? losses.length - w : 0;
            double s = 0;
            for (int i = from; i < from + w; i++) s += losses[i];
            return s / w;
        }
    }

    private RouterTrainer() { }

    /**
     * Trains {@code router} on inputs x [M, C] and expert masses [M, E] (same dtype as the router).
     *
     * @throws IllegalArgumentException if there are fewer than 2 rows or the shapes disagree
     */
    static Report train(ExpertRouter router, Tensor x, Tensor mass, Settings settings, MemoryPool pool) {
        int m = x.dim(0), c = x.dim(1), e = router.experts();
        if (m < 2 || mass.dim(0) != m || mass.dim(1) != e || c != router.w1.dim(1)) {
            throw new IllegalArgumentException("router training needs x [M, " + router.w1.dim(1) + "] and mass [M, " + e
                    + "] with M >= 2, got " + x.describe() + " and " + mass.describe());
        }
        int held = Math.max(1, (int) Math.round(m * settings.heldOut())), fit = m - held;
        double scale = meanOf(mass, 0, fit);
        double[] target = mass.toDoubleArray();
        for (int i = 0; i < target.length; i++) target[i] /= scale;
        List<Tensor> params = router.parameters();
        List<double[]> first = new ArrayList<>(), second = new ArrayList<>();
        for (Tensor p : params) {
            first.add(new double[Math.toIntExact(p.numel())]);
            second.add(new double[Math.toIntExact(p.numel())]);
        }
        SplittableRandom random = new SplittableRandom(settings.seed());
        int b = Math.min(settings.batch(), fit);
        double[] losses = new double[settings.steps()];
        DType dt = x.dtype();
        try (StepArena arena = new StepArena(pool)) {
            for (int step = 0; step < settings.steps(); step++) {
                int[] rows = new int[b];
                for (int i = 0; i < b; i++) rows[i] = random.nextInt(fit);
                Tensor xb = ExpertWeights.gather(arena, x, rows);
                Tensor z = router.hiddenLayer(arena, xb);                 // [B, R]
                Tensor s = router.scoresFromHidden(arena, z);             // [B, E]
                // loss = mean over B·E of (s - t)²;  ds = 2 (s - t) / (B·E)
                double[] sv = s.toDoubleArray(), ds = new double[sv.length];
                double loss = 0;
                for (int i = 0; i < b; i++) {
                    for (int j = 0; j < e; j++) {
                        double d = sv[i * e + j] - target[rows[i] * e + j];
                        loss += d * d;
                        ds[i * e + j] = 2 * d / ((double) b * e);
                    }
                }
                losses[step] = loss / ((double) b * e);
                Tensor dsT = arena.allocateForOverwrite(dt, b, e).copyFrom(ds);
                Tensor dw2 = arena.allocateForOverwrite(dt, e, router.routerHidden());
                Gemm.matmul(dw2, dsT, z, true, false, 1f, 0f);            // dW2 = dsᵀ·z
                Tensor dz = arena.allocateForOverwrite(dt, b, router.routerHidden());
                Gemm.matmul(dz, dsT, router.w2, false, false, 1f, 0f);    // dz = ds·W2
                double[] zv = z.toDoubleArray(), dzv = dz.toDoubleArray();
                for (int i = 0; i < zv.length; i++) if (zv[i] <= 0) dzv[i] = 0;   // through the ReLU
                dz.copyFrom(dzv);
                Tensor dw1 = arena.allocateForOverwrite(dt, router.routerHidden(), c);
                Gemm.matmul(dw1, dz, xb, true, false, 1f, 0f);            // dW1 = dzᵀ·x
                List<double[]> grads = List.of(dw1.toDoubleArray(), columnSums(dzv, b), dw2.toDoubleArray(), columnSums(ds, b));
                for (int k = 0; k < params.size(); k++) adam(params.get(k), grads.get(k), first.get(k), second.get(k), step + 1, settings.lr());
                arena.reset();
            }
            int[] heldRows = new int[held];
            for (int i = 0; i < held; i++) heldRows[i] = fit + i;
            Tensor scores = router.scores(arena, ExpertWeights.gather(arena, x, heldRows));
            Tensor truth = ExpertWeights.gather(arena, mass, heldRows);
            int kq = Math.max(1, e / 4), kh = Math.max(1, e / 2);
            Tensor fixed = arena.allocateForOverwrite(DType.F64, held, e);   // every row: the mean mass of the training rows
            double[] mean = new double[e];
            for (int i = 0; i < fit; i++) for (int j = 0; j < e; j++) mean[j] += target[i * e + j];
            double[] rowsOfMean = new double[held * e];
            for (int i = 0; i < held; i++) System.arraycopy(mean, 0, rowsOfMean, i * e, e);
            fixed.copyFrom(rowsOfMean);
            return new Report(losses, kq, recall(scores, truth, kq), kh, recall(scores, truth, kh), recall(fixed, truth, kq),
                    recall(fixed, truth, kh));
        }
    }

    /** Mean over rows of the router's top-k experts that are among the true top k, divided by k. */
    static double recall(Tensor scores, Tensor truth, int k) {
        int[][] predicted = ExpertRouter.topK(scores, k), actual = ExpertRouter.topK(truth, k);
        double hits = 0;
        for (int r = 0; r < predicted.length; r++) {
            for (int p : predicted[r]) for (int a : actual[r]) if (p == a) hits++;
        }
        return hits / ((double) predicted.length * k);
    }

    private static void adam(Tensor param, double[] grad, double[] m, double[] v, int t, double lr) {
        final double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
        double[] p = param.toDoubleArray();
        double c1 = 1 - Math.pow(beta1, t), c2 = 1 - Math.pow(beta2, t);
        for (int i = 0; i < p.length; i++) {
            m[i] = beta1 * m[i] + (1 - beta1) * grad[i];
            v[i] = beta2 * v[i] + (1 - beta2) * grad[i] * grad[i];
            p[i] -= lr * (m[i] / c1) / (Math.sqrt(v[i] / c2) + eps);
        }
        param.copyFrom(p);
    }

    private static double[] columnSums(double[] rowMajor, int rows) {
        int cols = rowMajor.length / rows;
        double[] sums = new double[cols];
        for (int i = 0; i < rows; i++) for (int j = 0; j < cols; j++) sums[j] += rowMajor[i * cols + j];
        return sums;
    }

    private static double meanOf(Tensor t, int fromRow, int toRow) {
        double s = 0;
        int cols = t.dim(1);
        for (int r = fromRow; r < toRow; r++) for (int j = 0; j < cols; j++) s += t.getDouble(r, j);
        double mean = s / ((double) (toRow - fromRow) * cols);
        return mean > 0 ? mean : 1;
    }
}
