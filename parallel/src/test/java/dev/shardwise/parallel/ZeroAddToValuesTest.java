package dev.shardwise.parallel;

import dev.shardwise.comm.LocalCluster;
import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;
import dev.shardwise.model.Parameter;
import dev.shardwise.model.ParameterSet;
import dev.shardwise.model.optim.AdamWOptimizer;
import dev.shardwise.model.optim.ParameterUpdate;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

import java.util.List;

import static org.junit.jupiter.api.Assertions.*;

/**
 * A change outside the optimizer (loss-free balancing's routing bias, Wang et al. 2024) under ZeRO 2 and 3: each rank
 * adds it to the elements its shard holds (ZeRO 3), so the gathered values equal a single rank's whole values plus
 * the change, bit for bit, for a parameter inside one rank's piece and for one straddling two or three ranks' pieces.
 */
class ZeroAddToValuesTest {
    /**
     * Unit "a": w [3, 5] then b [7] (22 elements; over 3 ranks padded to 24, pieces of 8: b at [15, 22) straddles
     * ranks 1 and 2); unit "c": c [6].
     */
    static ParameterSet.Builder declare() {
        ParameterSet.Init normal = new ParameterSet.Init.Normal(0.02);
        return ParameterSet.builder().unit("a").declare("w", normal, true, 3, 5).declare("b", normal, false, 7)
                .unit("c").declare("c", normal, false, 6);
    }

    static double[] delta(int n, double scale) {
        double[] d = new double[n];
        for (int i = 0; i < n; i++) d[i] = scale * (i - n / 2.0) / 3;
        return d;
    }

    /** Every parameter's values in declaration order, after the changes, on one rank with whole values. */
    static double[] wholeReference() {
        MemoryPool pool = MemoryPool.unlimited("reference");
        try (ParameterSet params = declare().allocate(pool, DType.F32)) {
            params.initialize(11);
            ParameterUpdate.addToWholeValues(params.get("b"), delta(7, 0.1));
            ParameterUpdate.addToWholeValues(params.get("w"), delta(15, 0.01));
            return unpadded(params, params.values().toDoubleArray());
        }
    }

    static double[] unpadded(ParameterSet params, double[] flat) {
        double[] out = new double[Math.toIntExact(params.count())];
        int at = 0;
        for (Parameter p : params.parameters()) {
            int n = Math.toIntExact(p.numel());
            System.arraycopy(flat, Math.toIntExact(params.offsetOf(p)), out, at, n);
            at += n;
        }
        return out;
    }

    @ParameterizedTest(name = "zero={0} dp={1}")
    @CsvSource({"3, 1", "3, 2", "3, 3", "2, 3"})
    void eachRankChangesItsShardAndTheGatherSeesTheWholeChange(int stage, int ranks) {
        double[] expected = wholeReference();
        List<double[]> gathered = LocalCluster.run(ranks, ctx -> {
            MemoryPool pool = ctx.memory();
            ZeroStage zero = ZeroStage.of(stage);
            try (ParameterSet params = zero.allocate(declare(), pool, DType.F32, ranks);
                 ZeroStage.Update update = zero.build(params, ctx.world(), pool, AdamWOptimizer.Settings.gpt(),
                         ZeroStage.Options.defaults().withOverlap(false));
                 Tensor full = Tensor.allocate(pool, MemoryCategory.BUFFERS, DType.F32, Math.toIntExact(params.paddedCount()))) {
                update.initialize(11);
                ParameterUpdate step = update.update();
                step.addToValues(params.get("b"), delta(7, 0.1));
                step.addToValues(params.get("w"), delta(15, 0.01));
                IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                        () -> step.addToValues(params.get("c"), new double[5]));
                assertTrue(e.getMessage().contains("parameter c") && e.getMessage().contains("(6)"), e.getMessage());
                ((ZeroShardedUpdate) step).gatherValues(full);
                return unpadded(params, full.toDoubleArray());
            }
        });
        for (int r = 0; r < ranks; r++) {
            assertArrayEquals(expected, gathered.get(r), "zero " + stage + ", dp " + ranks + ", rank " + r
                    + ": the gathered values are the whole values plus the change");
        }
    }
}
