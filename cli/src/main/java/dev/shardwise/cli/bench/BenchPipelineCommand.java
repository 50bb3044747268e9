package dev.shardwise.cli.bench;

import dev.shardwise.comm.LocalCluster;
import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.parallel.pipeline.PipelineExecutor;
import dev.shardwise.parallel.pipeline.PipelineSchedule;
import dev.shardwise.parallel.pipeline.ScheduleKind;
import dev.shardwise.parallel.pipeline.Timeline;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

import java.io.IOException;
import java.io.PrintStream;
import java.io.UncheckedIOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.StringJoiner;

/**
 * {@code shardwise bench pipeline}: the measured bubble of each pipeline schedule (GPipe, 1F1B, interleaved 1F1B,
 * ZB-H1) beside its formula, on p ranks as threads of this JVM (the {@code local} backend) running the real
 * executor and instruction lists over fixed-duration stand-in work (sleeps, so ranks on few cores do not contend):
 * a chunk's forward takes W/v, a whole backward 2W/v, ZB-H1's B and W halves W each. Each step starts after a
 * barrier; its bubble is 1 − (mean compute over ranks) / (longest rank's step), and a case reports the median over
 * its steps after one warm-up step. Peak activation bytes per stage come from each rank's memory pool, where every
 * forward holds a 1 MiB / v stand-in activation until its (mb, chunk) is released.
 */
@Command(name = "pipeline", mixinStandardHelpOptions = true,
        description = "Measured pipeline bubble of gpipe, 1f1b, interleaved and zb-h1 beside the formula, with peak activation bytes per stage.")
public final class BenchPipelineCommand implements Runnable {
    /** Stand-in activation one micro-batch keeps alive per stage (split over its v chunks): 1 MiB. */
    static final long ACTIVATION_BYTES = 1 << 20;

    @Option(names = "--pp", defaultValue = "4", description = "Pipeline stages p, ranks as threads (default: ${DEFAULT-VALUE}).")
    int stages;

    @Option(names = "--micro-batches", defaultValue = "8", description = "Micro-batches m per step (default: ${DEFAULT-VALUE}).")
    int microBatches;

    @Option(names = "--vpp", defaultValue = "2", description = "Chunks per stage v of the interleaved schedule (default: ${DEFAULT-VALUE}).")
    int chunks;

    @Option(names = "--work-ms", defaultValue = "20", description = "Stand-in forward time W of a stage, ms; backward takes 2W (default: ${DEFAULT-VALUE}).")
    double workMs;

    @Option(names = "--steps", defaultValue = "5", description = "Timed steps per schedule, after 1 warm-up (default: ${DEFAULT-VALUE}).")
    int steps;

    @Option(names = "--timeline", description = "Write each schedule's last step as a Chrome trace to FILE with the schedule's name inserted (pipeline.json -> pipeline-1f1b.json).")
    Path timeline;

    @Option(names = "--json", description = "One JSON object per schedule instead of a table.")
    boolean json;

    @Option(names = "--preset", description = {"Time real training steps of this model preset (e.g. tiny) instead of stand-in "
            + "work: p stages x 1 thread under each --schedules beside 1 rank x p threads, in tokens/s."})
    String preset;

    @Option(names = "--micro-batch", defaultValue = "4", description = "With --preset: sequences per micro-batch (default: ${DEFAULT-VALUE}).")
    int microBatch;

    @Option(names = "--seq-len", defaultValue = "256", description = "With --preset: tokens per sequence (default: ${DEFAULT-VALUE}).")
    int seqLen;

    @Option(names = "--rounds", defaultValue = "3", description = "With --preset: rounds over all cases (default: ${DEFAULT-VALUE}).")
    int rounds;

    @Option(names = "--schedules", split = ",", defaultValue = "1f1b,gpipe,zb-h1",
            description = "With --preset: schedules to time (default: ${DEFAULT-VALUE}).")
    List<String> schedules;

    /** What one schedule measured: per timed step, the pipeline bubble and step time; per stage, peak activation bytes. */
    record Measured(PipelineSchedule schedule, double[] bubbles, double[] stepMs, long[] peakActivationBytes) {
        double medianBubble() { return median(bubbles); }
        double medianStepMs() { return median(stepMs); }
    }

    @Override
    public void run() {
        run(System.out);
    }

    /** Measures every schedule and prints to {@code stdout}. */
    void run(PrintStream stdout) {
        if (stages < 1 || microBatches < 1 || chunks < 1 || steps < 1 || !(workMs > 0)) {
            throw new IllegalArgumentException("bench pipeline: --pp, --micro-batches, --vpp and --steps must be at least 1 and --work-ms"
                    + " positive, got --pp " + stages + " --micro-batches " + microBatches + " --vpp " + chunks + " --steps " + steps
                    + " --work-ms " + workMs);
        }
        BenchOutput out = new BenchOutput(stdout, json);
        if (preset != null) {
            new PipelineTrainingBench(preset, stages, microBatches, microBatch, seqLen, rounds, steps,
                    schedules.stream().map(ScheduleKind::parse).toList()).run(out, preset);
            return;
        }
        out.info(String.format(Locale.ROOT, "p=%d ranks as threads, m=%d micro-batches, stand-in work W=%.1f ms: forward W, backward 2W"
                        + " (zb-h1: B W + W W), interleaved v=%d chunks at W/v each; %dx%d f32 messages; %d steps after 1 warm-up, median",
                stages, microBatches, workMs, chunks, StandInStageWork.ROWS, StandInStageWork.COLUMNS, steps));
        List<Measured> all = new ArrayList<>();
        for (ScheduleKind kind : ScheduleKind.values()) {
            int v = kind == ScheduleKind.INTERLEAVED ? chunks : 1;
            Measured m = measure(PipelineSchedule.build(kind, stages, v, microBatches), out);
            all.add(m);
            double formula = m.schedule().idealBubble(workMs, workMs, workMs);
            String note = String.format(Locale.ROOT, "bubble %.4f vs %.4f (%+.1f%%), step %.0f ms, peak activations per stage %s",
                    m.medianBubble(), formula, 100 * (m.medianBubble() / formula - 1), m.medianStepMs(), mebibytes(m.peakActivationBytes()));
            out.row(new BenchRow("pipeline", caseName(m.schedule()), m.medianBubble(), "fraction", "formula", formula, Double.NaN, note));
        }
        summarize(out, all);
    }

    private static String caseName(PipelineSchedule s) {
        return s.chunks() > 1 ? s.kind() + " v=" + s.chunks() : s.kind().toString();
    }

    /** The ratios the schedules promise: 1F1B's activation memory against GPipe's, ZB-H1's bubble against 1F1B's. */
    private void summarize(BenchOutput out, List<Measured> all) {
        Measured gpipe = find(all, ScheduleKind.GPIPE);
        Measured oneF = find(all, ScheduleKind.ONE_F_ONE_B);
        Measured zb = find(all, ScheduleKind.ZB_H1);
        out.info(String.format(Locale.ROOT, "stage 0 peak activations, 1f1b / gpipe: %.3f (p/m = %.3f)",
                (double) oneF.peakActivationBytes()[0] / gpipe.peakActivationBytes()[0], (double) stages / microBatches));
        out.info(String.format(Locale.ROOT, "bubble, zb-h1 / 1f1b: %.3f (formula %.3f)", zb.medianBubble() / oneF.medianBubble(),
                zb.schedule().idealBubble(workMs, workMs, workMs) / oneF.schedule().idealBubble(workMs, workMs, workMs)));
    }

    private static Measured find(List<Measured> all, ScheduleKind kind) {
        return all.stream().filter(m -> m.schedule().kind() == kind).findFirst().orElseThrow();
    }

    private Measured measure(PipelineSchedule schedule, BenchOutput out) {
        int v = schedule.chunks();
        long forward = Math.round(workMs * 1e6 / v);
        // One list per rank: its steps (warm-up first), and its peak activation bytes over the timed steps.
        record RankRun(List<PipelineExecutor.Step> steps, long peakActivationBytes) { }
        List<RankRun> ranks = LocalCluster.run(stages, LocalCluster.Options.defaults(), ctx -> {
            PipelineExecutor executor = new PipelineExecutor(ctx.world(), schedule, ctx.globalRank());
            MemoryPool memory = ctx.memory();
            List<PipelineExecutor.Step> ran = new ArrayList<>();
            long peak = 0;
            try (StandInStageWork work = new StandInStageWork(stages, v, ctx.globalRank(), memory, forward, forward, forward,
                    ACTIVATION_BYTES / v)) {
                for (int step = 0; step <= steps; step++) {
                    ctx.world().barrier();
                    memory.resetPeaks();
                    ran.add(executor.run(work));
                    if (step > 0) peak = Math.max(peak, memory.peakBytes(MemoryCategory.ACTIVATIONS));
                }
            }
            return new RankRun(ran, peak);
        });
        double[] bubbles = new double[steps];
        double[] stepMs = new double[steps];
        for (int step = 1; step <= steps; step++) {
            double compute = 0;
            long wall = 0;
            for (RankRun r : ranks) {
                compute += r.steps().get(step).computeNs();
                wall = Math.max(wall, r.steps().get(step).wallNs());
            }
            bubbles[step - 1] = 1 - compute / stages / wall;
            stepMs[step - 1] = wall / 1e6;
        }
        if (timeline != null) writeTimeline(schedule, ranks.stream().map(r -> r.steps().getLast()).toList(), out);
        return new Measured(schedule, bubbles, stepMs, ranks.stream().mapToLong(RankRun::peakActivationBytes).toArray());
    }

    private void writeTimeline(PipelineSchedule schedule, List<PipelineExecutor.Step> lastSteps, BenchOutput out) {
        String name = timeline.getFileName().toString();
        int dot = name.lastIndexOf('.');
        String suffix = "-" + schedule.kind();
        Path file = timeline.resolveSibling(dot > 0 ? name.substring(0, dot) + suffix + name.substring(dot) : name + suffix);
        try {
            Timeline.write(file, lastSteps);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        out.info("timeline of " + caseName(schedule) + ": " + file);
    }

    private static String mebibytes(long[] bytes) {
        StringJoiner j = new StringJoiner(" ", "[", "] MiB");
        for (long b : bytes) j.add(String.format(Locale.ROOT, "%.2f", b / (double) (1 << 20)));
        return j.toString();
    }

    private static double median(double[] values) {
        double[] v = values.clone();
        Arrays.sort(v);
        return v.length % 2 == 1 ? v[v.length / 2] : (v[v.length / 2 - 1] + v[v.length / 2]) / 2;
    }
}
