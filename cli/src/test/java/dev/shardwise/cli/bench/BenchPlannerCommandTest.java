package dev.shardwise.cli.bench;

import dev.shardwise.plan.Candidates;
import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertEquals;

/** bench planner's rank correlation, and its default layouts all parse and fit 2 cores at global batch 8. */
class BenchPlannerCommandTest {
    @Test
    void spearmanRanksTheValuesAndSharesTies() {
        assertEquals(1, BenchPlannerCommand.spearman(new double[] {1, 2, 3, 4}, new double[] {10, 20, 35, 90}), 1e-12);
        assertEquals(-1, BenchPlannerCommand.spearman(new double[] {1, 2, 3, 4}, new double[] {4, 3, 2, 1}), 1e-12);
        // ranks (1.5, 1.5, 3) against (1, 2, 3): Pearson of the ranks
        assertEquals(Math.sqrt(3) / 2, BenchPlannerCommand.spearman(new double[] {5, 5, 7}, new double[] {1, 2, 3}), 1e-12);
    }

    @Test
    void theDefaultLayoutsUseAtMostTwoRanksAndSplitTheGlobalBatch() {
        for (String text : BenchPlannerCommand.DEFAULT_LAYOUTS) {
            var layout = Candidates.parse(text, 0).layout();
            assertEquals(0, 8 % (layout.dp() * layout.microBatch()), text);
            assertEquals(true, layout.worldSize() <= 2, text);
        }
        for (String text : BenchLayoutsCommand.DEFAULT_LAYOUTS) {
            var layout = Candidates.parse(text, 0).layout();
            assertEquals(0, 8 % (layout.dp() * layout.microBatch()), text);
        }
    }
}
