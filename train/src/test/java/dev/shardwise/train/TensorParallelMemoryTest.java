package dev.shardwise.train;

import dev.shardwise.comm.LocalCluster;
import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;
import dev.shardwise.model.Gpt;
import dev.shardwise.model.GptPart;
import dev.shardwise.model.ModelConfig;
import dev.shardwise.model.ParameterSet;
import dev.shardwise.model.TensorParallel;
import dev.shardwise.parallel.ParallelLayout;
import dev.shardwise.parallel.ProcessGroups;
import dev.shardwise.parallel.StageGradients;
import dev.shardwise.parallel.ZeroMemory;
import dev.shardwise.parallel.ZeroStage;
import dev.shardwise.parallel.tensor.CommunicatorTensorParallel;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.EnumMap;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.*;

/**
 * Per-rank bytes of parameters, gradients and optimizer state under tensor parallelism, measured from every rank's
 * pool after a training step, against what {@code train --dry-run} prints ({@link MemoryReport}): exactly the bytes
 * it says are allocated, and within 5% of ZeRO's formula with Ψ = Ψ_split/tp + Ψ_whole (the difference is the
 * padding: ZeRO's units rounded to a multiple of dp, the vocabulary's rows to a multiple of tp).
 */
class TensorParallelMemoryTest {
    static final ModelConfig MODEL = TensorParallelParityTest.ODD_VOCAB;   // vocab 61: padded rows at tp 2 and 4
    static final int SEQ = TensorParallelParityTest.SEQ;

    static TrainConfig config(int dp, int tp, int pp, int zero) {
        Map<String, Object> flags = new HashMap<>();
        flags.put("model", ConfigLoader.modelMap(MODEL));
        flags.put("ranks", dp * tp * pp);
        flags.put("dp", dp);
        flags.put("tp", tp);
        flags.put("pp", pp);
        flags.put("zero", zero);
        flags.put("batchSize", 4 / dp);
        flags.put("seqLen", SEQ);
        flags.put("gradAccumulation", 2);
        return ConfigLoader.resolve(Map.of(), "test", flags);
    }

    /** Each rank's pipeline stage and its live bytes by category after one step, built as the trainer builds a rank. */
    static List<Map.Entry<Integer, Map<MemoryCategory, Long>>> measure(TrainConfig config) {
        ParallelLayout layout = config.layout();
        return LocalCluster.run(layout.worldSize(), LocalCluster.Options.defaults(), ctx -> {
            MemoryPool pool = ctx.memory();
            try (ProcessGroups groups = new ProcessGroups(layout, ctx.world())) {
                int stage = groups.coordinates().ppStage(), pp = layout.pp();
                TensorParallel tp = layout.tp() > 1 ? new CommunicatorTensorParallel(groups.tp()) : TensorParallel.NONE;
                List<GptPart.Span> spans = Trainer.stageSpans(config, stage);
                ZeroStage zero = ZeroStage.of(layout.zeroStage());
                try (ParameterSet params = zero.allocate(Gpt.declare(MODEL, spans, pp > 1, tp), pool, DType.F32, layout.dp());
                     StageGradients stages = new StageGradients(pp > 1 ? groups.pp() : null, groups.tp(), params, pool);
                     OptimizerState optimizer = StageRank.optimizer(zero, params, groups.dp(), pool, stages);
                     TrainStep step = new TrainStep(params, List.of(new GptPart(MODEL, params, spans.getFirst(),
                             layout.recompute(), 1, tp)), pool, 1.0, optimizer.update(),
                             new TrainStep.Pipeline(pp > 1 ? groups.pp() : null, config.schedule(), pp, 1));
                     Tensor batch = Tensor.allocate(pool, MemoryCategory.BUFFERS, DType.I32, config.batchSize(), SEQ + 1)) {
                    int rows = config.batchSize(), dpRank = groups.coordinates().dpRank();
                    int[] k = {0};
                    step.run(batch, config.gradAccumulation(), b -> {
                        int[] global = TensorParallelParityTest.microBatch(MODEL, 0, k[0]++);
                        MemorySegment.copy(global, dpRank * rows * (SEQ + 1), b.segment(), ValueLayout.JAVA_INT,
                                b.byteOffset(), rows * (SEQ + 1));
                    }, 1e-3);
                    return Map.entry(stage, (Map<MemoryCategory, Long>) new EnumMap<>(pool.liveByCategory()));
                }
            }
        });
    }

    @ParameterizedTest(name = "dp {0} x tp {1} x pp {2}, ZeRO {3}")
    @CsvSource({"1, 2, 1, 0", "1, 4, 1, 0", "2, 2, 1, 1", "2, 2, 2, 1", "2, 2, 1, 2", "2, 2, 2, 3"})
    void perRankModelStateIsWhatTheDryRunPrints(int dp, int tp, int pp, int zero) {
        TrainConfig config = config(dp, tp, pp, zero);
        String layout = "dp " + dp + " x tp " + tp + " x pp " + pp + ", ZeRO " + zero;
        List<Map.Entry<Integer, Map<MemoryCategory, Long>>> ranks = measure(config);
        assertEquals(dp * tp * pp, ranks.size(), layout + ": every rank measured");
        StringBuilder report = new StringBuilder(layout + ":");
        for (int r = 0; r < ranks.size(); r++) {
            int stage = ranks.get(r).getKey();
            ZeroMemory allocated = MemoryReport.allocated(config, stage), formula = MemoryReport.formula(config, stage);
            for (MemoryCategory c : MemoryReport.MODEL_STATE) {
                long measured = ranks.get(r).getValue().getOrDefault(c, 0L);
                assertEquals(allocated.bytes(c), measured, layout + " rank " + r + " (stage " + stage + ") " + c.label()
                        + ": measured vs the dry run's allocated bytes");
                assertEquals(formula.bytes(c), measured, 0.05 * formula.bytes(c), layout + " rank " + r + " " + c.label()
                        + ": measured " + measured + " vs " + ZeroMemory.formula(zero, c, false) + " = " + formula.bytes(c));
                if (r == 0) report.append(String.format(" %s %d (%s = %d)", c.label(), measured, ZeroMemory.formula(zero, c, false),
                        formula.bytes(c)));
            }
        }
        System.out.println(report + "; Ψ per rank " + MemoryReport.stageParameters(config, 0) + " of " + MODEL.parameterCount());
    }
}
