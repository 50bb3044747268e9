package dev.shardwise.model;

import org.junit.jupiter.api.Test;

import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;

/** The expert-load figures: the worst layer's max/mean and the sum over layers that gives their mean. */
class MoeStatsTest {
    @Test
    void theWorstLayerAndTheMeanOverLayersOfMaxOverMean() {
        MoeStats stats = new MoeStats(0, List.of(new double[]{4, 4, 4, 4}, new double[]{8, 0, 4, 4}, new double[]{0, 0, 0, 0}), new double[3], 0, 0);
        assertEquals(2.0, stats.maxOverMean(), 0, "layer 1: max 8 over mean 4");
        assertEquals(3.0, stats.sumOfMaxOverMean(), 0, "1 + 2 + 0 (a layer that took no tokens counts 0)");
        assertEquals(3, stats.layers());
        assertEquals(0.0, MoeStats.NONE.maxOverMean(), 0);
    }
}
