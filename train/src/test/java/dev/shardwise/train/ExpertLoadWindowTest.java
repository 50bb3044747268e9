package dev.shardwise.train;

import org.junit.jupiter.api.Test;

import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;

/** The expert load summed over the last 50 steps. */
class ExpertLoadWindowTest {

    @Test
    void sumsTheLastFiftyStepsPerLayer() {
        ExpertLoadWindow window = new ExpertLoadWindow();
        assertEquals(0, window.maxOverMean());
        // step 1 overloads expert 0 of layer 0 (3 of 4 tokens: max/mean 1.5); layer 1 is balanced
        window.add(List.of(new double[] {3, 1}, new double[] {2, 2}));
        assertEquals(1.5, window.maxOverMean(), 1e-12);
        assertEquals(1.5 + 1.0, window.sumOfMaxOverMean(), 1e-12);
        // 49 steps that overload expert 1 by 1 token: summed, layer 0 is 3 + 49 against 1 + 147
        for (int s = 0; s < ExpertLoadWindow.STEPS - 1; s++) window.add(List.of(new double[] {1, 3}, new double[] {2, 2}));
        assertEquals(148.0 / 100, window.maxOverMean(), 1e-12);
        // the 51st step pushes step 1 out: 50 steps of (1, 3)
        window.add(List.of(new double[] {1, 3}, new double[] {2, 2}));
        assertEquals(1.5, window.maxOverMean(), 1e-12, "step 1's load left the window");
        assertEquals(1.5 + 1.0, window.sumOfMaxOverMean(), 1e-12);
    }
}
