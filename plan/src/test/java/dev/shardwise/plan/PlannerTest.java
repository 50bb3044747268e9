package dev.shardwise.plan;

import org.junit.jupiter.api.Test;

import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

class PlannerTest {

    @Test
    void searchFor1TOn3072GpusAnswersWithinTenSeconds() {
        ModelSpec model = Specs.model("gpt-1t");
        ClusterSpec cluster = Specs.cluster("a100x3072");
        long start = System.nanoTime();
        List<Estimate> best = new Planner(new CostModel(model, cluster, CostParameters.FITTED)).search(3072, 10);
        double seconds = (System.nanoTime() - start) / 1e9;
        System.out.printf("gpt-1t on a100x3072: %.2f s, best %s %.1f s/step MFU %.3f%n", seconds, best.getFirst().layoutText(),
                best.getFirst().stepSeconds(), best.getFirst().mfu());
        assertTrue(seconds < 10, "search took " + seconds + " s; the bar is 10 s");
        assertFalse(best.isEmpty(), "no layout of gpt-1t fits a100x3072");
        for (Estimate e : best) assertTrue(e.fits(), e.layoutText() + " does not fit: " + e.memory());
        for (int i = 1; i < best.size(); i++) {
            assertTrue(best.get(i - 1).stepSeconds() <= best.get(i).stepSeconds(), "ranking is not by step time at " + i);
        }
    }

    @Test
    void bestLayoutOfEachCalibrationRowIsAtLeastAsFastAsThePublishedOne() {
        int cases = 0;
        for (PublishedRun r : PublishedRun.shipped(false)) {
            CostModel costs = new CostModel(r.model(), r.cluster(), CostParameters.FITTED);
            Estimate published = costs.estimate(r.layout(), r.schedule(), r.globalBatch());
            List<Estimate> best = new Planner(costs).search(r.globalBatch(), 1);
            assertFalse(best.isEmpty(), r.label() + ": the search found no layout that fits");
            Estimate b = best.getFirst();
            System.out.printf("%-72s published layout %7.2f s, proposed %s %7.2f s (%.1f GB)%n", r.label(),
                    published.stepSeconds(), b.layoutText(), b.stepSeconds(), b.memory().total() / 1e9);
            assertTrue(b.fits(), r.label() + ": proposed " + b.layoutText() + " does not fit: " + b.memory());
            assertTrue(b.stepSeconds() <= published.stepSeconds() * 1.0001, r.label() + ": proposed " + b.layoutText()
                    + " predicts " + b.stepSeconds() + " s, slower than the published layout's " + published.stepSeconds());
            cases++;
        }
        assertEquals(7, cases, "calibration rows checked");
    }

    @Test
    void explainParsesTheIssueExampleAndScoresIt() {
        Planner planner = new Planner(new CostModel(Specs.model("gpt-145b"), Specs.cluster("a100x3072").withNodes(192), CostParameters.FITTED));
        Estimate e = planner.explain("tp=8,pp=8,dp=24,vpp=2,mb=2,recompute=full,sp=false,zero=0", 2304);
        assertEquals("tp=8,pp=8,dp=24,vpp=2,mb=2,recompute=full,sp=false,zero=0", e.layoutText());
        assertEquals(1536, e.devices());
        assertTrue(e.tflopsPerDeviceHardware() > e.tflopsPerDeviceModel(), "full recompute executes more FLOPs than the model counts");
    }

    @Test
    void simulationAgreesWithTheClosedFormWithinFivePercent() {
        CostModel costs = new CostModel(Specs.model("gpt-145b"), Specs.cluster("a100x3072").withNodes(192), CostParameters.FITTED);
        for (String text : List.of("tp=8,pp=8,dp=24,vpp=2,mb=2,recompute=full,sp=false,zero=0",
                "tp=8,pp=8,dp=24,vpp=1,mb=1,recompute=selective,sp=true,zero=1", "tp=4,pp=16,dp=24,vpp=1,mb=1,recompute=full,sp=true,zero=0")) {
            Candidates.Choice c = Candidates.parse(text, 1536);
            double simulated = costs.estimate(c.layout(), c.schedule(), 2304).stepSeconds();
            double closed = costs.quickEstimate(c.layout(), c.schedule(), 2304).stepSeconds();
            assertEquals(simulated, closed, 0.05 * simulated, text + ": simulated vs closed form");
        }
    }

    @Test
    void zeroBubbleH1BeatsOneFOneBOnTheSameLayoutAndUsesNoMoreMemory() {
        CostModel costs = new CostModel(Specs.model("gpt-145b"), Specs.cluster("a100x3072").withNodes(192), CostParameters.FITTED);
        Candidates.Choice oneF = Candidates.parse("tp=8,pp=8,dp=24,mb=1,recompute=selective,sp=true,zero=1", 1536);
        Candidates.Choice zb = Candidates.parse("tp=8,pp=8,dp=24,mb=1,recompute=selective,sp=true,zero=1,schedule=zb-h1", 1536);
        Estimate a = costs.estimate(oneF.layout(), oneF.schedule(), 2304);
        Estimate b = costs.estimate(zb.layout(), zb.schedule(), 2304);
        assertTrue(b.stepSeconds() < a.stepSeconds(), "zb-h1 " + b.stepSeconds() + " s vs 1f1b " + a.stepSeconds() + " s");
        assertTrue(b.bubbleSeconds() < 0.6 * a.bubbleSeconds(), "zb-h1 bubble " + b.bubbleSeconds() + " vs " + a.bubbleSeconds());
        assertTrue(b.memory().total() <= a.memory().total() * 1.0001, "zb-h1 memory " + b.memory() + " vs " + a.memory());
    }
}
