package dev.shardwise.model;

import java.util.List;

/**
 * Expert load and auxiliary loss of a step's MoE layers (one model part), for metrics and the bias update.
 *
 * @param auxLoss     the auxiliary losses added to the training objective (α·balance + β·z-loss, summed over the
 *                    layers), averaged over the step's micro-batches
 * @param loads       per MoE layer, tokens routed to each expert (before capacity drops), summed over micro-batches
 *                    (over data-parallel replicas: their mean)
 * @param spreads     per MoE layer, the mean square of a token's router scores about their mean over the experts,
 *                    over the step's tokens (over data-parallel replicas: their mean): the router's sharpness squared
 * @param dropped     routed assignments dropped by capacity limits, summed over layers and micro-batches
 * @param assignments routed assignments (tokens × k), summed over layers and micro-batches
 */
public record MoeStats(double auxLoss, List<double[]> loads, double[] spreads, long dropped, long assignments) {
    /** No MoE layers. */
    public static final MoeStats NONE = new MoeStats(0, List.of(), new double[0], 0, 0);

    /** The largest load of any expert of any layer over that layer's mean load; 0 without MoE layers. */
    public double maxOverMean() {
        double worst = 0;
        for (double[] load : loads) worst = Math.max(worst, maxOverMean(load));
        return worst;
    }

    /**
     * Each layer's largest expert load over its mean load, summed over the layers (divide by {@link #layers()} for
     * the mean over layers; a sum so that pipeline stages can add theirs); 0 without MoE layers.
     */
    public double sumOfMaxOverMean() {
        double sum = 0;
        for (double[] load : loads) sum += maxOverMean(load);
        return sum;
    }

    /** The MoE layers recorded. */
    public int layers() {
        return loads.size();
    }

    /** max_e load_e / mean_e load_e of one layer; 0 for a layer that took no tokens. */
    public static double maxOverMean(double[] load) {
        double sum = 0, max = 0;
        for (double l : load) {
            sum += l;
            max = Math.max(max, l);
        }
        return sum > 0 ? max * load.length / sum : 0;
    }

    /** The largest number of tokens any expert of any layer took. */
    public double maxLoad() {
        double max = 0;
        for (double[] load : loads) for (double l : load) max = Math.max(max, l);
        return max;
    }

    /** Mean tokens per expert, over every layer's experts. */
    public double meanLoad() {
        double sum = 0;
        long count = 0;
        for (double[] load : loads) {
            for (double l : load) sum += l;
            count += load.length;
        }
        return count == 0 ? 0 : (double) sum / count;
    }
}
