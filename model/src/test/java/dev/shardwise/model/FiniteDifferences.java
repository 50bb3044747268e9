package dev.shardwise.model;

import dev.shardwise.core.tensor.Tensor;

import java.util.function.DoubleSupplier;

import static org.junit.jupiter.api.Assertions.fail;

/** Central finite differences in float64, compared with analytic gradients element by element. */
final class FiniteDifferences {
    static final double STEP = 1e-6;
    static final double ABS_TOLERANCE = 1e-7;
    static final double REL_TOLERANCE = 1e-5;

    private FiniteDifferences() { }

    /**
     * Checks every element of {@code analytic} against (loss(x + h) − loss(x − h)) / 2h, perturbing the
     * matching element of {@code values}. Returns the worst relative error seen.
     */
    static double check(String what, Tensor values, Tensor analytic, DoubleSupplier loss) {
        double[] x = values.toDoubleArray();
        double[] g = analytic.toDoubleArray();
        double worst = 0;
        int checked = 0;
        int[] shape = values.shape();
        for (int i = 0; i < x.length; i++) {
            int[] index = unravel(i, shape);
            values.set(x[i] + STEP, index);
            double plus = loss.getAsDouble();
            values.set(x[i] - STEP, index);
            double minus = loss.getAsDouble();
            values.set(x[i], index);
            double numeric = (plus - minus) / (2 * STEP);
            double diff = Math.abs(numeric - g[i]);
            double scale = Math.max(Math.abs(numeric), Math.abs(g[i]));
            if (diff > ABS_TOLERANCE + REL_TOLERANCE * scale) {
                fail(String.format("%s element %d: analytic %.10g vs finite difference %.10g (abs diff %.3g > %.1g + %.1g·%.3g)",
                        what, i, g[i], numeric, diff, ABS_TOLERANCE, REL_TOLERANCE, scale));
            }
            if (scale > 1e-4) worst = Math.max(worst, diff / scale);   // relative error is meaningful only away from 0
            checked++;
        }
        if (checked == 0) fail(what + ": nothing was checked");
        return worst;
    }

    private static int[] unravel(int flat, int[] shape) {
        int[] index = new int[shape.length];
        for (int d = shape.length - 1; d >= 0; d--) {
            index[d] = flat % shape[d];
            flat /= shape[d];
        }
        return index;
    }
}
