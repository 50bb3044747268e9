package dev.shardwise.plan;

/** Not a test: prints each published row's predicted and published step time for the parameters given. */
final class CalibrationReport {
    public static void main(String[] args) {
        CostParameters cp = new CostParameters(Double.parseDouble(args[0]), Double.parseDouble(args[1]), Double.parseDouble(args[2]), 0.7, 3e9, false);
        for (boolean held : new boolean[] {false, true}) {
            double sum = 0, worst = 0;
            for (PublishedRun r : PublishedRun.shipped(held)) {
                long t0 = System.nanoTime();
                Estimate e = new CostModel(r.model(), r.cluster(), cp).estimate(r.layout(), r.schedule(), r.globalBatch());
                double err = r.publishedSeconds() / e.stepSeconds() - 1;
                sum += Math.abs(err);
                worst = Math.max(worst, Math.abs(err));
                System.out.printf("%-70s pub %7.2f s pred %7.2f s err %+6.1f%% mem %5.1f GB fits %s comp %.2f tp %.2f p2p %.2f dp %.2f bub %.2f (%d ms)%n",
                        r.label(), r.publishedSeconds(), e.stepSeconds(), 100 * err, e.memory().total() / 1e9, e.fits(),
                        e.computeSeconds(), e.tpCommSeconds(), e.p2pSeconds(), e.dpSeconds(), e.bubbleSeconds(), (System.nanoTime() - t0) / 1_000_000);
            }
            System.out.printf("%s: mean %.1f%% worst %.1f%%%n", held ? "held-out" : "calibration", 100 * sum / PublishedRun.shipped(held).size(), 100 * worst);
        }
    }
}
