package dev.shardwise.infer.moefy;

import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.memory.StepArena;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;
import dev.shardwise.data.BatchSampler;
import dev.shardwise.data.TokenDataset;
import dev.shardwise.model.Gpt;
import dev.shardwise.train.ConfigLoader;
import dev.shardwise.train.TrainConfig;
import dev.shardwise.train.TrainingData;

import java.io.IOException;
import java.io.PrintStream;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Map;

/**
 * Validation loss of a {@link MoefiedModel} against the fraction of FFN compute it spends (MoEfication, Zhang et
 * al. 2022): the dense model once, then K = each requested count of its E experts per token, on the run's
 * validation tokens as training evaluates them (the first evalBatches global batches, in file order, each run a
 * micro-batch at a time). Writes {@code moefy.png} (loss against K/E, the dense loss as a reference line),
 * {@code moefy.tsv} and {@code moefy.json} of the points.
 */
public final class MoefyEvaluation {
    /**
     * One measured point: K of E experts, K/E of the FFN's multiply-adds, the mean validation loss (nats/token) with
     * the routers' choice, and with the ground-truth choice ({@link OracleExpertFeedForward}; NaN if not measured).
     */
    public record Point(int active, int experts, double loss, double oracleLoss) {
        public double computeFraction() { return (double) active / experts; }
    }

    /** The dense loss and the points, in the order asked. */
    public record Result(double denseLoss, List<Point> points, int evalBatches) { }

    private MoefyEvaluation() { }

    /**
     * Evaluates {@code moefied} at each K of {@code actives} (null: 1..E) over {@code evalBatches} validation batches
     * (0: the run's evalBatches), with {@code oracle} also under ground-truth selection, and writes the plot and tables
     * into {@code outDir}.
     *
     * @throws IOException              if the run's config or data cannot be read, or the files not written
     * @throws IllegalArgumentException if a K is outside [1, E]
     */
    public static Result run(MoefiedModel moefied, int[] actives, int evalBatches, boolean oracle, Path outDir, MemoryPool pool,
                             PrintStream log)
            throws IOException {
        int e = moefied.experts();
        if (actives == null) {
            actives = new int[e];
            for (int k = 1; k <= e; k++) actives[k - 1] = k;
        }
        for (int k : actives) {
            if (k < 1 || k > e) throw new IllegalArgumentException("--active " + k + " must be between 1 and the " + e + " experts");
        }
        Path configFile = moefied.configFile();
        TrainConfig train = ConfigLoader.resolve(ConfigLoader.readYaml(configFile), configFile.toString(), Map.of());
        int batches = evalBatches > 0 ? evalBatches : train.evalBatches();
        List<Point> points = new ArrayList<>();
        double dense;
        try (TrainingData data = TrainingData.open(train.data(), moefied.model().config().vocabSize(), log)) {
            moefied.useActive(0);
            long t0 = System.nanoTime();
            dense = loss(moefied.model(), data.val(), train, batches, pool);
            log.printf(Locale.ROOT, "  dense         FFN compute 100.0%%  val loss %.4f            (%.1f s)%n", dense,
                    (System.nanoTime() - t0) / 1e9);
            try {
                for (int k : actives) {
                    SparseExpertFeedForward sparse = moefied.useActive(k);
                    long start = System.nanoTime();
                    double routed = loss(moefied.model(), data.val(), train, batches, pool);
                    double seconds = (System.nanoTime() - start) / 1e9, truth = Double.NaN;
                    if (oracle) {
                        moefied.useOracle(k);
                        truth = loss(moefied.model(), data.val(), train, batches, pool);
                    }
                    Point p = new Point(k, e, routed, truth);
                    points.add(p);
                    log.printf(Locale.ROOT, "  K = %2d of %2d  FFN compute %5.1f%%  val loss %.4f (%+.4f)  (%.1f s, %.2f s in the "
                                    + "FFNs)%s%n", k, e, 100 * p.computeFraction(), p.loss(), p.loss() - dense, seconds, sparse.seconds(),
                            oracle ? String.format(Locale.ROOT, "  ground-truth experts %.4f (%+.4f)", truth, truth - dense) : "");
                }
            } finally {
                moefied.useActive(0);
            }
        }
        int rows = train.batchSize() * train.seqLen();
        FfnTiming.Medians t = FfnTiming.measure(moefied, actives, rows, 7, pool);
        StringBuilder line = new StringBuilder(String.format(Locale.ROOT, "  block 0's FFN on %d rows, median of 7 interleaved "
                + "rounds: dense %.2f ms", rows, t.denseMs()));
        for (int i = 0; i < actives.length; i++) {
            line.append(String.format(Locale.ROOT, ", K=%d %.2f ms (%.2fx)", actives[i], t.sparseMs()[i], t.sparseMs()[i] / t.denseMs()));
        }
        log.println(line);
        Result result = new Result(dense, points, batches);
        Files.createDirectories(outDir);
        FfnComputePlot.write(outDir.resolve("moefy.png"), "MoEfication: " + e + " experts per block, validation loss", result);
        writeAtomically(outDir.resolve("moefy.tsv"), tsv(result));
        writeAtomically(outDir.resolve("moefy.json"), json(result));
        log.printf("wrote %s, moefy.tsv and moefy.json%n", outDir.resolve("moefy.png"));
        return result;
    }

    /** Mean validation loss as Trainer.evaluate computes it on one rank. */
    static double loss(Gpt model, TokenDataset val, TrainConfig train, int evalBatches, MemoryPool pool) {
        int t = train.seqLen(), row = t + 1, micro = train.batchSize();
        var batches = BatchSampler.sequential(val, train.globalMicroBatch() * train.gradAccumulation(), t);
        double sum = 0;
        int count = 0;
        try (StepArena arena = new StepArena(pool)) {
            while (batches.hasNext() && count < evalBatches) {
                int[] values = batches.next();
                int rows = values.length / row;
                double rowWeighted = 0;
                for (int first = 0; first < rows; first += micro) {
                    int n = Math.min(micro, rows - first);
                    Tensor tokens = arena.allocate(MemoryCategory.BUFFERS, DType.I32, n, t);
                    Tensor targets = arena.allocate(MemoryCategory.BUFFERS, DType.I32, n, t);
                    for (int i = 0; i < n; i++) {
                        int at = (first + i) * row;
                        MemorySegment.copy(values, at, tokens.segment(), ValueLayout.JAVA_INT, tokens.byteOffset() + 4L * i * t, t);
                        MemorySegment.copy(values, at + 1, targets.segment(), ValueLayout.JAVA_INT, targets.byteOffset() + 4L * i * t, t);
                    }
                    double loss = model.evaluate(arena, tokens, targets);
                    rowWeighted += n == rows ? loss : loss * n;
                    arena.reset();
                }
                sum += rows <= micro ? rowWeighted : rowWeighted / rows;
                count++;
            }
        }
        return count == 0 ? Double.NaN : sum / count;
    }

    static String tsv(Result r) {
        StringBuilder s = new StringBuilder("active\texperts\tffn_compute\tval_loss\toracle_val_loss\tdense_val_loss\n");
        for (Point p : r.points()) {
            s.append(String.format(Locale.ROOT, "%d\t%d\t%.6f\t%s\t%s\t%s%n", p.active(), p.experts(), p.computeFraction(),
                    Double.toString(p.loss()), Double.toString(p.oracleLoss()), Double.toString(r.denseLoss())));
        }
        return s.toString();
    }

    static String json(Result r) {
        StringBuilder s = new StringBuilder("{\"dense_val_loss\": ").append(r.denseLoss())
                .append(", \"eval_batches\": ").append(r.evalBatches()).append(", \"points\": [");
        for (int i = 0; i < r.points().size(); i++) {
            Point p = r.points().get(i);
            s.append(i == 0 ? "" : ", ").append(String.format(Locale.ROOT, "{\"active\": %d, \"experts\": %d, \"ffn_compute\": %s, "
                    + "\"val_loss\": %s, \"oracle_val_loss\": %s}", p.active(), p.experts(), p.computeFraction(), p.loss(),
                    Double.isNaN(p.oracleLoss()) ? "null" : Double.toString(p.oracleLoss())));
        }
        return s.append("]}\n").toString();
    }

    private static void writeAtomically(Path file, String text) throws IOException {
        Path tmp = file.resolveSibling(file.getFileName() + ".tmp");
        Files.writeString(tmp, text, StandardCharsets.UTF_8);
        Files.move(tmp, file, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
    }
}
