package dev.shardwise.cli;

import dev.shardwise.comm.RankEnvironment;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.plan.Candidates;
import dev.shardwise.plan.local.LocalEstimate;
import dev.shardwise.plan.local.LocalPlanner;
import dev.shardwise.train.ConfigLoader;
import dev.shardwise.train.TrainConfig;
import dev.shardwise.train.Trainer;

import java.io.IOException;
import java.io.PrintWriter;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;

/**
 * {@code train --parallel auto}: the layout {@link LocalPlanner} predicts fastest for the run's model, ranks, global
 * batch and rank memory budget, as the config keys it sets; after the run, its prediction beside what was measured.
 */
final class AutoLayout {
    /** Layouts listed before training. */
    private static final int SHOWN = 5;

    private final LocalEstimate choice;
    private final long globalBatch;

    private AutoLayout(LocalEstimate choice, long globalBatch) {
        this.choice = choice;
        this.globalBatch = globalBatch;
    }

    /**
     * Profiles the model of {@code train}'s flags on its ranks and picks the fastest layout that fits, printing the best
     * few to {@code out}.
     *
     * @throws IllegalArgumentException if run under a launcher, if a layout flag is given too, or if nothing fits
     */
    static AutoLayout choose(TrainCommand train, RankEnvironment job, PrintWriter out) throws IOException {
        if (job.isMultiProcess()) {
            throw new IllegalArgumentException("--parallel auto profiles with rank threads of this JVM; run it with --ranks N "
                    + "(without launch), then pass the layout it prints to launch");
        }
        Map<String, Object> fixed = new LinkedHashMap<>();
        fixed.put("--dp", train.dp);
        fixed.put("--ep", train.ep);
        fixed.put("--tp", train.tp);
        fixed.put("--sequence-parallel", train.sequenceParallel);
        fixed.put("--pp", train.pp);
        fixed.put("--vpp", train.vpp);
        fixed.put("--zero", train.zero);
        fixed.put("--recompute", train.recompute);
        fixed.put("--schedule", train.schedule);
        fixed.put("--micro-batch", train.microBatch);
        for (Map.Entry<String, Object> e : fixed.entrySet()) {
            if (e.getValue() != null) {
                throw new IllegalArgumentException("--parallel auto chooses " + e.getKey() + " itself; drop " + e.getKey() + " "
                        + e.getValue() + " (or drop --parallel auto to set the layout by hand)");
            }
        }
        TrainConfig base = train.resolveWithoutGlobalBatch(job);
        int ranks = base.layout().worldSize();
        long batch = train.globalBatch != null ? train.globalBatch : (long) base.batchSize() * base.gradAccumulation();
        out.printf(Locale.ROOT, "--parallel auto: %s on %d rank(s), global batch %d, seq %d, rank memory %s%n", base.preset(), ranks,
                batch, base.seqLen(), base.rankMemory() == Long.MAX_VALUE ? "unlimited" : MemoryPool.formatBytes(base.rankMemory()));
        out.flush();
        List<LocalEstimate> ranked = new LocalPlanner(base.model(), ranks, base.seqLen(), 5, line -> {
            out.println("  " + line);
            out.flush();
        }).search(batch, base.rankMemory());
        if (ranked.isEmpty()) {
            throw new IllegalArgumentException("no layout of " + ranks + " rank(s) fits --rank-memory "
                    + MemoryPool.formatBytes(base.rankMemory()) + "; raise it, use more ranks, or a smaller global batch");
        }
        out.printf(Locale.ROOT, "  %-4s %-66s %12s %12s%n", "rank", "layout", "step (pred.)", "peak (pred.)");
        for (int i = 0; i < Math.min(SHOWN, ranked.size()); i++) {
            LocalEstimate e = ranked.get(i);
            out.printf(Locale.ROOT, "  %-4d %-66s %9.0f ms %12s%n", i + 1, Candidates.format(e.layout(), e.schedule()),
                    1e3 * e.stepSeconds(), MemoryPool.formatBytes(e.peakBytes()));
        }
        out.printf(Locale.ROOT, "chosen: %s (of %d layouts that fit)%n", Candidates.format(ranked.getFirst().layout(),
                ranked.getFirst().schedule()), ranked.size());
        out.flush();
        return new AutoLayout(ranked.getFirst(), batch);
    }

    /** The config keys of the chosen layout. */
    Map<String, Object> flags() {
        return ConfigLoader.layoutKeys(choice.layout(), choice.schedule(), globalBatch);
    }

    /** The prediction beside the run's last step and the leader's peak memory. */
    void report(PrintWriter out, TrainConfig config, Trainer.Result result) {
        double measured = result.tokensPerSecond() > 0 ? config.tokensPerStep() / result.tokensPerSecond() : Double.NaN;
        out.printf(Locale.ROOT, "--parallel auto: predicted %.0f ms/step and %s peak per rank; measured %.0f ms (last step, %+.0f%%) "
                        + "and %s on the leader (evaluation and checkpoints included)%n", 1e3 * choice.stepSeconds(),
                MemoryPool.formatBytes(choice.peakBytes()), 1e3 * measured, 100 * (choice.stepSeconds() / measured - 1),
                MemoryPool.formatBytes(result.peakMemoryBytes()));
    }
}
