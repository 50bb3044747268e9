package dev.shardwise.plan;

import dev.shardwise.model.Recompute;
import dev.shardwise.parallel.ParallelLayout;
import dev.shardwise.parallel.pipeline.ScheduleKind;

import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * One published training run (a row of {@code calibration_runs.csv} or {@code heldout_runs.csv}, both shipped in
 * this jar): its model, cluster, layout and measured step time.
 *
 * @param source           paper and table, e.g. NAR21-T1
 * @param model            the model, named after the row
 * @param gpus             devices the run used
 * @param clusterPreset    the {@code clusters.yaml} preset whose nodes it ran on ({@code a100x8}, Selene's DGX A100
 *                         nodes, unless the row's {@code cluster} column names another)
 * @param globalBatch      B
 * @param layout           the row's layout
 * @param schedule         1F1B, or interleaved when the row says vN
 * @param publishedSeconds the step time the row implies: its iteration time where printed, else its TFLOP/s
 *                         (hardware FLOPs, 96·B·s·l·h²·(1 + s/6h + V/16lh) with full recompute) or its MFU (model
 *                         FLOPs, 72·...) over an A100's 312 TFLOP/s
 */
public record PublishedRun(String source, ModelSpec model, int gpus, String clusterPreset, long globalBatch,
                           ParallelLayout layout, ScheduleKind schedule, double publishedSeconds) {
    private static final double A100_PEAK = 312e12;   // A100 fp16 dense peak, as both papers count it
    private static final Pattern ITER = Pattern.compile("iter ([0-9.]+)s(?!\\(inf\\))");

    /** The cluster of the row: nodes of its preset (by default A100-80GB DGX nodes: 8 per node, NVSwitch, 8x200 Gb/s IB), as many as it used. */
    public ClusterSpec cluster() {
        ClusterSpec nodes = Specs.cluster(clusterPreset);
        return nodes.withNodes(Math.ceilDiv(gpus, nodes.devicesPerNode()));
    }

    /** Rows of {@code calibration_runs.csv} ({@code heldOut} false) or {@code heldout_runs.csv} shipped in this jar. */
    public static List<PublishedRun> shipped(boolean heldOut) {
        String name = heldOut ? "heldout_runs.csv" : "calibration_runs.csv";
        try (InputStream in = PublishedRun.class.getResourceAsStream(name)) {
            if (in == null) throw new IllegalStateException(name + " is missing from the plan jar; rebuild it");
            return parse(new String(in.readAllBytes(), StandardCharsets.UTF_8));
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    /**
     * Parses the CSV text (header as the published README gives it, optionally with a {@code cluster} column naming
     * a preset and a {@code zero} column giving the ZeRO stage, before {@code notes}).
     *
     * @throws IllegalArgumentException naming the line
     */
    public static List<PublishedRun> parse(String csv) {
        List<String> lines = csv.lines().filter(l -> !l.isBlank()).toList();
        List<String> header = Arrays.asList(lines.getFirst().split(","));
        List<PublishedRun> rows = new ArrayList<>();
        for (int i = 1; i < lines.size(); i++) {
            String[] cells = lines.get(i).split(",", -1);
            try {
                rows.add(row(header, cells));
            } catch (RuntimeException e) {
                throw new IllegalArgumentException("published runs line " + (i + 1) + ": " + e.getMessage(), e);
            }
        }
        return rows;
    }

    private static PublishedRun row(List<String> header, String[] cells) {
        java.util.function.Function<String, String> col = name -> header.contains(name) ? cells[header.indexOf(name)].strip() : "";
        int layers = Integer.parseInt(col.apply("layers")), hidden = Integer.parseInt(col.apply("hidden"));
        int heads = Integer.parseInt(col.apply("heads")), seq = Integer.parseInt(col.apply("seq_len"));
        int vocab = Integer.parseInt(col.apply("vocab"));
        ModelSpec model = new ModelSpec(col.apply("model"), layers, hidden, heads, 4 * hidden, vocab, seq);
        long batch = Long.parseLong(col.apply("global_batch"));
        int gpus = Integer.parseInt(col.apply("gpus"));
        String interleaved = col.apply("interleaved");
        int vpp = interleaved.startsWith("v") ? Integer.parseInt(interleaved.substring(1)) : 1;
        ParallelLayout layout = new ParallelLayout(Integer.parseInt(col.apply("dp")), Integer.parseInt(col.apply("tp")),
                Integer.parseInt(col.apply("pp")), vpp, 1, col.apply("seq_parallel").equals("y"),
                col.apply("zero").isEmpty() ? 0 : Integer.parseInt(col.apply("zero")),
                Recompute.parse(col.apply("recompute")), Integer.parseInt(col.apply("micro_batch")));
        String notes = String.join(",", Arrays.copyOfRange(cells, header.indexOf("notes"), cells.length));
        double s = seq, h = hidden, l = layers;
        double formula = batch * s * l * h * h * (1 + s / (6 * h) + vocab / (16 * l * h));
        Matcher iter = ITER.matcher(notes);
        double seconds;
        if (iter.find()) {
            seconds = Double.parseDouble(iter.group(1));
        } else if (!col.apply("tflops_per_gpu").isEmpty()) {
            if (layout.recompute() != Recompute.FULL) throw new IllegalArgumentException("TFLOP/s rows must use full recompute");
            seconds = 96 * formula / (Double.parseDouble(col.apply("tflops_per_gpu")) * 1e12 * gpus);
        } else if (notes.contains("MFU") && !col.apply("pct_peak").isEmpty()) {
            seconds = 72 * formula / (Double.parseDouble(col.apply("pct_peak")) / 100 * A100_PEAK * gpus);
        } else {
            throw new IllegalArgumentException("row gives neither an iteration time, TFLOP/s nor MFU");
        }
        String cluster = col.apply("cluster").isEmpty() ? "a100x8" : col.apply("cluster");
        return new PublishedRun(col.apply("source"), model, gpus, cluster, batch, layout, ScheduleKind.defaultFor(vpp), seconds);
    }

    /** A one-line label: source, model, layout. */
    public String label() {
        return source + " " + model.name() + " " + Candidates.format(layout, schedule);
    }
}
