package dev.shardwise.cli;

import dev.shardwise.comm.RankEnvironment;
import dev.shardwise.model.ExpertParallelRank;
import dev.shardwise.model.Gpt;
import dev.shardwise.model.GptPart;
import dev.shardwise.model.Recompute;
import dev.shardwise.model.TensorParallelRank;
import dev.shardwise.plan.local.LocalCostModel;
import dev.shardwise.plan.local.LocalEstimate;
import dev.shardwise.plan.local.LocalProfile;
import dev.shardwise.parallel.pipeline.ScheduleKind;
import dev.shardwise.train.MemoryReport;
import dev.shardwise.train.TrainConfig;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import picocli.CommandLine;

import java.io.IOException;
import java.util.EnumMap;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The local cost model's model state for expert parallelism at ZeRO 2 and 3 against {@code train --dry-run}'s
 * (MemoryReport.allocated, which TrainerExpertParallelTest checks against the ranks' pools): the same padded pieces of
 * the dense runs over dp and of the experts over the expert-data-parallel group, plus ZeRO's unit buffers.
 */
class ExpertParallelZeroEstimateTest {
    @ParameterizedTest(name = "ranks={0} ep={1} zero={2}")
    @CsvSource({"2, 2, 2", "2, 2, 3", "4, 2, 2", "4, 2, 3", "4, 4, 3"})
    void theEstimatesModelStateIsWhatTheDryRunAllocates(int ranks, int ep, int zero) throws IOException {
        TrainCommand train = new TrainCommand();
        new CommandLine(train).parseArgs("--preset", "moe-tiny", "--ranks", String.valueOf(ranks), "--ep", String.valueOf(ep),
                "--zero", String.valueOf(zero), "--micro-batch", "2", "--global-batch", String.valueOf(4 * ranks), "--seq-len", "64");
        TrainConfig config = train.resolve(RankEnvironment.SINGLE);
        String where = "ranks " + ranks + " ep " + ep + " zero " + zero;
        LocalProfile.Split split = new LocalProfile.Split(1, false, ep);
        LocalProfile profile = new LocalProfile(ranks, 1, 2, 64, Map.of(LocalProfile.Split.NONE, pieces(), split, pieces()),
                1e-9, 0, 1e-9, 2e-9, 1.5e-9, 1e-5, 1e-9);
        LocalEstimate e = new LocalCostModel(config.model(), profile).estimate(config.layout(), ScheduleKind.ONE_F_ONE_B, 4L * ranks);
        long largestUnit = Gpt.declare(config.model(), List.of(GptPart.Span.whole(config.model())), false, TensorParallelRank.of(1, 0),
                ExpertParallelRank.of(ep, 0)).largestUnit();
        long unitBuffers = (zero == 3 ? 4 : 2) * 4 * largestUnit;
        assertEquals(MemoryReport.allocated(config, 0).total() + unitBuffers, e.stateBytes()[0], where + ": --dry-run's model state "
                + MemoryReport.allocated(config, 0) + " plus " + unitBuffers + " bytes of unit buffers");
        assertTrue(Double.isFinite(e.stepSeconds()) && e.dpSeconds() > 0, where + ": " + e);
    }

    private static LocalProfile.Pieces pieces() {
        LocalProfile.Part part = new LocalProfile.Part(0.01, 0.02, 0.012, 0.008, 1000, 1000, 0, 0, 0);
        Map<Recompute, LocalProfile.Part> block = new EnumMap<>(Recompute.class);
        for (Recompute r : Recompute.values()) block.put(r, part);
        return new LocalProfile.Pieces(part, block, part);
    }
}
