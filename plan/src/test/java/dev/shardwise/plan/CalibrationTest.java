package dev.shardwise.plan;

import org.junit.jupiter.api.Test;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Issue 16's bars on published runs: with each row's own layout, predicted throughput within 10% of the published
 * figure for every calibration row (the 7 rows of ../shared/published/calibration_runs.csv, which
 * CostParameters.FITTED was fitted on) and on average over the held-out rows (heldout_runs.csv: the other rows of
 * the same two papers' tables, never used in the fit).
 */
class CalibrationTest {
    /** The published runs of 2021-22 reduced gradients after the pipeline flush. */
    private static final CostParameters AS_PUBLISHED = CostParameters.FITTED.withOverlap(false);

    @Test
    void shippedCalibrationRowsAreTheSharedPublishedFile() throws Exception {
        Path shared = Path.of("../../shared/published/calibration_runs.csv");
        if (!Files.exists(shared)) shared = Path.of("../shared/published/calibration_runs.csv");
        if (!Files.exists(shared)) return;   // a checkout without ../shared: the shipped copy stands alone
        assertEquals(PublishedRun.parse(Files.readString(shared)), PublishedRun.shipped(false),
                "plan's calibration_runs.csv differs from " + shared + "; copy it again");
    }

    @Test
    void everyCalibrationRowIsWithinTenPercent() {
        double[] errors = errors(PublishedRun.shipped(false));
        for (int i = 0; i < errors.length; i++) {
            assertTrue(Math.abs(errors[i]) <= 0.10, "calibration row " + PublishedRun.shipped(false).get(i).label()
                    + ": throughput error " + pct(errors[i]) + " is past 10%");
        }
        assertTrue(mean(errors) <= 0.05, "calibration mean error " + pct(mean(errors)) + " past 5%");
    }

    @Test
    void heldOutRowsAreWithinTenPercentOnAverage() {
        double[] errors = errors(PublishedRun.shipped(true));
        assertTrue(mean(errors) <= 0.10, "held-out mean error " + pct(mean(errors)) + " is past 10%");
        for (int i = 0; i < errors.length; i++) {
            assertTrue(Math.abs(errors[i]) <= 0.15, "held-out row " + PublishedRun.shipped(true).get(i).label()
                    + ": throughput error " + pct(errors[i]) + " is past 15%");
        }
    }

    @Test
    void everyPublishedLayoutFitsItsDevices() {
        for (boolean heldOut : new boolean[] {false, true}) {
            for (PublishedRun r : PublishedRun.shipped(heldOut)) {
                Estimate e = new CostModel(r.model(), r.cluster(), AS_PUBLISHED).estimate(r.layout(), r.schedule(), r.globalBatch());
                assertTrue(e.fits(), r.label() + " ran on A100-80GB but the memory model says " + e.memory());
            }
        }
    }

    /** Published over predicted throughput, minus 1, per row; prints each row. */
    static double[] errors(List<PublishedRun> rows) {
        assertFalse(rows.isEmpty(), "no published rows");
        double[] errors = new double[rows.size()];
        for (int i = 0; i < rows.size(); i++) {
            PublishedRun r = rows.get(i);
            Estimate e = new CostModel(r.model(), r.cluster(), AS_PUBLISHED).estimate(r.layout(), r.schedule(), r.globalBatch());
            errors[i] = r.publishedSeconds() / e.stepSeconds() - 1;
            System.out.printf("%-72s published %7.2f s predicted %7.2f s throughput error %s%n", r.label(),
                    r.publishedSeconds(), e.stepSeconds(), pct(errors[i]));
        }
        System.out.printf("mean |error| %s, worst %s over %d rows%n", pct(mean(errors)), pct(worst(errors)), errors.length);
        return errors;
    }

    static double mean(double[] e) {
        double s = 0;
        for (double x : e) s += Math.abs(x);
        return s / e.length;
    }

    static double worst(double[] e) {
        double w = 0;
        for (double x : e) w = Math.max(w, Math.abs(x));
        return w;
    }

    private static String pct(double x) {
        return String.format("%+.1f%%", 100 * x);
    }
}
