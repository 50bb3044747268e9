package dev.shardwise.train;

import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.model.Gpt;
import dev.shardwise.model.ParameterSet;
import dev.shardwise.model.optim.AdamWOptimizer;
import dev.shardwise.parallel.ZeroStage;

import java.io.IOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;

/**
 * How long a checkpoint holds training up, synchronous beside asynchronous (flash checkpoint), measured in the same
 * run on one rank holding a preset model's parameters and AdamW moments: the synchronous save's whole time, and the
 * asynchronous save's visible part (copy to host buffers) and its total (until committed). Rounds alternate the two
 * so a busy machine slows them alike; medians are reported.
 */
public final class CheckpointStall {
    private CheckpointStall() { }

    /**
     * Medians over the rounds, in milliseconds.
     *
     * @param bytes the checkpoint's tensor bytes (values and two moments)
     */
    public record Result(String preset, long bytes, int rounds, double syncMs, double asyncStallMs, double asyncTotalMs) { }

    /**
     * Saves {@code rounds} synchronous and {@code rounds} asynchronous checkpoints of preset {@code preset} under
     * {@code dir} (keeping the newest two).
     *
     * @throws IOException if {@code dir} cannot be written
     */
    public static Result measure(String preset, Path dir, int rounds) throws IOException {
        if (rounds < 1) throw new IllegalArgumentException("--rounds must be at least 1, got " + rounds);
        TrainConfig config = ConfigLoader.resolve(Map.of(), "bench", Map.of("preset", preset, "runDir", dir.toString(),
                "keepCheckpoints", 2));
        RunCheckpoints checkpoints = new RunCheckpoints(config);
        MemoryPool pool = new MemoryPool("bench", MemoryPool.UNLIMITED);
        ZeroStage zero = ZeroStage.of(0);
        double[] sync = new double[rounds], stall = new double[rounds], total = new double[rounds];
        Path saved = dir.resolve("checkpoints");
        try (ParameterSet params = zero.allocate(Gpt.declare(config.model()), pool, DType.F32, 1)) {
            ZeroStage.Update update = zero.build(params, null, pool, AdamWOptimizer.Settings.gpt(), ZeroStage.Options.defaults());
            try (OptimizerState optimizer = OptimizerState.of(update, params, pool);
                 CheckpointSaver synchronous = new CheckpointSaver(checkpoints, RunCheckpoints.Place.SINGLE, false);
                 CheckpointSaver asynchronous = new CheckpointSaver(checkpoints, RunCheckpoints.Place.SINGLE, true)) {
                update.initialize(config.seed());
                TrainState state = new TrainState();
                for (int r = 0; r < rounds; r++) {
                    for (int k = 0; k < 2; k++) {
                        boolean async = (r + k) % 2 == 1;   // alternate which goes first
                        state.completeStep(0, 0, 0);
                        long start = System.nanoTime();
                        if (async) {
                            stall[r] = asynchronous.save(true, saved, params, optimizer, state, null) / 1e6;
                            asynchronous.finish();
                            total[r] = (System.nanoTime() - start) / 1e6;
                        } else {
                            sync[r] = synchronous.save(true, saved, params, optimizer, state, null) / 1e6;
                        }
                    }
                }
            }
        }
        long bytes = 3 * config.model().parameterCount() * DType.F32.byteSize();
        return new Result(preset, bytes, rounds, median(sync), median(stall), median(total));
    }

    private static double median(double[] values) {
        double[] sorted = values.clone();
        Arrays.sort(sorted);
        int n = sorted.length;
        return n % 2 == 1 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
    }
}
