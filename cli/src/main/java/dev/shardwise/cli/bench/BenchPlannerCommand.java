package dev.shardwise.cli.bench;

import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.model.ModelConfig;
import dev.shardwise.parallel.ParallelLayout;
import dev.shardwise.plan.Candidates;
import dev.shardwise.plan.local.LocalCostModel;
import dev.shardwise.plan.local.LocalEstimate;
import dev.shardwise.plan.local.LocalProfile;
import dev.shardwise.plan.local.LocalProfiler;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import java.util.stream.Collectors;

/**
 * {@code shardwise bench planner}: the local cost model checked against reality. For each layout it predicts the step
 * time and the leader's peak memory from a profile of the model's pieces ({@link LocalProfiler}, {@link LocalCostModel}),
 * then trains the layout for a few steps with the real trainer and reads the measured median step and pool peak from
 * its metrics. It works in rounds, each profiling again and training every layout, and each layout keeps its fastest
 * prediction and its fastest measured round (a shared machine's noise only ever slows a run down, and profiling in
 * every round samples the machine's slow and fast spells as training does); it prints both, the errors, and the Spearman rank correlation of predicted against measured
 * step times.
 */
@Command(name = "planner", mixinStandardHelpOptions = true,
        description = {"The planner's local cost model against measured training: predicted and measured step time and peak "
                + "memory per layout, their errors and the rank correlation.",
                "Layouts are written as for plan --explain (dp defaults to 1): e.g. \"dp=2,mb=4,zero=1\" or \"pp=2,mb=2,schedule=zb-h1\"."})
public final class BenchPlannerCommand implements Runnable {
    /**
     * Layouts that fit 2 cores (1 or 2 ranks) at global batch 8: recompute, dp with each ZeRO stage, tp with and
     * without sequence parallelism, pp with each schedule.
     */
    static final List<String> DEFAULT_LAYOUTS = List.of("mb=4", "mb=4,recompute=selective", "mb=4,recompute=full", "mb=8",
            "dp=2,mb=4", "dp=2,mb=4,zero=1", "dp=2,mb=4,zero=2", "dp=2,mb=4,zero=3", "dp=2,mb=2",
            "tp=2,mb=4", "tp=2,mb=4,sp=true", "tp=2,mb=2,recompute=full",
            "pp=2,mb=2", "pp=2,mb=2,schedule=gpipe", "pp=2,mb=2,schedule=zb-h1", "pp=2,mb=2,recompute=full");

    @Option(names = "--preset", split = ",", defaultValue = "tiny", description = "Model presets (default: ${DEFAULT-VALUE}).")
    List<String> presets;

    @Option(names = "--layouts", split = ";", description = "Layouts, separated by ';' (default: 16 layouts of 1 and 2 ranks).")
    List<String> layouts;

    @Option(names = "--rounds", defaultValue = "1", description = "Training rounds over all layouts; each layout keeps its fastest "
            + "round's median step (default: ${DEFAULT-VALUE}).")
    int rounds;

    @Mixin
    LayoutRunOptions run;

    @Option(names = "--repeats", defaultValue = "5", description = "Timed repetitions of each profiled piece (default: ${DEFAULT-VALUE}).")
    int repeats;

    @Option(names = "--json", description = "One JSON object per layout instead of a table.")
    boolean json;

    /** One layout's prediction beside what training measured. */
    record Row(String preset, String layout, LocalEstimate predicted, double measuredSeconds, long measuredPeakBytes) {
        double timeError() {
            return predicted.stepSeconds() / measuredSeconds - 1;
        }

        double memoryError() {
            return (double) predicted.peakBytes(0) / measuredPeakBytes - 1;
        }
    }

    @Override
    public void run() {
        if (run.steps < 2) throw new IllegalArgumentException("--steps=" + run.steps + " must be at least 2 (the first step is not counted)");
        if (rounds < 1) throw new IllegalArgumentException("--rounds=" + rounds + " must be at least 1");
        BenchOutput out = new BenchOutput(System.out, json);
        out.info("planner check on " + dev.shardwise.core.machine.CpuModel.read().describe() + ", "
                + Runtime.getRuntime().availableProcessors() + " cores; global batch " + run.globalBatch + ", seq " + run.seqLen);
        List<Row> all = new ArrayList<>();
        for (String preset : presets) {
            ModelConfig config = ModelConfig.preset(preset);
            List<Candidates.Choice> choices = (layouts == null ? DEFAULT_LAYOUTS : layouts).stream()
                    .map(text -> Candidates.parse(text, 0)).toList();
            Map<List<Integer>, Set<LocalProfile.Split>> splits = new TreeMap<>(Comparator.comparing(List::toString));
            for (Candidates.Choice c : choices) {
                splits.computeIfAbsent(List.of(c.layout().worldSize(), c.layout().microBatch()), k -> new HashSet<>())
                        .add(LocalProfile.Split.of(c.layout()));
            }
            LocalEstimate[] predicted = new LocalEstimate[choices.size()];
            double[] seconds = new double[choices.size()];
            Arrays.fill(seconds, Double.POSITIVE_INFINITY);
            long[] peaks = new long[choices.size()];
            for (int r = 0; r < rounds; r++) {   // each round profiles and trains again: both sample the machine's spells alike
                String round = "round " + (r + 1) + "/" + rounds + ": ";
                Map<List<Integer>, LocalProfile> profiles = new HashMap<>();
                splits.forEach((k, wanted) -> {
                    out.info(round + "profiling " + preset + " on " + k.get(0) + " rank(s) at micro-batch " + k.get(1) + " ("
                            + wanted.stream().sorted().map(LocalProfile.Split::toString).collect(Collectors.joining("; ")) + ")");
                    profiles.put(k, LocalProfiler.profile(config, k.get(0), k.get(1), run.seqLen, repeats, wanted));
                });
                for (int i = 0; i < choices.size(); i++) {
                    Candidates.Choice c = choices.get(i);
                    ParallelLayout l = c.layout();
                    LocalEstimate e = new LocalCostModel(config, profiles.get(List.of(l.worldSize(), l.microBatch())))
                            .estimate(l, c.schedule(), run.globalBatch);
                    if (predicted[i] == null || e.stepSeconds() < predicted[i].stepSeconds()) predicted[i] = e;
                    out.info(round + "training " + preset + " " + Candidates.format(l, c.schedule()) + " for " + run.steps + " steps");
                    LayoutRun measured = run.train(preset, c);
                    seconds[i] = Math.min(seconds[i], measured.stepSeconds());
                    peaks[i] = Math.max(peaks[i], measured.peakBytes());
                }
            }
            List<Row> rows = new ArrayList<>();
            for (int i = 0; i < choices.size(); i++) {
                Candidates.Choice c = choices.get(i);
                rows.add(new Row(preset, Candidates.format(c.layout(), c.schedule()), predicted[i], seconds[i], peaks[i]));
            }
            print(out, rows);
            all.addAll(rows);
        }
        if (presets.size() > 1) summary(out, "all presets", all);
    }

    /** One row per layout: predicted step seconds beside the measured ones (ratio = predicted / measured), memory in the note. */
    private void print(BenchOutput out, List<Row> rows) {
        for (Row r : rows) {
            LocalEstimate e = r.predicted();
            out.row(new BenchRow("planner", r.preset() + " " + r.layout(), 1e3 * e.stepSeconds(), "ms/step", "measured", 1e3 * r.measuredSeconds(),
                    Double.NaN, String.format(Locale.ROOT, "stage-0 peak predicted %s, measured %s (%+.1f%%)",
                    MemoryPool.formatBytes(e.peakBytes(0)), MemoryPool.formatBytes(r.measuredPeakBytes()), 100 * r.memoryError())));
        }
        summary(out, rows.getFirst().preset(), rows);
    }

    private static void summary(BenchOutput out, String what, List<Row> rows) {
        double meanTime = 0, worstTime = 0, meanMemory = 0, worstMemory = 0;
        int within = 0;
        for (Row r : rows) {
            meanTime += Math.abs(r.timeError()) / rows.size();
            worstTime = Math.max(worstTime, Math.abs(r.timeError()));
            meanMemory += Math.abs(r.memoryError()) / rows.size();
            worstMemory = Math.max(worstMemory, Math.abs(r.memoryError()));
            if (Math.abs(r.timeError()) <= 0.15) within++;
        }
        double[] predicted = rows.stream().mapToDouble(r -> r.predicted().stepSeconds()).toArray();
        double[] measured = rows.stream().mapToDouble(Row::measuredSeconds).toArray();
        out.info(String.format(Locale.ROOT, "%s: step time |error| mean %.1f%%, worst %.1f%%, %d of %d layouts within 15%%; "
                        + "Spearman %.2f; peak memory |error| mean %.1f%%, worst %.1f%%", what, 100 * meanTime, 100 * worstTime,
                within, rows.size(), spearman(predicted, measured), 100 * meanMemory, 100 * worstMemory));
    }

    /** Spearman's rank correlation: Pearson's of the ranks (ties share their mean rank). */
    static double spearman(double[] a, double[] b) {
        double[] ra = ranks(a), rb = ranks(b);
        double ma = Arrays.stream(ra).average().orElse(0), mb = Arrays.stream(rb).average().orElse(0);
        double cov = 0, va = 0, vb = 0;
        for (int i = 0; i < ra.length; i++) {
            cov += (ra[i] - ma) * (rb[i] - mb);
            va += (ra[i] - ma) * (ra[i] - ma);
            vb += (rb[i] - mb) * (rb[i] - mb);
        }
        return va == 0 || vb == 0 ? Double.NaN : cov / Math.sqrt(va * vb);
    }

    private static double[] ranks(double[] values) {
        double[] ranks = new double[values.length];
        for (int i = 0; i < values.length; i++) {
            int below = 0, equal = 0;
            for (double v : values) {
                if (v < values[i]) below++;
                else if (v == values[i]) equal++;
            }
            ranks[i] = below + (equal + 1) / 2.0;
        }
        return ranks;
    }
}
