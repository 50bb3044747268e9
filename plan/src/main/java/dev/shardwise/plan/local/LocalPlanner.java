package dev.shardwise.plan.local;

import dev.shardwise.model.ModelConfig;
import dev.shardwise.model.Recompute;
import dev.shardwise.parallel.ParallelLayout;
import dev.shardwise.parallel.pipeline.ScheduleKind;

import java.util.ArrayList;
import java.util.Comparator;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.function.Consumer;

/**
 * Chooses the layout of a run on this machine ({@code train --parallel auto}): every dp·tp·pp = ranks (tp where the
 * model splits that way, with and without sequence parallelism; for a mixture of experts every ep dividing dp and the
 * experts), micro-batch a power of two dividing the global batch
 * per replica, ZeRO stage 0-3, recompute policy and pipeline schedule (1F1B and ZB-H1; interleaved 1F1B with two
 * chunks where the blocks and micro-batches allow), each priced by {@link LocalCostModel} on a {@link LocalProfile}
 * measured once per micro-batch size (every tensor-parallel split in it); layouts whose predicted peak exceeds the rank
 * budget are dropped.
 */
public final class LocalPlanner {
    private final ModelConfig config;
    private final int ranks;
    private final int seq;
    private final int repeats;
    private final Consumer<String> progress;
    private final Map<Integer, LocalProfile> profiles = new HashMap<>();

    /**
     * A planner for {@code config} at sequence length {@code seq} on {@code ranks} rank threads, profiling each piece
     * {@code repeats} times and reporting what it profiles to {@code progress}.
     */
    public LocalPlanner(ModelConfig config, int ranks, int seq, int repeats, Consumer<String> progress) {
        this.config = config;
        this.ranks = ranks;
        this.seq = seq;
        this.repeats = repeats;
        this.progress = progress;
    }

    /**
     * The layouts of all the ranks that fit {@code rankBudgetBytes}, fastest first.
     *
     * @throws IllegalArgumentException if the global batch has no layout (no dp dividing it)
     */
    public List<LocalEstimate> search(long globalBatch, long rankBudgetBytes) {
        List<LocalEstimate> fitting = new ArrayList<>();
        boolean any = false;
        for (LocalProfile.Split split : LocalProfile.Split.possible(config, ranks, seq)) {
            for (int pp = 1; pp <= Math.min(ranks / split.tp(), config.layers()); pp++) {
                if (ranks / split.tp() % pp != 0) continue;
                int dp = ranks / split.tp() / pp;
                if (globalBatch % dp != 0 || dp % split.ep() != 0) continue;
                long perReplica = globalBatch / dp;
                for (int mb = 1; mb <= perReplica; mb *= 2) {
                    if (perReplica % mb != 0) continue;
                    long m = perReplica / mb;
                    if (m < pp) continue;   // fewer micro-batches than stages leaves a stage idle the whole step
                    any = true;
                    LocalCostModel costs = new LocalCostModel(config, profile(mb));
                    for (ScheduleKind schedule : schedules(pp, m)) {
                        int vpp = schedule == ScheduleKind.INTERLEAVED ? 2 : 1;
                        for (int zero = 0; zero <= (dp == 1 ? 0 : 3); zero++) {
                            for (Recompute recompute : Recompute.values()) {
                                ParallelLayout layout = new ParallelLayout(dp, split.tp(), pp, vpp, split.ep(), split.sequenceParallel(),
                                        zero, recompute, mb);
                                LocalEstimate e = costs.estimate(layout, schedule, globalBatch);
                                if (e.peakBytes() <= rankBudgetBytes) fitting.add(e);
                            }
                        }
                    }
                }
            }
        }
        if (!any) {
            throw new IllegalArgumentException("global batch " + globalBatch + " has no layout over " + ranks + " ranks: dp = ranks/pp "
                    + "must divide it with at least pp micro-batches per replica; use a global batch that is a multiple of " + ranks);
        }
        fitting.sort(Comparator.comparingDouble(LocalEstimate::stepSeconds));
        return fitting;
    }

    private List<ScheduleKind> schedules(int pp, long m) {
        if (pp == 1) return List.of(ScheduleKind.ONE_F_ONE_B);
        List<ScheduleKind> kinds = new ArrayList<>(List.of(ScheduleKind.ONE_F_ONE_B, ScheduleKind.ZB_H1));
        if (config.layers() >= 2 * pp && m % pp == 0) kinds.add(ScheduleKind.INTERLEAVED);
        return kinds;
    }

    private LocalProfile profile(int microBatch) {
        return profiles.computeIfAbsent(microBatch, mb -> {
            progress.accept("profiling " + ranks + " rank(s) at micro-batch " + mb);
            return LocalProfiler.profile(config, ranks, mb, seq, repeats, Set.copyOf(LocalProfile.Split.possible(config, ranks, seq)));
        });
    }
}
