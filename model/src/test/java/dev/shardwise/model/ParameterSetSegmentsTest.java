package dev.shardwise.model;

import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.tensor.DType;
import org.junit.jupiter.api.Test;

import java.util.List;

import static org.junit.jupiter.api.Assertions.*;

/**
 * {@link ParameterSet.Builder#segmentedBy}: inside a unit, each run of experts and each run of dense parameters starts on
 * the padding multiple (what ZeRO 2 and 3 under expert parallelism shard over different groups), the counts
 * {@code paddedCount} predicts match the allocation, and the values a parameter gets do not depend on the layout.
 */
class ParameterSetSegmentsTest {
    private final MemoryPool pool = MemoryPool.unlimited("rank 0");

    /** Unit a: x [3] dense, a.mlp.experts.0.w [5], y [2] dense; unit b: z [3] dense. */
    private static ParameterSet.Builder declared() {
        ParameterSet.Init init = new ParameterSet.Init.Normal(0.02);
        return ParameterSet.builder()
                .unit("a").declare("x", init, true, 3).declare("a.mlp.experts.0.w", init, true, 5).declare("y", init, false, 2)
                .unit("b").declare("z", init, true, 3);
    }

    @Test
    void segmentsOfAUnitArePaddedApart() {
        ParameterSet.Builder plain = declared(), segmented = declared().segmentedBy(MoeConfig::isExpertParameter);
        assertEquals(16, plain.paddedCount(4), "units padded only at their ends: a 10 -> 12, b 3 -> 4");
        assertEquals(20, segmented.paddedCount(4), "a: x 3 -> 4, experts 5 -> 8, y 2 -> 4; b 3 -> 4");
        assertEquals(8, segmented.paddedCount(4, true), "the experts' run");
        assertEquals(12, segmented.paddedCount(4, false), "the dense runs");
        assertEquals(3, segmented.segmentCount(false), "dense runs: x, y in unit a; z in unit b");
        assertEquals(1, segmented.segmentCount(true), "one run of experts");
        assertEquals(2, plain.segmentCount(false), "without segmentedBy a unit is one segment");
        assertEquals(0, plain.segmentCount(true));
        try (ParameterSet a = plain.allocate(pool, DType.F32, 4); ParameterSet b = segmented.allocate(pool, DType.F32, 4)) {
            assertEquals(List.of(0L, 3L, 8L, 12L), offsets(a), "plain offsets of x, experts, y, z");
            assertEquals(List.of(0L, 4L, 12L, 16L), offsets(b), "segmented offsets of x, experts, y, z");
            assertEquals(16, b.units().get(0).size(), "unit a with its inner padding");
            assertEquals(20, b.paddedCount());
            a.initialize(7);
            b.initialize(7);
            for (Parameter p : a.parameters()) {
                assertArrayEquals(p.value().toDoubleArray(), b.get(p.name()).value().toDoubleArray(), p.name() + ": same values");
            }
            for (int i : new int[]{3, 9, 10, 11, 14, 15, 19}) {
                assertEquals(0.0, b.values().getDouble(i), "padding element " + i + " stays 0");
            }
        }
    }

    private static List<Long> offsets(ParameterSet set) {
        return List.of("x", "a.mlp.experts.0.w", "y", "z").stream().map(n -> set.offsetOf(set.get(n))).toList();
    }
}
