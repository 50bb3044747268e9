package dev.shardwise.cli.bench;

import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.train.ConfigLoader;
import dev.shardwise.train.MetricsLog;
import dev.shardwise.train.TrainConfig;
import dev.shardwise.train.Trainer;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.PrintStream;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;

/**
 * {@code shardwise bench layouts}: the trainer itself ({@link Trainer}, ranks as threads of this JVM, each with its
 * share of the cores) run under a list of layouts of the same model and global batch, beside one rank with all the
 * cores, in one run: median tokens/s of the timed steps, the median exposed communication the trainer reports
 * (grads-reduce after backward plus pipeline wait; tensor parallelism's all-reduces run inside forward and backward
 * and are counted there) and the largest per-rank peak of the memory pools. Rounds alternate the cases so that a busy
 * machine slows them alike; each run's first step (the JIT warming up) is not counted.
 */
@Command(name = "layouts", mixinStandardHelpOptions = true,
        description = "Training tokens/s, exposed communication and per-rank peak memory of several layouts beside 1 rank with all cores.")
public final class BenchLayoutsCommand implements Runnable {
    @Option(names = "--preset", defaultValue = "tiny", description = "Model preset (default: ${DEFAULT-VALUE}).")
    String preset;

    @Option(names = "--layouts", split = ";", defaultValue = "dp=2;tp=2;pp=2",
            description = "Layouts separated by ';', each 'key=value,...' with keys dp, tp, pp, zero (default: ${DEFAULT-VALUE}; "
                    + "dp defaults to 1, zero to 0).")
    List<String> layouts;

    @Option(names = "--global-batch", defaultValue = "8", description = "Sequences per step over all ranks (default: ${DEFAULT-VALUE}).")
    int globalBatch;

    @Option(names = "--micro-batch", defaultValue = "2", description = "Sequences per micro-batch on each dp rank (default: ${DEFAULT-VALUE}).")
    int microBatch;

    @Option(names = "--seq-len", defaultValue = "128", description = "Tokens per sequence (default: ${DEFAULT-VALUE}).")
    int seqLen;

    @Option(names = "--rounds", defaultValue = "2", description = "Rounds over all cases (default: ${DEFAULT-VALUE}).")
    int rounds;

    @Option(names = "--steps", defaultValue = "3", description = "Timed steps per case and round, after 1 warm-up (default: ${DEFAULT-VALUE}).")
    int steps;

    @Option(names = "--json", description = "One JSON object per case instead of a table.")
    boolean json;

    /** One case: its name and layout flags. */
    private record Case(String name, Map<String, Object> flags) { }

    @Override
    public void run() {
        BenchOutput out = new BenchOutput(System.out, json);
        List<Case> cases = new ArrayList<>();
        Case single = new Case("1 rank, all cores", Map.of("ranks", 1));
        cases.add(single);
        for (String spec : layouts) cases.add(parse(spec.strip()));
        Map<Case, List<double[]>> samples = new LinkedHashMap<>();   // per case: {tokens/s, exposed ms, peak bytes}
        for (Case c : cases) samples.put(c, new ArrayList<>());
        Path scratch;
        try {
            scratch = Files.createTempDirectory("shardwise-bench-layouts");
            for (int round = 0; round < rounds; round++) {
                for (Case c : cases) samples.get(c).addAll(measure(c, scratch.resolve("r" + round + "-" + cases.indexOf(c))));
            }
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        out.info(String.format(Locale.ROOT, "%s, global batch %d x %d tokens, micro-batch %d, %d rounds x %d timed steps per case",
                preset, globalBatch, seqLen, microBatch, rounds, steps));
        double peer = median(samples.get(single), 0);
        for (Case c : cases) {
            List<double[]> s = samples.get(c);
            String note = String.format(Locale.ROOT, "exposed communication %.1f ms/step, per-rank peak memory %s", median(s, 1),
                    MemoryPool.formatBytes((long) s.stream().mapToDouble(v -> v[2]).max().orElse(0)));
            out.row(c == single ? BenchRow.alone("layouts", c.name, median(s, 0), "tokens/s", Double.NaN, note)
                    : new BenchRow("layouts", c.name, median(s, 0), "tokens/s", single.name, peer, Double.NaN, note));
        }
    }

    /** {@code tp=2,pp=2,zero=1} as train flags; ranks = dp·tp·pp. */
    private static Case parse(String spec) {
        Map<String, Integer> v = new LinkedHashMap<>(Map.of("dp", 1, "tp", 1, "pp", 1, "zero", 0));
        for (String part : spec.split(",")) {
            String[] kv = part.strip().split("=");
            if (kv.length != 2 || !v.containsKey(kv[0].strip())) {
                throw new IllegalArgumentException("--layouts: '" + part + "' in '" + spec + "' is not key=value with a key of "
                        + v.keySet() + "; write e.g. tp=2,pp=2,zero=1");
            }
            try {
                v.put(kv[0].strip(), Integer.parseInt(kv[1].strip()));
            } catch (NumberFormatException e) {
                throw new IllegalArgumentException("--layouts: '" + kv[1] + "' in '" + spec + "' is not a whole number");
            }
        }
        Map<String, Object> flags = new LinkedHashMap<>(v);
        flags.put("ranks", v.get("dp") * v.get("tp") * v.get("pp"));
        return new Case(String.format(Locale.ROOT, "dp=%d tp=%d pp=%d zero=%d", v.get("dp"), v.get("tp"), v.get("pp"),
                v.get("zero")), flags);
    }

    /** One training run of the case: per timed step {tokens/s, exposed communication ms, the ranks' largest pool peak}. */
    private List<double[]> measure(Case c, Path runDir) throws IOException {
        Map<String, Object> flags = new LinkedHashMap<>(c.flags);
        int dp = (Integer) flags.getOrDefault("dp", 1);
        if (globalBatch % (microBatch * dp) != 0) {
            throw new IllegalArgumentException("--global-batch " + globalBatch + " is not a multiple of --micro-batch x dp = "
                    + microBatch + " x " + dp + " (case " + c.name + ")");
        }
        flags.put("preset", preset);
        flags.put("batchSize", microBatch);
        flags.put("seqLen", seqLen);
        flags.put("gradAccumulation", globalBatch / (microBatch * dp));
        flags.put("steps", steps + 1);
        flags.put("evalEvery", 0);
        flags.put("evalBatches", 1);
        flags.put("saveCheckpoints", false);
        flags.put("runDir", runDir.toString());
        TrainConfig config = ConfigLoader.resolve(Map.of(), "bench layouts", flags);
        Trainer.Result result = new Trainer(config, new PrintStream(new ByteArrayOutputStream())).run(false);
        long peak = result.rankPeakBytes().stream().max(Comparator.naturalOrder()).orElse(0L);
        List<double[]> out = new ArrayList<>();
        for (Map<String, Object> row : MetricsLog.read(runDir.resolve("metrics.jsonl"))) {
            if (((Number) row.get("step")).longValue() == 1) continue;   // warm-up
            out.add(new double[]{((Number) row.get("tokens_per_s")).doubleValue(),
                    ((Number) row.get("grads_reduce_ms")).doubleValue() + ((Number) row.get("pipeline_wait_ms")).doubleValue(), peak});
        }
        return out;
    }

    private static double median(List<double[]> samples, int column) {
        double[] v = samples.stream().mapToDouble(s -> s[column]).sorted().toArray();
        return v.length % 2 == 1 ? v[v.length / 2] : (v[v.length / 2 - 1] + v[v.length / 2]) / 2;
    }
}
