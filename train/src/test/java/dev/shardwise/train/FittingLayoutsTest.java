package dev.shardwise.train;

import org.junit.jupiter.api.Test;

import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.*;

/** The memory error's advice: layouts whose model state, as the dry run counts it, fits 3/4 of the rank budget. */
class FittingLayoutsTest {

    @Test
    void gpt2MediumAtTwoGigabytesFitsOnlyWhenSplit() {
        TrainConfig oneRank = ConfigLoader.resolve(Map.of(), "test", Map.of("preset", "gpt2-350m", "rankMemory", "2g",
                "batchSize", 1, "seqLen", 64));
        assertTrue(MemoryReport.allocated(oneRank, 0).total() > oneRank.rankMemory(), "one rank cannot hold it");
        List<FittingLayouts.Fit> fits = FittingLayouts.of(oneRank, 1000);
        assertFalse(fits.isEmpty(), "some layout of up to 16 ranks fits");
        for (FittingLayouts.Fit fit : fits) {
            TrainConfig c = oneRank.withLayout(fit.layout());
            for (int s = 0; s < fit.layout().pp(); s++) {
                assertTrue(MemoryReport.allocated(c, s).total() <= 0.75 * c.rankMemory(), fit.flags() + " stage " + s + " fits");
            }
        }
        assertTrue(fits.stream().anyMatch(f -> f.flags().equals("--ranks 8 --tp 2 --pp 2 --zero 1")),
                "the README's layout is among them: " + fits.stream().map(FittingLayouts.Fit::flags).toList());
        String advice = FittingLayouts.describe(oneRank, 3);
        System.out.println(advice);
        assertTrue(advice.startsWith("layouts whose model state takes at most 3/4 of 2.00 GiB per rank: --ranks "), advice);
    }
}
