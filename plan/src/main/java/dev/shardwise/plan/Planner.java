package dev.shardwise.plan;

import dev.shardwise.model.Recompute;
import dev.shardwise.parallel.ParallelLayout;
import dev.shardwise.parallel.pipeline.ScheduleKind;

import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;

/**
 * Searches layouts of a model on a cluster for a global batch: every tp (a power of two up to a node, dividing the
 * heads, ffn and vocab), pp up to the layers (blocks split as {@link LayerSplit} when pp does not divide them),
 * dp = devices/(tp·pp) dividing the batch, micro-batch a power of two dividing B/dp, vpp (interleaved, when m is a
 * multiple of p), ZeRO stage, recompute policy and sequence parallelism, and schedule (1F1B or ZB-H1 with one chunk
 * per stage, interleaved 1F1B with several), and for a mixture-of-experts model ep (a power of two dividing dp and
 * the experts), keeping those whose peak memory fits the device.
 *
 * <p>Pruning, each step safe under the cost model: sequence parallelism is always on when tp &gt; 1 (it costs the
 * same communication and saves memory and element-wise time); for each (tp, pp, dp, micro-batch, vpp, schedule)
 * only its fastest fitting pair of recompute policy and ZeRO stage (0 to 3; 2 and 3 only without a pipeline, as
 * DeepSpeed and Megatron allow) is kept; layouts that do not fit are dropped. Survivors are ranked by
 * {@link CostModel}'s closed form, then the best {@link #SIMULATED} are priced by simulating their schedules and
 * ranked again.
 */
public final class Planner {
    /** Candidates priced by simulation after the closed-form ranking. */
    static final int SIMULATED = 16;
    /** Schedules tried for one chunk per stage: 1F1B, and ZB-H1 (same activation memory, smaller bubble). */
    private static final List<ScheduleKind> ZERO_BUBBLE_TOO = List.of(ScheduleKind.ONE_F_ONE_B, ScheduleKind.ZB_H1);

    private final CostModel costs;

    /** A planner over {@code costs}' model and cluster. */
    public Planner(CostModel costs) {
        this.costs = costs;
    }

    /**
     * The best layouts that use all of the cluster's devices and fit their memory, fastest first, at most
     * {@code limit}; empty if none fits.
     */
    public List<Estimate> search(long globalBatch, int limit) {
        ModelSpec model = costs.model();
        ClusterSpec cluster = costs.cluster();
        int devices = cluster.devices();
        List<Estimate> fitting = new ArrayList<>();
        for (int tp = 1; tp <= cluster.devicesPerNode(); tp *= 2) {
            if (model.heads() % tp != 0 || model.ffnHidden() % tp != 0 || model.vocab() % tp != 0) continue;
            if (model.kvHeads() % tp != 0 && tp % model.kvHeads() != 0) continue;
            for (int pp = 1; pp <= model.layers(); pp++) {
                if (devices % (tp * pp) != 0) continue;   // pp need not divide the layers (LayerSplit)
                int dp = devices / (tp * pp);
                if (globalBatch % dp != 0) continue;
                long perReplica = globalBatch / dp;
                for (int mb = 1; mb <= perReplica; mb *= 2) {
                    if (perReplica % mb != 0) continue;
                    long m = perReplica / mb;
                    // interleaving only where the blocks split evenly into the chunks
                    for (int vpp = 1; vpp == 1 || (pp > 1 && model.layers() % (pp * vpp) == 0 && m % pp == 0); vpp *= 2) {
                        for (ScheduleKind schedule : vpp == 1 && pp > 1 ? ZERO_BUBBLE_TOO : List.of(ScheduleKind.defaultFor(vpp))) {
                            for (int ep : expertParallelSizes(dp)) {
                                Estimate best = bestFitting(dp, tp, pp, vpp, ep, mb, schedule, globalBatch);
                                if (best != null) fitting.add(best);
                            }
                        }
                        if (vpp > 1 && model.layers() % (pp * vpp * 2) != 0) break;
                    }
                }
            }
        }
        fitting.sort(Comparator.comparingDouble(Estimate::stepSeconds));
        List<Estimate> simulated = new ArrayList<>();
        for (Estimate e : fitting.subList(0, Math.min(SIMULATED, fitting.size()))) {
            simulated.add(costs.estimate(e.layout(), e.schedule(), globalBatch));
        }
        simulated.sort(Comparator.comparingDouble(Estimate::stepSeconds));
        return simulated.subList(0, Math.min(limit, simulated.size()));
    }

    /**
     * The fastest fitting (recompute, ZeRO stage) pair by the closed form; null if none fits. Every pair is
     * priced: less recompute saves time but may need a higher ZeRO stage to fit, whose gathers cost time.
     */
    private Estimate bestFitting(int dp, int tp, int pp, int vpp, int ep, int mb, ScheduleKind schedule, long globalBatch) {
        boolean sp = tp > 1;
        Estimate best = null;
        for (Recompute recompute : Recompute.values()) {
            for (int zero = 0; zero <= (pp > 1 ? 1 : 3); zero++) {
                if (zero > 0 && dp == 1) break;
                ParallelLayout layout = new ParallelLayout(dp, tp, pp, vpp, ep, sp, zero, recompute, mb);
                MemoryBreakdown memory;
                try {
                    memory = costs.memory(layout, schedule, globalBatch);
                } catch (IllegalArgumentException e) {
                    return null;   // the schedule cannot run this combination (e.g. message tags past MPI's)
                }
                if (memory.total() <= costs.cluster().device().memoryBytes()) {
                    Estimate e = costs.quickEstimate(layout, schedule, globalBatch);
                    if (best == null || e.stepSeconds() < best.stepSeconds()) best = e;
                }
            }
        }
        return best;
    }

    /** ep sizes to try: 1 for a dense model; else the powers of two dividing both dp and the experts. */
    private List<Integer> expertParallelSizes(int dp) {
        List<Integer> sizes = new ArrayList<>();
        int experts = costs.model().experts();
        for (int ep = 1; ep <= dp && (ep == 1 || experts % ep == 0); ep *= 2) {
            if (dp % ep == 0) sizes.add(ep);
            if (experts == 0) break;
        }
        return sizes;
    }

    /** Scores one layout given as text ({@code tp=8,pp=8,dp=24,vpp=2,mb=2,recompute=full,sp=false,zero=0}). */
    public Estimate explain(String layoutText, long globalBatch) {
        Candidates.Choice c = Candidates.parse(layoutText, costs.cluster().devices());
        return costs.estimate(c.layout(), c.schedule(), globalBatch);
    }
}
