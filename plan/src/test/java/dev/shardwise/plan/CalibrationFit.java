package dev.shardwise.plan;

import java.util.List;

/** Not a test: the grid search that produced CostParameters.FITTED; run by hand (see CalibrationTest). */
final class CalibrationFit {
    public static void main(String[] args) {
        List<PublishedRun> rows = PublishedRun.shipped(false);
        double bestErr = 1e9;
        String best = "";
        for (double peak = 0.60; peak <= 0.951; peak += 0.025) {
            for (double half : new double[] {0, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256}) {
                for (double comm : new double[] {0.5, 0.6, 0.7, 0.8, 0.9, 1.0}) {
                    CostParameters cp = new CostParameters(peak, half, comm, 0.7, 3e9, false);
                    double sum = 0, worst = 0;
                    for (PublishedRun r : rows) {
                        Estimate e = new CostModel(r.model(), r.cluster(), cp).quickEstimate(r.layout(), r.schedule(), r.globalBatch());
                        double err = Math.abs(r.publishedSeconds() / e.stepSeconds() - 1);
                        sum += err;
                        worst = Math.max(worst, err);
                    }
                    double score = sum / rows.size() + 0.25 * worst;
                    if (score < bestErr) {
                        bestErr = score;
                        best = String.format("peak=%.3f half=%.0f comm=%.1f mean=%.4f worst=%.4f", peak, half, comm, sum / rows.size(), worst);
                    }
                }
            }
        }
        System.out.println(best);
    }
}
