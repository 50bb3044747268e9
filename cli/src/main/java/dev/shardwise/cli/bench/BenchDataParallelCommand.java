package dev.shardwise.cli.bench;

import dev.shardwise.comm.LocalCluster;
import dev.shardwise.core.exec.ComputePool;
import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;
import dev.shardwise.comm.Communicator;
import dev.shardwise.model.Gpt;
import dev.shardwise.model.ModelConfig;
import dev.shardwise.model.optim.AdamWOptimizer;
import dev.shardwise.parallel.DataParallel;
import dev.shardwise.parallel.ZeroStage;
import dev.shardwise.train.TrainStep;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.SplittableRandom;

/**
 * {@code shardwise bench dp}: training-step tokens/s of data parallelism over N ranks with one kernel thread each
 * (threads of this JVM, the {@code local} backend) beside one rank with N threads on the same global batch,
 * measured in the same run. Rounds alternate the cases so that a busy machine slows them alike, after an uncounted
 * round that lets the JIT compile every case's code; each case reports the median step over all rounds, with its
 * median forward, backward and exposed grads-reduce times.
 */
@Command(name = "dp", mixinStandardHelpOptions = true,
        description = "Data-parallel tokens/s (N ranks x 1 thread, overlapped or not, ZeRO stages) beside 1 rank x N threads.")
public final class BenchDataParallelCommand implements Runnable {
    @Option(names = "--preset", defaultValue = "tiny", description = "Model preset (default: ${DEFAULT-VALUE}).")
    String preset;

    @Option(names = "--ranks", defaultValue = "2", description = "Data-parallel ranks (default: ${DEFAULT-VALUE}).")
    int ranks;

    @Option(names = "--global-batch", defaultValue = "8", description = "Sequences per step over all ranks (default: ${DEFAULT-VALUE}).")
    int globalBatch;

    @Option(names = "--seq-len", defaultValue = "256", description = "Tokens per sequence (default: ${DEFAULT-VALUE}).")
    int seqLen;

    @Option(names = "--zero", split = ",", defaultValue = "0", description = "ZeRO stages to measure (default: ${DEFAULT-VALUE}).")
    List<Integer> stages;

    @Option(names = "--rounds", defaultValue = "5", description = "Rounds over all cases (default: ${DEFAULT-VALUE}).")
    int rounds;

    @Option(names = "--steps", defaultValue = "3", description = "Timed steps per case and round, after 1 warm-up (default: ${DEFAULT-VALUE}).")
    int steps;

    @Option(names = "--bucket-elements", defaultValue = "1048576",
            description = "Gradient elements per overlapped all-reduce bucket (default: ${DEFAULT-VALUE}, as the trainer).")
    int bucketElements;

    @Option(names = "--json", description = "One JSON object per case instead of a table.")
    boolean json;

    /** One measured case: ZeRO stage (-1: the single-rank peer) and whether gradient reduction overlaps backward. */
    private record Case(String name, int stage, boolean overlap) { }

    @Override
    public void run() {
        if (globalBatch % ranks != 0) {
            throw new IllegalArgumentException("--global-batch " + globalBatch + " must be a multiple of --ranks " + ranks);
        }
        BenchOutput out = new BenchOutput(System.out, json);
        ModelConfig config = ModelConfig.preset(preset);
        List<Case> cases = new ArrayList<>();
        Case single = new Case(String.format(Locale.ROOT, "1 rank x %d threads", ranks), -1, false);
        cases.add(single);
        for (int stage : stages) {
            if (stage == 0) cases.add(new Case("dp=" + ranks + " zero=0 reduce after backward", 0, false));
            cases.add(new Case("dp=" + ranks + " zero=" + stage + (stage == 0 || stage >= 2 ? " overlapped" : ""), stage, true));
        }
        Map<Case, List<double[]>> samples = new LinkedHashMap<>();   // per case: {step s, backward ms, reduce ms, forward ms}
        for (Case c : cases) samples.put(c, new ArrayList<>());
        for (int round = -1; round < rounds; round++) {   // round -1 warms the JIT up on every case and is not counted
            for (Case c : cases) {
                List<double[]> measured = c.stage < 0 ? single(config) : parallel(config, c);
                if (round >= 0) samples.get(c).addAll(measured);
            }
        }
        double peer = globalBatch * (double) seqLen / median(samples.get(single), 0);
        out.info(String.format(Locale.ROOT, "%s, global batch %d x %d tokens, %d rounds x %d steps per case", preset,
                globalBatch, seqLen, rounds, steps));
        for (Case c : cases) {
            List<double[]> s = samples.get(c);
            double tokens = globalBatch * (double) seqLen / median(s, 0);
            String note = String.format(Locale.ROOT, "median forward %.0f ms, backward %.0f ms, grads-reduce (exposed) %.1f ms",
                    median(s, 3), median(s, 1), median(s, 2));
            out.row(c == single ? BenchRow.alone("dp", c.name, tokens, "tokens/s", Double.NaN, note)
                    : new BenchRow("dp", c.name, tokens, "tokens/s", single.name, peer, Double.NaN, note));
        }
    }

    private List<double[]> single(ModelConfig config) {
        List<double[]> result = new ArrayList<>();
        try (ComputePool pool = new ComputePool("bench-dp-single", ranks)) {
            ComputePool.runWith(pool, () -> {
                MemoryPool memory = MemoryPool.unlimited("rank 0");
                try (Gpt model = Gpt.create(config, memory, DType.F32, 1);
                     AdamWOptimizer adam = new AdamWOptimizer(model.parameters(), memory, AdamWOptimizer.Settings.gpt());
                     TrainStep step = new TrainStep(model, adam, memory, 1.0)) {
                    result.addAll(time(step, memory, config, 0, globalBatch));
                }
            });
        }
        return result;
    }

    private List<double[]> parallel(ModelConfig config, Case c) {
        int rows = globalBatch / ranks;
        return LocalCluster.run(ranks, LocalCluster.Options.defaults().withThreadsPerRank(1), ctx -> {
            MemoryPool memory = ctx.memory();
            Communicator world = ctx.world();
            ZeroStage zero = ZeroStage.of(c.stage);
            ZeroStage.Options options = ZeroStage.Options.defaults().withOverlap(c.overlap)
                    .withBucketElements(c.overlap ? bucketElements : DataParallel.DEFAULT_BUCKET_ELEMENTS);
            try (Gpt model = new Gpt(config, zero.allocate(Gpt.declare(config), memory, DType.F32, world.size()));
                 ZeroStage.Update update = zero.build(model.parameters(), world, memory, AdamWOptimizer.Settings.gpt(), options);
                 TrainStep step = new TrainStep(model, memory, 1.0, update.update())) {
                update.initialize(1);
                return time(step, memory, config, world.rank(), rows);
            }
        }).getFirst();
    }

    /**
     * One warm-up and {@link #steps} timed steps on random tokens: {step seconds, backward ms, grads-reduce ms,
     * forward ms} each.
     */
    private List<double[]> time(TrainStep step, MemoryPool memory, ModelConfig config, int rank, int rows) {
        SplittableRandom random = new SplittableRandom(17 + rank);
        List<double[]> result = new ArrayList<>();
        try (Tensor batch = Tensor.allocate(memory, MemoryCategory.BUFFERS, DType.I32, rows, seqLen + 1)) {
            int[] tokens = new int[rows * (seqLen + 1)];
            for (int s = 0; s <= steps; s++) {
                long start = System.nanoTime();
                TrainStep.Result r = step.run(batch, 1, t -> {
                    for (int i = 0; i < tokens.length; i++) tokens[i] = random.nextInt(config.vocabSize());
                    MemorySegment.copy(tokens, 0, t.segment(), ValueLayout.JAVA_INT, t.byteOffset(), tokens.length);
                }, 1e-4);
                if (s > 0) result.add(new double[]{(System.nanoTime() - start) / 1e9, r.backwardNs() / 1e6, r.reduceNs() / 1e6,
                        r.forwardNs() / 1e6});
            }
        }
        return result;
    }

    private static double median(List<double[]> samples, int column) {
        double[] v = samples.stream().mapToDouble(s -> s[column]).sorted().toArray();
        return v.length % 2 == 1 ? v[v.length / 2] : (v[v.length / 2 - 1] + v[v.length / 2]) / 2;
    }
}
