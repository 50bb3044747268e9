package dev.shardwise.plan;

import dev.shardwise.model.Recompute;
import dev.shardwise.parallel.ParallelLayout;
import dev.shardwise.parallel.pipeline.ScheduleKind;
import org.junit.jupiter.api.Test;

import java.util.Arrays;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class LayerSplitTest {

    @Test
    void evenSplitsAreMegatronsAndTheRemainderGoesInsideFirst() {
        assertArrayEquals(new int[] {6, 6, 6, 6}, LayerSplit.of(24, 4));
        assertArrayEquals(new int[] {5, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 5}, LayerSplit.of(70, 12), "BLOOM's 70 blocks on 12 stages");
        assertArrayEquals(new int[] {3, 3, 3, 2}, LayerSplit.of(11, 4), "interior, then the first chunk, then the last");
        assertArrayEquals(new int[] {1, 1, 1}, LayerSplit.of(3, 3));
        for (int layers = 1; layers <= 40; layers++) {
            for (int parts = 1; parts <= layers; parts++) {
                int[] split = LayerSplit.of(layers, parts);
                assertEquals(layers, Arrays.stream(split).sum(), layers + " blocks in " + parts);
                assertTrue(Arrays.stream(split).max().getAsInt() - Arrays.stream(split).min().getAsInt() <= 1, "balanced by count");
            }
        }
        assertEquals(11, LayerSplit.stageBlocks(LayerSplit.of(22, 4), 2, 0), "stage 0 holds chunks 0 and 2 (6 + 5)");
        assertEquals(6, LayerSplit.largestChunk(LayerSplit.of(22, 4), 2, 0));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> LayerSplit.of(4, 5));
        assertTrue(e.getMessage().contains("at most 4"), e.getMessage());
    }

    @Test
    void aStageCountThatDoesNotDivideTheLayersIsPricedByItsFullestStage() {
        ParallelLayout layout = new ParallelLayout(8, 2, 4, 1, 1, true, 1, Recompute.SELECTIVE, 1);
        double[] step = new double[3];
        double[] memory = new double[3];
        int[] layers = {28, 30, 32};   // 7/7/7/7, 7/8/8/7, 8/8/8/8 blocks per stage
        for (int i = 0; i < 3; i++) {
            CostModel costs = new CostModel(new ModelSpec("gpt-" + layers[i], layers[i], 4096, 32, 16384, 51200, 2048),
                    Specs.cluster("a100x3072"), CostParameters.FITTED);
            step[i] = costs.estimate(layout, ScheduleKind.ONE_F_ONE_B, 256).stepSeconds();
            memory[i] = costs.memory(layout, ScheduleKind.ONE_F_ONE_B, 256).total();
        }
        assertTrue(step[0] < step[1] && step[1] < step[2], "30 blocks on 4 stages cost between 28 and 32: " + Arrays.toString(step));
        assertTrue(memory[0] <= memory[1] && memory[1] <= memory[2], "and so does their memory: " + Arrays.toString(memory));
        // 97 blocks (a prime) of GPT-3's width need a pipeline to fit, and no stage count that a device count of 3072 allows divides them
        CostModel prime = new CostModel(new ModelSpec("gpt-97l", 97, 12288, 96, 49152, 51200, 2048), Specs.cluster("a100x3072"), CostParameters.FITTED);
        List<Estimate> found = new Planner(prime).search(1536, 5);
        assertFalse(found.isEmpty(), "layouts found for 97 blocks");
        for (Estimate e : found) assertTrue(e.layout().pp() > 1 && 97 % e.layout().pp() != 0 && e.fits(), e.layoutText());
    }
}
