package dev.shardwise.train;

import dev.shardwise.model.ParameterSet;
import org.junit.jupiter.api.Test;

import java.util.List;

import static org.junit.jupiter.api.Assertions.*;

/** Local elements of a tensor-parallel slice map to the global elements {@link ParameterSet.Slice#take} gives them. */
class GlobalRunsTest {
    /** Checks every local element of {@code slice}, through runs of a few local windows, against Slice.take. */
    private static void agreesWithTake(ParameterSet.Slice slice) {
        int[] global = slice.globalShape(), local = slice.localShape();
        int n = 1, m = 1;
        for (int s : global) n *= s;
        for (int s : local) m *= s;
        double[] ids = new double[n];
        for (int i = 0; i < n; i++) ids[i] = i + 1;   // 0 marks padding
        double[] taken = slice.take(ids);
        int checked = 0;
        for (int window : new int[]{m, 5, 1}) {
            double[] mapped = new double[m];
            for (int from = 0; from < m; from += window) {
                for (GlobalRuns.Run r : GlobalRuns.of(slice, local, from, Math.min(window, m - from))) {
                    assertTrue(r.localStart() >= from && r.localStart() + r.length() <= from + window, "run inside its window");
                    for (long k = 0; k < r.length(); k++) mapped[(int) (r.localStart() + k)] = r.globalStart() + k + 1;
                }
            }
            assertArrayEquals(taken, mapped, 0.0, slice + " in windows of " + window);
            checked++;
        }
        assertEquals(3, checked);
    }

    @Test
    void fusedQkvSliceOfThreeSegmentsMapsLikeTake() {
        agreesWithTake(new ParameterSet.Slice(0, new int[]{12, 4}, new int[]{2, 6, 10}, new int[]{2, 2, 2}, 0));
    }

    @Test
    void columnSliceAlongTheSecondDimensionMapsLikeTake() {
        agreesWithTake(ParameterSet.Slice.of(1, 3, 3, 4, 8));
    }

    @Test
    void paddedVocabularyRowsMapToNoGlobalElement() {
        ParameterSet.Slice slice = new ParameterSet.Slice(0, new int[]{7, 3}, new int[]{4}, new int[]{3}, 1);
        agreesWithTake(slice);
        List<GlobalRuns.Run> runs = GlobalRuns.of(slice, slice.localShape(), 9, 3);
        assertTrue(runs.isEmpty(), "the padding row holds no global element: " + runs);
    }

    @Test
    void runsOfOneStrideCompressToOneEntry() {
        List<GlobalRuns.Run> runs = GlobalRuns.of(ParameterSet.Slice.of(1, 3, 3, 4, 8), new int[]{4, 3}, 0, 12);
        assertEquals(List.of(List.of(3L, 3L, 4L, 8L)), ShardWriter.compress(runs));
    }
}
