package dev.shardwise.cli.bench;

import dev.shardwise.plan.Candidates;
import dev.shardwise.train.ConfigLoader;
import dev.shardwise.train.Trainer;

import java.io.IOException;
import java.io.OutputStream;
import java.io.PrintStream;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * Trains one layout for a few steps with the real trainer (ranks as threads, bundled corpus, a temporary run
 * directory) and reads what its metrics measured, for the benchmarks that compare layouts: the median step (the first,
 * which compiles, is not counted), its exposed communication and the leader's pool peak.
 *
 * @param stepSeconds      median step time, steps 2..n
 * @param exposedSeconds   median of the step's exposed gradient reduction plus pipeline waits
 * @param peakBytes        the leader's largest pool peak over the timed steps, the final evaluation left out
 * @param rankPeakBytes    the largest pool peak of any rank over the whole run (the final evaluation included)
 * @param tokensPerStep    tokens one step trains on
 */
record LayoutRun(double stepSeconds, double exposedSeconds, long peakBytes, long rankPeakBytes, long tokensPerStep) {

    /** Tokens per second of the median step. */
    double tokensPerSecond() {
        return tokensPerStep / stepSeconds;
    }

    /**
     * Trains {@code preset} under {@code choice} for {@code steps} steps of {@code globalBatch} sequences of
     * {@code seqLen} tokens.
     *
     * @throws IllegalArgumentException if steps is below 2 or the layout does not divide the global batch
     */
    static LayoutRun train(String preset, Candidates.Choice choice, int globalBatch, int seqLen, int steps) {
        if (steps < 2) throw new IllegalArgumentException("steps=" + steps + " must be at least 2 (the first step is not counted)");
        Map<String, Object> layoutKeys = ConfigLoader.layoutKeys(choice.layout(), choice.schedule(), globalBatch);
        Path runDir;
        try {
            runDir = Files.createTempDirectory("shardwise-bench-layout-");
        } catch (IOException e) {
            throw new UncheckedIOException("cannot create a temporary run directory", e);
        }
        Map<String, Object> flags = new LinkedHashMap<>();
        flags.put("preset", preset);
        flags.put("steps", steps);
        flags.put("seqLen", seqLen);
        flags.putAll(layoutKeys);
        flags.put("evalEvery", 0);
        flags.put("evalBatches", 1);
        flags.put("saveCheckpoints", false);
        flags.put("runDir", runDir.toString());
        try (PrintStream quiet = new PrintStream(OutputStream.nullOutputStream())) {
            Trainer.Result result = new Trainer(ConfigLoader.resolve(Map.of(), "bench", flags), quiet).run(false);
            long rankPeak = result.rankPeakBytes().stream().mapToLong(Long::longValue).max().orElse(result.peakMemoryBytes());
            List<String> lines = Files.readAllLines(runDir.resolve("metrics.jsonl"));
            int timed = lines.size() - 1;
            double[] step = new double[timed], exposed = new double[timed];
            long peak = 0;
            for (int i = 1; i < lines.size(); i++) {
                String line = lines.get(i);
                step[i - 1] = number(line, "step_ms") / 1e3;
                exposed[i - 1] = (number(line, "grads_reduce_ms") + number(line, "pipeline_wait_ms")) / 1e3;
                // The last step's peak includes the final evaluation; count it only when it is the one timed step.
                if (i < lines.size() - 1 || timed == 1) peak = Math.max(peak, (long) number(line, "mem_peak_bytes"));
            }
            return new LayoutRun(median(step), median(exposed), peak, rankPeak, (long) globalBatch * seqLen);
        } catch (IOException e) {
            throw new UncheckedIOException("cannot read the metrics of " + runDir, e);
        } finally {
            deleteQuietly(runDir);
        }
    }

    /** The number after {@code "key":} in one JSON line of metrics.jsonl. */
    private static double number(String line, String key) {
        Matcher m = Pattern.compile("\"" + key + "\":(-?[0-9.eE+-]+)").matcher(line);
        if (!m.find()) throw new IllegalStateException("metrics line has no " + key + ": " + line);
        return Double.parseDouble(m.group(1));
    }

    private static double median(double[] values) {
        double[] sorted = values.clone();
        Arrays.sort(sorted);
        return sorted[sorted.length / 2];
    }

    private static void deleteQuietly(Path dir) {
        try (var paths = Files.walk(dir)) {
            paths.sorted(Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
        } catch (IOException ignored) {
            // a leftover temporary directory is harmless
        }
    }
}
