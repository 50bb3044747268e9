package dev.shardwise.train;

import dev.shardwise.comm.LocalCluster;
import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;
import dev.shardwise.data.BatchSampler;
import dev.shardwise.model.Gpt;
import dev.shardwise.parallel.StageGradients;
import dev.shardwise.parallel.ZeroStage;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Path;
import java.util.List;
import java.util.Set;

import static org.junit.jupiter.api.Assertions.*;

/**
 * Saving and loading a distributed checkpoint under dp 4 with ZeRO 3 keeps each rank's pool peak within 1.1x its
 * training step's peak: a rank writes from and reads into its own shards, never gathering a whole tensor.
 */
class CheckpointMemoryTest {
    @TempDir
    Path dir;

    @Test
    void zeroStage3SavesAndLoadsWithinItsTrainingPeak() throws IOException {
        Path data = TrainerResumeTest.tinyData(dir);
        TrainConfig config = TrainerResumeTest.config(data, dir.resolve("run"), 4, 3);
        RunCheckpoints checkpoints = new RunCheckpoints(config);
        Path saved = dir.resolve("run/checkpoints");
        try (TrainingData trainingData = TrainingData.open(data, config.model().vocabSize(), TrainerResumeTest.quiet())) {
            List<long[]> peaks = LocalCluster.run(4, ctx -> {
                MemoryPool pool = ctx.memory();
                ZeroStage zero = ZeroStage.of(3);
                int rank = ctx.world().rank(), row = config.seqLen() + 1;
                try (Gpt model = new Gpt(config.model(), zero.allocate(Gpt.declare(config.model()), pool, DType.F32, 4));
                     OptimizerState optimizer = StageRank.optimizer(zero, model.parameters(), ctx.world(), pool, StageGradients.NONE);
                     TrainStep step = new TrainStep(model, pool, 1.0, optimizer.update());
                     Tensor batch = Tensor.allocate(pool, MemoryCategory.BUFFERS, DType.I32, 1, row)) {
                    pool.resetPeaks();
                    step.run(batch, 2, b -> {
                        for (int i = 0; i < row; i++) b.set((double) ((i * 7 + rank) % 300), 0, i);
                    }, 1e-3);
                    long train = pool.peakBytes();
                    RunCheckpoints.Place place = new RunCheckpoints.Place(rank, 4, rank, 4, Set.of(), ctx.world()::barrier);
                    TrainState state = new TrainState();
                    state.completeStep(config.tokensPerStep(), 0, 4);
                    pool.resetPeaks();
                    checkpoints.save(rank == 0, saved, model.parameters(), optimizer, state, trainingData, place);
                    long save = pool.peakBytes();
                    ctx.world().barrier();   // the leader has committed
                    pool.resetPeaks();
                    checkpoints.restore(saved.resolve("step-000001"), model.parameters(), optimizer,
                            new BatchSampler(trainingData.train(), config.globalMicroBatch(), config.seqLen(), config.seed()), new TrainState());
                    long load = pool.peakBytes();
                    return new long[]{train, save, load};
                } catch (IOException e) {
                    throw new UncheckedIOException(e);
                }
            });
            assertEquals(4, peaks.size());
            for (int r = 0; r < peaks.size(); r++) {
                long[] p = peaks.get(r);
                System.out.printf("rank %d: training peak %d bytes, save peak %d, load peak %d%n", r, p[0], p[1], p[2]);
                assertTrue(p[1] <= 1.1 * p[0], "rank " + r + ": save peak " + p[1] + " vs training peak " + p[0] + " (max 1.1x)");
                assertTrue(p[2] <= 1.1 * p[0], "rank " + r + ": load peak " + p[2] + " vs training peak " + p[0] + " (max 1.1x)");
            }
        }
        assertTrue(ResumeChoice.problem(saved.resolve("step-000001")).isEmpty(), "the checkpoint is intact");
    }
}
