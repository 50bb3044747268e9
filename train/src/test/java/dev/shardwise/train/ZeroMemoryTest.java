package dev.shardwise.train;

import dev.shardwise.comm.LocalCluster;
import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;
import dev.shardwise.model.Gpt;
import dev.shardwise.model.ModelConfig;
import dev.shardwise.model.optim.AdamWOptimizer;
import dev.shardwise.parallel.ZeroMemory;
import dev.shardwise.parallel.ZeroStage;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.*;

/**
 * Per-rank bytes of parameters, gradients and optimizer state, measured from each rank's pool after a training
 * step at dp = 4, against ZeRO's formulas (16Ψ; 4Ψ + 4Ψ + 8Ψ/N; 4Ψ + 12Ψ/N; 16Ψ/N) within 5%.
 */
class ZeroMemoryTest {
    static final int RANKS = 4;
    static final ModelConfig MODEL = DataParallelParityTest.MODEL;

    @TempDir
    Path offloadDir;

    /** Live bytes by category on every rank after one step of ZeRO {@code stage}, and the peak of BUFFERS. */
    static List<Map<MemoryCategory, Long>> measure(int stage, Path offload) {
        return LocalCluster.run(RANKS, ctx -> {
            MemoryPool pool = ctx.memory();
            ZeroStage zero = ZeroStage.of(stage);
            ZeroStage.Options options = ZeroStage.Options.defaults().withOffload(offload, 1024);
            try (Gpt model = new Gpt(MODEL, zero.allocate(Gpt.declare(MODEL), pool, DType.F32, RANKS));
                 ZeroStage.Update update = zero.build(model.parameters(), ctx.world(), pool, AdamWOptimizer.Settings.gpt(), options);
                 TrainStep step = new TrainStep(model, pool, 1.0, update.update());
                 Tensor batch = Tensor.allocate(pool, MemoryCategory.BUFFERS, DType.I32, 2, DataParallelParityTest.SEQ + 1)) {
                update.initialize(7);
                int[] tokens = DataParallelParityTest.globalBatch(0);
                step.run(batch, 2, b -> MemorySegment.copy(tokens, 0, b.segment(), ValueLayout.JAVA_INT, b.byteOffset(),
                        2 * (DataParallelParityTest.SEQ + 1)), 1e-3);
                Map<MemoryCategory, Long> live = new java.util.EnumMap<>(pool.liveByCategory());
                live.put(MemoryCategory.BUFFERS, pool.peakBytes(MemoryCategory.BUFFERS));
                return live;
            }
        });
    }

    @ParameterizedTest(name = "zero={0}")
    @ValueSource(ints = {0, 1, 2, 3})
    void perRankModelStateMatchesZeroFormulasAtFourRanks(int stage) {
        long psi = MODEL.parameterCount();
        ZeroMemory expected = ZeroMemory.of(stage, RANKS, psi, false);
        List<Map<MemoryCategory, Long>> ranks = measure(stage, null);
        StringBuilder report = new StringBuilder("zero=" + stage + " dp=" + RANKS + " Ψ=" + psi + ":");
        for (MemoryCategory c : List.of(MemoryCategory.PARAMETERS, MemoryCategory.GRADIENTS, MemoryCategory.OPTIMIZER_STATE)) {
            for (int r = 0; r < RANKS; r++) {
                long measured = ranks.get(r).get(c), formula = expected.bytes(c);
                assertEquals(formula, measured, 0.05 * formula, "zero=" + stage + " rank " + r + " " + c.label() + ": measured "
                        + measured + " bytes vs " + ZeroMemory.formula(stage, c, false) + " = " + formula);
            }
            report.append(String.format(" %s %d (%s = %d)", c.label(), ranks.getFirst().get(c), ZeroMemory.formula(stage, c, false),
                    expected.bytes(c)));
        }
        report.append(String.format("; peak buffers %d", ranks.getFirst().get(MemoryCategory.BUFFERS)));
        System.out.println(report);
    }

    @ParameterizedTest(name = "zero={0}")
    @ValueSource(ints = {1, 3})
    void offloadedOptimizerStateIsNotResident(int stage) {
        long psi = MODEL.parameterCount();
        for (Map<MemoryCategory, Long> rank : measure(stage, offloadDir)) {
            assertEquals(0, rank.get(MemoryCategory.OPTIMIZER_STATE), "zero=" + stage + " offloaded: no resident optimizer state");
            assertEquals(ZeroMemory.of(stage, RANKS, psi, true).parameters(), rank.get(MemoryCategory.PARAMETERS), 0.05 * 4 * psi);
        }
    }
}
