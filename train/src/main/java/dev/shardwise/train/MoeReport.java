package dev.shardwise.train;

/**
 * A step's mixture-of-experts figures for metrics and the progress line, over the whole model (every pipeline stage)
 * and averaged over data-parallel replicas (Switch, Fedus et al. 2021, reports the same load figures).
 *
 * @param auxLoss     the auxiliary losses added to the training objective (α·balance + β·z-loss, summed over the MoE
 *                    layers, averaged over micro-batches); the reported loss is the cross-entropy alone
 * @param maxOverMean the worst layer's largest expert load over its mean load (1 is perfect balance)
 * @param meanOverLayers each MoE layer's largest expert load over its mean load, averaged over the layers
 * @param maxLoad     the largest number of tokens any expert took in the step (per replica)
 * @param meanLoad    mean tokens per expert in the step (per replica)
 * @param dropped     assignments dropped by capacity limits in the step (per replica, all layers)
 * @param routerSpread σ, the RMS spread of a token's router scores about their mean over the experts (in logits),
 *                    averaged over the MoE layers: how sharp the routers are
 * @param windowMaxOverMean    as {@code maxOverMean} for the load summed over the last {@value ExpertLoadWindow#STEPS}
 *                             steps (balance over many batches: {@link ExpertLoadWindow})
 * @param windowMeanOverLayers as {@code meanOverLayers} for that summed load
 */
public record MoeReport(double auxLoss, double maxOverMean, double meanOverLayers, double maxLoad, double meanLoad, double dropped,
                        double routerSpread, double windowMaxOverMean, double windowMeanOverLayers) { }
