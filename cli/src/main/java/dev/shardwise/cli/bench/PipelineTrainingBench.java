package dev.shardwise.cli.bench;

import dev.shardwise.comm.LocalCluster;
import dev.shardwise.core.exec.ComputePool;
import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;
import dev.shardwise.model.Gpt;
import dev.shardwise.model.GptPart;
import dev.shardwise.model.ModelConfig;
import dev.shardwise.model.ParameterSet;
import dev.shardwise.model.PipelineCut;
import dev.shardwise.model.optim.AdamWOptimizer;
import dev.shardwise.parallel.StageGradients;
import dev.shardwise.parallel.ZeroStage;
import dev.shardwise.parallel.pipeline.ScheduleKind;
import dev.shardwise.train.TrainStep;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.SplittableRandom;

/**
 * {@code shardwise bench pipeline --preset NAME}: training-step tokens/s of a real model cut over p pipeline stages
 * (ranks as threads of this JVM, one kernel thread each) under each schedule, beside one rank with p threads on the
 * same global batch and micro-batches, in the same run. Rounds alternate the cases so a busy machine slows them
 * alike, after an uncounted round that lets the JIT compile every case; each case reports its median step.
 */
final class PipelineTrainingBench {
    private final ModelConfig config;
    private final int stages, microBatches, microBatch, seqLen, rounds, steps;
    private final List<ScheduleKind> schedules;

    PipelineTrainingBench(String preset, int stages, int microBatches, int microBatch, int seqLen, int rounds, int steps,
                          List<ScheduleKind> schedules) {
        this.config = ModelConfig.preset(preset);
        this.stages = stages;
        this.microBatches = microBatches;
        this.microBatch = microBatch;
        this.seqLen = seqLen;
        this.rounds = rounds;
        this.steps = steps;
        this.schedules = List.copyOf(schedules);
    }

    /** Measures the single rank and every schedule, and prints one row each (the schedules against the single rank). */
    void run(BenchOutput out, String preset) {
        String singleName = String.format(Locale.ROOT, "1 rank x %d threads", stages);
        Map<String, List<Double>> seconds = new LinkedHashMap<>();
        seconds.put(singleName, new ArrayList<>());
        for (ScheduleKind kind : schedules) seconds.put(caseName(kind), new ArrayList<>());
        for (int round = -1; round < rounds; round++) {   // round -1 warms the JIT up on every case and is not counted
            List<Double> single = single();
            if (round >= 0) seconds.get(singleName).addAll(single);
            for (ScheduleKind kind : schedules) {
                List<Double> measured = pipeline(kind);
                if (round >= 0) seconds.get(caseName(kind)).addAll(measured);
            }
        }
        double tokensPerStep = (double) microBatches * microBatch * seqLen;
        out.info(String.format(Locale.ROOT, "%s, m=%d micro-batches of %d x %d tokens per step, p=%d stages x 1 thread; "
                + "%d rounds x %d steps per case", preset, microBatches, microBatch, seqLen, stages, rounds, steps));
        double peer = tokensPerStep / median(seconds.get(singleName));
        out.row(BenchRow.alone("pipeline-train", singleName, peer, "tokens/s", Double.NaN,
                String.format(Locale.ROOT, "median step %.0f ms", 1e3 * median(seconds.get(singleName)))));
        for (ScheduleKind kind : schedules) {
            List<Double> s = seconds.get(caseName(kind));
            out.row(new BenchRow("pipeline-train", caseName(kind), tokensPerStep / median(s), "tokens/s", singleName, peer,
                    Double.NaN, String.format(Locale.ROOT, "median step %.0f ms", 1e3 * median(s))));
        }
    }

    private String caseName(ScheduleKind kind) {
        return "pp=" + stages + " " + kind;
    }

    private List<Double> single() {
        List<Double> result = new ArrayList<>();
        try (ComputePool pool = new ComputePool("bench-pipeline-single", stages)) {
            ComputePool.runWith(pool, () -> {
                MemoryPool memory = MemoryPool.unlimited("rank 0");
                try (Gpt model = Gpt.create(config, memory, DType.F32, 1);
                     AdamWOptimizer adam = new AdamWOptimizer(model.parameters(), memory, AdamWOptimizer.Settings.gpt());
                     TrainStep step = new TrainStep(model, adam, memory, 1.0)) {
                    result.addAll(time(step, memory, 0));
                }
            });
        }
        return result;
    }

    private List<Double> pipeline(ScheduleKind kind) {
        List<GptPart.Span> parts = PipelineCut.balanced(config, seqLen, stages);
        return LocalCluster.run(stages, LocalCluster.Options.defaults().withThreadsPerRank(1), ctx -> {
            MemoryPool memory = ctx.memory();
            int stage = ctx.world().rank();
            GptPart.Span span = parts.get(stage);
            try (ParameterSet params = ZeroStage.REPLICATED.allocate(Gpt.declare(config, List.of(span), true), memory, DType.F32, 1);
                 StageGradients shared = new StageGradients(ctx.world(), params, memory);
                 ZeroStage.Update update = ZeroStage.REPLICATED.build(params, null, memory, AdamWOptimizer.Settings.gpt(),
                         ZeroStage.Options.defaults().withStages(shared));
                 TrainStep step = new TrainStep(params, List.of(new GptPart(config, params, span)), memory, 1.0,
                         update.update(), new TrainStep.Pipeline(ctx.world(), kind, stages, 1))) {
                update.initialize(1);
                return time(step, memory, 17);
            }
        }).getFirst();
    }

    /** One warm-up and {@link #steps} timed steps on random tokens (the same on every stage): step seconds each. */
    private List<Double> time(TrainStep step, MemoryPool memory, long seed) {
        SplittableRandom random = new SplittableRandom(seed);
        List<Double> result = new ArrayList<>();
        try (Tensor batch = Tensor.allocate(memory, MemoryCategory.BUFFERS, DType.I32, microBatch, seqLen + 1)) {
            int[] tokens = new int[microBatch * (seqLen + 1)];
            for (int s = 0; s <= steps; s++) {
                long start = System.nanoTime();
                step.run(batch, microBatches, t -> {
                    for (int i = 0; i < tokens.length; i++) tokens[i] = random.nextInt(config.vocabSize());
                    MemorySegment.copy(tokens, 0, t.segment(), ValueLayout.JAVA_INT, t.byteOffset(), tokens.length);
                }, 1e-4);
                if (s > 0) result.add((System.nanoTime() - start) / 1e9);
            }
        }
        return result;
    }

    private static double median(List<Double> samples) {
        double[] v = samples.stream().mapToDouble(Double::doubleValue).sorted().toArray();
        return v.length % 2 == 1 ? v[v.length / 2] : (v[v.length / 2 - 1] + v[v.length / 2]) / 2;
    }
}
