package dev.shardwise.cli.bench;

import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.plan.Candidates;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;

/**
 * {@code shardwise bench layouts}: one model trained under several layouts in the same run, each beside the first (by
 * default one rank with all the cores): tokens/s and their ratio, the exposed communication (gradient reduction left
 * after backward, pipeline waits) and the largest pool peak of any rank. Rounds go over every layout in turn, so a busy machine
 * slows them alike; each layout reports its median over the rounds.
 */
@Command(name = "layouts", mixinStandardHelpOptions = true,
        description = {"Tokens/s, exposed communication and per-rank peak memory of several layouts of one model, beside the first "
                + "(default: 1 rank with all the cores), in one run.",
                "Layouts are written as for plan --explain (dp defaults to 1): e.g. \"tp=2,mb=4\" or \"pp=2,mb=2,schedule=zb-h1\"."})
public final class BenchLayoutsCommand implements Runnable {
    /** One rank with both cores, then every way 2 ranks split the same global batch of 8. */
    static final List<String> DEFAULT_LAYOUTS = List.of("mb=4", "dp=2,mb=4", "dp=2,mb=4,zero=1", "tp=2,mb=4", "tp=2,mb=4,sp=true",
            "pp=2,mb=2", "pp=2,mb=2,schedule=zb-h1");

    @Option(names = "--preset", defaultValue = "tiny", description = "Model preset (default: ${DEFAULT-VALUE}).")
    String preset;

    @Option(names = "--layouts", split = ";", description = "Layouts, separated by ';'; the first is the peer (default: 7 layouts of 1 and 2 ranks).")
    List<String> layouts;

    @Mixin
    LayoutRunOptions run;

    @Option(names = "--rounds", defaultValue = "1", description = "Rounds over all layouts (default: ${DEFAULT-VALUE}).")
    int rounds;

    @Option(names = "--json", description = "One JSON object per layout instead of a table.")
    boolean json;

    @Override
    public void run() {
        if (rounds < 1) throw new IllegalArgumentException("--rounds=" + rounds + " must be at least 1");
        BenchOutput out = new BenchOutput(System.out, json);
        List<Candidates.Choice> choices = (layouts == null ? DEFAULT_LAYOUTS : layouts).stream().map(t -> Candidates.parse(t, 0)).toList();
        out.info("layouts of " + preset + " on " + dev.shardwise.core.machine.CpuModel.read().describe() + ", "
                + Runtime.getRuntime().availableProcessors() + " cores; global batch " + run.globalBatch + ", seq " + run.seqLen + ", "
                + rounds + " round(s) of " + run.steps + " steps");
        List<List<LayoutRun>> runs = new ArrayList<>();
        for (int i = 0; i < choices.size(); i++) runs.add(new ArrayList<>());
        for (int r = 0; r < rounds; r++) {
            for (int i = 0; i < choices.size(); i++) {
                Candidates.Choice c = choices.get(i);
                out.info("round " + (r + 1) + ": " + Candidates.format(c.layout(), c.schedule()));
                runs.get(i).add(run.train(preset, c));
            }
        }
        Candidates.Choice first = choices.getFirst();
        String peer = describe(first);
        double peerTokens = medianTokens(runs.getFirst());
        for (int i = 0; i < choices.size(); i++) {
            Candidates.Choice c = choices.get(i);
            List<LayoutRun> mine = runs.get(i);
            double tokens = medianTokens(mine);
            double exposed = mine.stream().mapToDouble(LayoutRun::exposedSeconds).sorted().toArray()[mine.size() / 2];
            long peak = mine.stream().mapToLong(LayoutRun::rankPeakBytes).max().orElse(0);
            String note = String.format(Locale.ROOT, "exposed comm %.0f ms/step, per-rank peak %s", 1e3 * exposed, MemoryPool.formatBytes(peak));
            out.row(i == 0 ? BenchRow.alone("layouts", describe(c), tokens, "tok/s", Double.NaN, note)
                    : new BenchRow("layouts", describe(c), tokens, "tok/s", peer, peerTokens, Double.NaN, note));
        }
    }

    private static String describe(Candidates.Choice c) {
        return Candidates.format(c.layout(), c.schedule());
    }

    private static double medianTokens(List<LayoutRun> runs) {
        double[] t = runs.stream().mapToDouble(LayoutRun::tokensPerSecond).toArray();
        Arrays.sort(t);
        return t[t.length / 2];
    }
}
