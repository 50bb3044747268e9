package dev.shardwise.cli;

import dev.shardwise.plan.ClusterSpec;
import dev.shardwise.plan.CostModel;
import dev.shardwise.plan.CostParameters;
import dev.shardwise.plan.Estimate;
import dev.shardwise.plan.MemoryBreakdown;
import dev.shardwise.plan.ModelSpec;
import dev.shardwise.plan.Planner;
import dev.shardwise.plan.PublishedRun;
import dev.shardwise.plan.Specs;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

import java.io.PrintWriter;
import java.util.List;
import java.util.Locale;

/**
 * {@code shardwise plan}: the best layouts of a model on a GPU cluster for a global batch, with predicted step
 * time, throughput, MFU and memory per device; or, with {@code --explain}, one layout's breakdown. Predictions come
 * from {@link CostModel} with {@link CostParameters#FITTED} (calibrated on published Megatron runs).
 */
@Command(name = "plan", mixinStandardHelpOptions = true, sortOptions = false,
        description = {"Choose the parallel layout of a model on a GPU cluster: rank layouts (dp, tp, pp, vpp, micro-batch, ZeRO, "
                + "recompute, sequence parallelism) that fit the device memory by predicted step time, or score one with --explain.",
                "Predictions: cost model calibrated on published Megatron-LM runs (A100); see plan's calibration_runs.csv."})
public final class PlanCommand implements Runnable {
    @CommandLine.Spec
    CommandLine.Model.CommandSpec spec;

    @Option(names = "--model", paramLabel = "M",
            description = "Model preset (gpt3-175b, gpt-1t, gpt-145b, gpt-22b, ...) or a YAML file with layers, hidden, heads, vocab, seq [, ffn_hidden, kv_heads (grouped-query attention), experts, top_k, moe_every (mixture of experts)].")
    String model;

    @Option(names = "--cluster", paramLabel = "C",
            description = "Cluster preset (a100x3072, a100x8, h100x1024, h200x512, ...) or a YAML file with device, devices_per_node, nodes.")
    String cluster;

    @Option(names = "--global-batch", paramLabel = "B", description = "Sequences per optimizer step.")
    Long globalBatch;

    @Option(names = "--seq", paramLabel = "S", description = "Sequence length (default: the model's).")
    Integer seq;

    @Option(names = "--explain", paramLabel = "LAYOUT",
            description = "Score one layout, e.g. \"tp=8,pp=8,dp=24,vpp=2,mb=2,recompute=full,sp=false,zero=0\" (dp defaults to devices/(tp·pp)).")
    String explain;

    @Option(names = "--top", paramLabel = "N", defaultValue = "10", description = "Layouts to list (default ${DEFAULT-VALUE}).")
    int top;

    @Option(names = "--json", description = "One JSON object per layout instead of a table.")
    boolean json;

    @Option(names = "--calibration", description = "Instead of planning: each published run shipped with the planner "
            + "(calibration and held-out rows), its step time beside the prediction for its own layout.")
    boolean calibration;

    @Override
    public void run() {
        if (calibration) {
            calibration(spec.commandLine().getOut());
            return;
        }
        if (model == null || cluster == null || globalBatch == null) {
            throw new IllegalArgumentException("plan needs --model, --cluster and --global-batch (or --calibration); "
                    + "e.g. ./shardwise plan --model gpt3-175b --cluster a100x3072 --global-batch 1536");
        }
        if (globalBatch < 1) throw new IllegalArgumentException("--global-batch=" + globalBatch + " must be at least 1");
        if (top < 1) throw new IllegalArgumentException("--top=" + top + " must be at least 1");
        ModelSpec m = Specs.model(model);
        if (seq != null) m = m.withSeq(seq);
        ClusterSpec c = Specs.cluster(cluster);
        Planner planner = new Planner(new CostModel(m, c, CostParameters.FITTED));
        PrintWriter out = spec.commandLine().getOut();
        long start = System.nanoTime();
        List<Estimate> rows = explain != null ? List.of(planner.explain(explain, globalBatch)) : planner.search(globalBatch, top);
        double seconds = (System.nanoTime() - start) / 1e9;
        if (json) {
            for (Estimate e : rows) out.println(json(e));
            out.flush();
            return;
        }
        out.printf(Locale.ROOT, "model %s (%.1fB parameters, L=%d h=%d a=%d%s s=%d V=%d%s) on %s: %d x %s, %d per node; global batch %d%n",
                m.name(), m.parameters() / 1e9, m.layers(), m.hidden(), m.heads(),
                m.kvHeads() == m.heads() ? "" : " kv=" + m.kvHeads(), m.seq(), m.vocab(),
                m.isMoe() ? String.format(Locale.ROOT, "; %d experts, top-%d, every %d block(s): %.1fB active", m.experts(), m.topK(),
                        m.moeEvery(), m.activeParameters() / 1e9) : "",
                c.name(), c.devices(), c.device().name(), c.devicesPerNode(), globalBatch);
        if (explain != null) {
            explainOne(out, rows.getFirst());
            out.flush();
            return;
        }
        if (rows.isEmpty()) {
            out.println("no layout of all " + c.devices() + " devices fits: dp = devices/(tp·pp) must divide the global batch "
                    + globalBatch + " and each device's share must fit its " + Math.round(c.device().memoryBytes() / 1e9)
                    + " GB; use a global batch with more factors of 2, a cluster file with fewer or more nodes, or a device with more memory");
            out.flush();
            return;
        }
        out.printf(Locale.ROOT, "%-4s %-78s %8s %9s %9s %6s %8s  %s%n", "rank", "layout", "step s", "TFLOP/s", "hw TF/s", "MFU", "mem GB",
                "vs best");
        Estimate best = rows.getFirst();
        for (int i = 0; i < rows.size(); i++) {
            Estimate e = rows.get(i);
            out.printf(Locale.ROOT, "%-4d %-78s %8.2f %9.1f %9.1f %5.1f%% %8.1f  %s%n", i + 1, e.layoutText(), e.stepSeconds(),
                    e.tflopsPerDeviceModel(), e.tflopsPerDeviceHardware(), 100 * e.mfu(), e.memory().total() / 1e9,
                    i == 0 ? "best" : whyLost(e, best));
        }
        out.printf(Locale.ROOT, "best: %s. %s (searched in %.2f s; --explain \"%s\" for its breakdown)%n", best.layoutText(),
                whyBest(best), seconds, best.layoutText());
        out.flush();
    }

    /** Published rows: step time as published beside the prediction for the row's own layout, and the errors. */
    private static void calibration(PrintWriter out) {
        // The published runs of 2021-22 reduced gradients after the pipeline flush.
        CostParameters asPublished = CostParameters.FITTED.withOverlap(false);
        for (boolean heldOut : new boolean[] {false, true}) {
            out.println(heldOut ? "held-out rows (heldout_runs.csv, not used in the fit):" : "calibration rows (calibration_runs.csv, fitted on):");
            double sum = 0, worst = 0;
            List<PublishedRun> rows = PublishedRun.shipped(heldOut);
            for (PublishedRun r : rows) {
                Estimate e = new CostModel(r.model(), r.cluster(), asPublished).estimate(r.layout(), r.schedule(), r.globalBatch());
                double error = r.publishedSeconds() / e.stepSeconds() - 1;
                sum += Math.abs(error);
                worst = Math.max(worst, Math.abs(error));
                out.printf(Locale.ROOT, "  %-80s published %7.2f s  predicted %7.2f s  throughput %+5.1f%%%n", r.label(),
                        r.publishedSeconds(), e.stepSeconds(), 100 * error);
            }
            out.printf(Locale.ROOT, "  mean |error| %.1f%%, worst %.1f%% over %d rows%n", 100 * sum / rows.size(), 100 * worst, rows.size());
        }
        out.flush();
    }

    private static void explainOne(PrintWriter out, Estimate e) {
        MemoryBreakdown mem = e.memory();
        out.printf(Locale.ROOT, "layout %s, schedule %s, %d devices%n", e.layoutText(), e.schedule(), e.devices());
        out.printf(Locale.ROOT, "step %.3f s: %.1f TFLOP/s per device (model), %.1f with recompute, MFU %.1f%%%n", e.stepSeconds(),
                e.tflopsPerDeviceModel(), e.tflopsPerDeviceHardware(), 100 * e.mfu());
        out.printf(Locale.ROOT, "  slowest stage: compute %.3f s, tp collectives %.3f s, ep all-to-all %.3f s, pipeline sends %.3f s,"
                + " bubble %.3f s, dp reduction exposed %.3f s, optimizer %.3f s%n", e.computeSeconds(), e.tpCommSeconds(),
                e.epCommSeconds(), e.p2pSeconds(),
                e.bubbleSeconds(), e.dpSeconds(), e.optimizerSeconds());
        out.printf(Locale.ROOT, "memory per device (stage %d): %.1f GB of %.1f GB%s: weights %.1f, gradients %.1f, optimizer %.1f,"
                + " activations %.1f, buffers and reserve %.1f%n", mem.stage(), mem.total() / 1e9, e.memoryLimit() / 1e9,
                e.fits() ? "" : " (DOES NOT FIT)", mem.parameters() / 1e9, mem.gradients() / 1e9, mem.optimizer() / 1e9,
                mem.activations() / 1e9, mem.buffers() / 1e9);
    }

    /** The component where {@code e} loses most time against {@code best}. */
    private static String whyLost(Estimate e, Estimate best) {
        String[] names = {"compute (recompute or GEMM shapes)", "tp collectives", "ep all-to-all", "pipeline sends", "bubble",
                "dp reduction", "optimizer"};
        double[] delta = {e.computeSeconds() - best.computeSeconds(), e.tpCommSeconds() - best.tpCommSeconds(),
                e.epCommSeconds() - best.epCommSeconds(),
                e.p2pSeconds() - best.p2pSeconds(), e.bubbleSeconds() - best.bubbleSeconds(), e.dpSeconds() - best.dpSeconds(),
                e.optimizerSeconds() - best.optimizerSeconds()};
        int worst = 0;
        for (int i = 1; i < delta.length; i++) if (delta[i] > delta[worst]) worst = i;
        return String.format(Locale.ROOT, "+%.2f s, mostly %s (+%.2f s)", e.stepSeconds() - best.stepSeconds(), names[worst], delta[worst]);
    }

    private static String whyBest(Estimate e) {
        return String.format(Locale.ROOT, "Of its %.2f s step, %.0f%% is compute, %.0f%% tp collectives, %.0f%% ep all-to-all, %.0f%% bubble,"
                        + " %.0f%% dp reduction; it needs %.1f of %.1f GB", e.stepSeconds(), 100 * e.computeSeconds() / e.stepSeconds(),
                100 * e.tpCommSeconds() / e.stepSeconds(), 100 * e.epCommSeconds() / e.stepSeconds(), 100 * e.bubbleSeconds() / e.stepSeconds(), 100 * e.dpSeconds() / e.stepSeconds(),
                e.memory().total() / 1e9, e.memoryLimit() / 1e9);
    }

    private static String json(Estimate e) {
        var l = e.layout();
        MemoryBreakdown m = e.memory();
        return String.format(Locale.ROOT, "{\"dp\":%d,\"tp\":%d,\"pp\":%d,\"vpp\":%d,\"ep\":%d,\"micro_batch\":%d,\"recompute\":\"%s\","
                        + "\"sequence_parallel\":%b,\"zero\":%d,\"schedule\":\"%s\",\"step_s\":%.6g,\"tflops_per_device_model\":%.6g,"
                        + "\"tflops_per_device_hardware\":%.6g,\"mfu\":%.6g,\"mem_bytes_per_device\":%.0f,\"fits\":%b,"
                        + "\"mem_breakdown\":{\"parameters\":%.0f,\"gradients\":%.0f,\"optimizer\":%.0f,\"activations\":%.0f,\"buffers\":%.0f}}",
                l.dp(), l.tp(), l.pp(), l.vpp(), l.ep(), l.microBatch(), l.recompute(), l.sequenceParallel(), l.zeroStage(), e.schedule(),
                e.stepSeconds(), e.tflopsPerDeviceModel(), e.tflopsPerDeviceHardware(), e.mfu(), m.total(), e.fits(),
                m.parameters(), m.gradients(), m.optimizer(), m.activations(), m.buffers());
    }
}
