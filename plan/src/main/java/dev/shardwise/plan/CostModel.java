package dev.shardwise.plan;

import dev.shardwise.model.Recompute;
import dev.shardwise.parallel.ParallelLayout;
import dev.shardwise.parallel.pipeline.Instruction;
import dev.shardwise.parallel.pipeline.PipelineSchedule;
import dev.shardwise.parallel.pipeline.ScheduleKind;

/**
 * Predicts one layout's training-step time on a cluster: prices every instruction of the pipeline schedule the
 * runtime executes ({@link PipelineSchedule#build}) and simulates the lists ({@link PipelineSchedule#simulate}).
 *
 * <p>Compute. A block's forward on one tp rank, micro-batch b, M = b·s tokens, runs the GEMMs (M, 3h/t, h) QKV,
 * (M, h, h/t) projection, (M, f/t, h) and (M, h, f/t) MLP, and b·a/t batched (s, s, h/a) and (s, h/a, s)
 * attention GEMMs: 8Msh... in all 2M(4h² + 2hf)/t + 4bs²h/t FLOPs (Narayanan et al. 2021's 24bsh² + 4bs²h for
 * f = 4h). Grouped-query attention narrows the QKV GEMM to (a + 2kv)·hd/t columns (kv heads replicated, one per
 * rank, when kv &lt; t); a gated MLP runs its gate and up products as one GEMM of width 2f/t; an MoE block runs a
 * router GEMM (M, E, h) and, balanced, its E/ep local experts' GEMMs over ep·M·topK/E rows each (thin when experts
 * are many), and its dispatch and combine all-to-alls over the ep group forward and backward (MoE blocks averaged in
 * at their fraction of the layers). Each GEMM (M, N, K) runs at {@link CostParameters#gemmEfficiency} of peak; backward runs the data
 * gradient (M, K, N) and weight gradient (K, N, M) of each, twice the forward's FLOPs. Element-wise kernels move
 * twice the activation bytes Korthikanti et al. 2022 count per block forward, four times backward, at the memory
 * bandwidth. Full recompute adds one block forward to each backward, selective the attention core.
 *
 * <p>Communication. Per block, tensor parallelism runs two all-reduces of b·s·h 16-bit values forward and two
 * backward (under sequence parallelism an all-gather and a reduce-scatter each, the same ring volume), plus two
 * more for a full-recompute forward, on the tp group (stride 1). A stage boundary sends b·s·h/t values per tp rank
 * (Megatron's scatter/gather over the tp ranks' own NICs) and all-gathers them inside the node unless sequence
 * parallel. The data-parallel group (stride t) all-reduces the stage's 16-bit gradients once per step (ZeRO 1:
 * reduce-scatter then all-gather, the same volume), overlapped with the last micro-batch's backward; under ZeRO 2
 * and 3 gradients stay sharded, so each micro-batch reduce-scatters them, overlapped with its own backward, and the
 * weights are all-gathered once per step (ZeRO 2) or before each micro-batch's forward and backward (ZeRO 3),
 * exposed. The first and
 * last stages all-reduce the tied embedding's gradient. Expert gradients are reduced over the expert-data-parallel
 * group (dp/ep ranks at stride t·ep) instead. The optimizer moves 28 bytes per local parameter.
 *
 * <p>Not thread-safe (it caches in-flight counts); make one per thread.
 */
public final class CostModel {
    private static final double BYTES16 = 2;
    /** Adam with fp32 master weights: read param, m, v (4 each) and the 16-bit gradient, write all and the 16-bit copy. */
    private static final double OPTIMIZER_BYTES_PER_PARAM = 28;

    private final ModelSpec model;
    private final ClusterSpec cluster;
    private final CostParameters parameters;
    private final Collectives collectives;
    private final MemoryModel memoryModel;

    /** A cost model of {@code model} on {@code cluster} with {@code parameters}. */
    public CostModel(ModelSpec model, ClusterSpec cluster, CostParameters parameters) {
        this.model = model;
        this.cluster = cluster;
        this.parameters = parameters;
        this.collectives = new Collectives(cluster, parameters);
        this.memoryModel = new MemoryModel(model, cluster, parameters);
    }

    /** The model this prices. */
    public ModelSpec model() {
        return model;
    }

    /** The cluster this prices on. */
    public ClusterSpec cluster() {
        return cluster;
    }

    /**
     * Prices {@code layout} under {@code schedule} by simulating the schedule's instruction lists.
     *
     * @throws IllegalArgumentException naming the sizes and a fix if the layout cannot run the model or batch:
     *                                  t not dividing heads, ffn or vocab; p·v above the layers; d·b not
     *                                  dividing the global batch; more devices than the cluster has; a schedule
     *                                  the builders reject
     */
    public Estimate estimate(ParallelLayout layout, ScheduleKind schedule, long globalBatch) {
        Prices pr = prices(layout, globalBatch);
        PipelineSchedule s = PipelineSchedule.build(schedule, layout.pp(), layout.vpp(), pr.m);
        PipelineSchedule.StageCost cost = (stage, i) -> duration(pr, layout, stage, i);
        double step = s.simulate(cost);
        int slowest = 0;
        double slowestBusy = -1;
        for (int stage = 0; stage < layout.pp(); stage++) {
            double busy = 0;
            for (Instruction i : s.program(stage)) busy += cost.duration(stage, i);
            if (busy > slowestBusy) {
                slowestBusy = busy;
                slowest = stage;
            }
        }
        return assemble(pr, layout, schedule, globalBatch, step, slowest, slowestBusy);
    }

    /**
     * A closed-form estimate for pruning the search: the busiest stage's work plus (p−1) micro-batch-chunks of
     * bubble (the 1F1B bubble; interleaving's is already v times smaller per chunk; ZB-H1's lacks the weight
     * gradients). Within a few percent of
     * {@link #estimate} for evenly split stages.
     */
    Estimate quickEstimate(ParallelLayout layout, ScheduleKind schedule, long globalBatch) {
        Prices pr = prices(layout, globalBatch);
        int p = layout.pp(), v = layout.vpp();
        double worst = 0, worstPart = 0, worstTail = 0;
        int slowest = 0;
        for (int stage = 0; stage < p; stage++) {
            double perMb = 0;
            for (int c = 0; c < v; c++) {
                int part = c * p + stage;
                double partTime = pr.forward(part) + pr.backward(part) + (p > 1 ? 2 * pr.p2p : 0);
                perMb += partTime;
                // ZB-H1 fills the bubble with weight-gradient halves: (p−1)(tF + tB − tW) of Qi et al. 2023 per part.
                double bubblePart = schedule == ScheduleKind.ZB_H1 ? partTime - 2 * pr.blocks[part] * pr.weightGradient : partTime;
                worstPart = Math.max(worstPart, bubblePart);
            }
            double work = pr.m * perMb;
            if (work > worst) {
                worst = work;
                slowest = stage;
            }
            worstTail = Math.max(worstTail, exposedReduction(pr, layout, stage) + pr.optimizer[stage]);
        }
        double step = worst + (p - 1) * worstPart + worstTail;
        return assemble(pr, layout, schedule, globalBatch, step, slowest, worst + worstTail);
    }

    /** The peak memory per device of {@code layout} under {@code schedule}. */
    public MemoryBreakdown memory(ParallelLayout layout, ScheduleKind schedule, long globalBatch) {
        return memoryModel.peak(layout, schedule, microBatches(layout, globalBatch));
    }

    private Estimate assemble(Prices pr, ParallelLayout layout, ScheduleKind schedule, long globalBatch, double step,
                              int slowest, double slowestBusy) {
        int p = layout.pp(), v = layout.vpp();
        double compute = 0, tp = 0, ep = 0;
        for (int c = 0; c < v; c++) {
            int part = c * p + slowest;
            compute += pr.forward(part) + pr.backward(part);
            tp += pr.blocks[part] * (pr.tpForward + pr.tpBackward) + (part == 0 ? pr.embeddingTp : 0);
            ep += pr.blocks[part] * (pr.epForward + pr.epBackward);
        }
        compute = pr.m * (compute - tp - ep);
        tp *= pr.m;
        ep *= pr.m;
        double p2p = p > 1 ? pr.m * v * 2 * pr.p2p : 0;
        double dp = exposedReduction(pr, layout, slowest);
        double opt = pr.optimizer[slowest];
        double modelFlops = model.modelFlops(globalBatch);
        double s = model.seq(), h = model.hidden();
        double recomputeFlops = switch (layout.recompute()) {
            case NONE -> 0;
            case SELECTIVE -> (double) globalBatch * model.layers() * 4 * s * s * h;
            case FULL -> (double) globalBatch * model.layers() * model.blockForwardFlops();
        };
        MemoryBreakdown mem = memoryModel.peak(layout, schedule, pr.m);
        return new Estimate(layout, schedule, step, compute, tp, ep, p2p, dp, opt, Math.max(0, step - slowestBusy),
                modelFlops, modelFlops + recomputeFlops, devices(layout), cluster.device().flops16(), mem,
                cluster.device().memoryBytes());
    }

    private double duration(Prices pr, ParallelLayout layout, int stage, Instruction instruction) {
        int p = layout.pp();
        return switch (instruction) {
            case Instruction.Forward f -> pr.forward(f.chunk() * p + stage);
            case Instruction.Backward b -> pr.backward(b.chunk() * p + stage);
            case Instruction.BackwardInput b -> pr.backward(b.chunk() * p + stage) - pr.blocks[b.chunk() * p + stage] * pr.weightGradient;
            case Instruction.BackwardWeight w -> pr.blocks[w.chunk() * p + stage] * pr.weightGradient;
            case Instruction.SendActivation s -> pr.p2p;
            case Instruction.SendGradient s -> pr.p2p;
            case Instruction.ReceiveActivation r -> 0.0;
            case Instruction.ReceiveGradient r -> 0.0;
            case Instruction.ReduceGradients r -> exposedReduction(pr, layout, stage);
            case Instruction.OptimizerStep o -> pr.optimizer[stage];
        };
    }

    private double exposedReduction(Prices pr, ParallelLayout layout, int stage) {
        double reduce = pr.reduce[stage];
        if (parameters.overlapGradReduce()) {
            // All-reduce: overlaps the last micro-batch's backward; ZeRO 2/3's reduce-scatters: every micro-batch's.
            double window = 0;
            for (int c = 0; c < layout.vpp(); c++) window += pr.backward(c * layout.pp() + stage);
            if (layout.zeroStage() >= 2) window *= pr.m;
            reduce = Math.max(0, reduce - window);
        }
        return reduce + pr.gather[stage] + pr.embeddingReduce[stage];
    }

    /** Micro-batches per step per pipeline, B / (d·b). @throws IllegalArgumentException if d·b does not divide B */
    static int microBatches(ParallelLayout layout, long globalBatch) {
        long perReplica = (long) layout.dp() * layout.microBatch();
        if (globalBatch % perReplica != 0) {
            throw new IllegalArgumentException("global batch " + globalBatch + " is not a multiple of dp·micro-batch = "
                    + layout.dp() + "·" + layout.microBatch() + "; choose a micro-batch or dp that divides it");
        }
        long m = globalBatch / perReplica;
        if (m > Integer.MAX_VALUE) throw new IllegalArgumentException("global batch " + globalBatch + " gives too many micro-batches");
        return (int) m;
    }

    private int devices(ParallelLayout layout) {
        int n = layout.dp() * layout.tp() * layout.pp();
        if (n > cluster.devices()) {
            throw new IllegalArgumentException("layout dp·tp·pp = " + n + " devices, but cluster " + cluster.name() + " has "
                    + cluster.devices() + "; use fewer ranks or a larger cluster");
        }
        return n;
    }

    private Prices prices(ParallelLayout layout, long globalBatch) {
        int t = layout.tp(), p = layout.pp(), v = layout.vpp(), d = layout.dp();
        devices(layout);
        MemoryModel.checkDivisible(model, layout);
        int m = microBatches(layout, globalBatch);
        double b = layout.microBatch(), s = model.seq(), h = model.hidden(), f = model.ffnHidden(), a = model.heads();
        double vocab = model.vocab();
        double tokens = b * s;
        double hd = h / a;
        boolean sp = layout.sequenceParallel();
        double peak = cluster.device().flops16();
        double memBw = cluster.device().memoryBandwidth() * parameters.memoryEfficiency();

        // Weight GEMMs of a block forward, each (M, N, K) with its count per block (MoE blocks averaged in at their
        // fraction): their forward, data-gradient and weight-gradient times. Key/value heads are split over tp, or
        // replicated (one per rank) when there are fewer than t. An MoE block routes each token to topK of E experts;
        // balanced, each expert gets ep·M·topK/E rows and a rank runs its E/ep experts, M·topK rows in all.
        double kvPerRank = model.kvHeads() >= t ? (double) model.kvHeads() / t : 1;
        double moe = model.moeFraction(), experts = model.experts();
        double expertRows = model.isMoe() ? layout.ep() * tokens * model.topK() / experts : 0;
        // A gated MLP's gate and up products run as one of width 2f.
        double up = (model.mlpMatrices() - 1) * f / t;
        double[][] gemms = {{tokens, (a / t + 2 * kvPerRank) * hd, h, 1}, {tokens, h, h / t, 1},
                {tokens, up, h, 1 - moe}, {tokens, h, f / t, 1 - moe},
                {tokens, experts, h, moe}, {expertRows, up, h, moe * experts / layout.ep()}, {expertRows, h, f / t, moe * experts / layout.ep()}};
        double gemmForward = 0, gemmData = 0, gemmWeight = 0;
        for (double[] g : gemms) {
            if (g[3] == 0) continue;
            gemmForward += g[3] * gemm(g[0], g[1], g[2], peak);
            gemmData += g[3] * gemm(g[0], g[2], g[1], peak);
            gemmWeight += g[3] * gemm(g[2], g[1], g[0], peak);
        }
        double attention = b * a / t * (gemm(s, s, hd, peak) + gemm(s, hd, s, peak));
        double softmaxBytes = 5 * a * s * s * b / t;
        double elementBytes = MemoryModel.blockActivationBytes(model, layout, Recompute.NONE) - softmaxBytes;
        double elementForward = 2 * elementBytes / memBw;
        double softmaxForward = 2 * softmaxBytes / memBw;

        double activation = tokens * h * BYTES16;
        double tpForward = t > 1 ? 2 * collectives.allReduce(activation, t, 1) : 0;
        double tpBackward = tpForward;
        // Expert parallelism: an MoE block's dispatch and combine all-to-alls, topK copies of each token, forward and
        // backward; the ep group is ep consecutive dp ranks (stride t).
        double epForward = model.isMoe() && layout.ep() > 1
                ? moe * 2 * collectives.allToAll(activation * model.topK(), layout.ep(), t) : 0;
        double forward = gemmForward + attention + elementForward + softmaxForward + tpForward + epForward;
        double recompute = switch (layout.recompute()) {
            case NONE -> 0;
            case SELECTIVE -> attention + softmaxForward;
            case FULL -> forward;
        };
        double backward = gemmData + gemmWeight + 2 * attention + 2 * (elementForward + softmaxForward) + tpBackward + epForward
                + recompute;

        // Embedding (first part): gather rows and add positions, dropout; under tp its output is all-reduced.
        double embeddingTp = t > 1 ? collectives.allReduce(activation, t, 1) : 0;
        double embeddingForward = 3 * activation / memBw + embeddingTp;
        double embeddingBackward = 3 * activation / memBw + embeddingTp;
        // Head (last part): final norm, logits GEMM (M, V/t, h), vocab-parallel cross-entropy over fp32 logits.
        double logitsBytes = tokens * vocab / t * 4;
        double headTp = sp && t > 1 ? collectives.allGather(activation, t, 1) : 0;
        double headForward = gemm(tokens, vocab / t, h, peak) + 3 * logitsBytes / memBw + headTp;
        double headBackward = gemm(tokens, h, vocab / t, peak) + gemm(h, vocab / t, tokens, peak) + 3 * logitsBytes / memBw + headTp;

        // One stage boundary: each tp rank sends its 1/t slice over its own NIC, then (without sp) the node all-gathers.
        int boundary = t * d;
        double p2p = collectives.sendReceive(activation / t, boundary) + (sp || t == 1 ? 0 : collectives.allGather(activation, t, 1));

        int[] split = LayerSplit.of(model.layers(), p * v);
        double[] reduce = new double[p], gather = new double[p], embeddingReduce = new double[p], optimizer = new double[p];
        int edp = d / layout.ep();
        for (int stage = 0; stage < p; stage++) {
            double expertParams = MemoryModel.stageExpertParameters(model, layout, split, stage);
            double params = MemoryModel.stageParameters(model, layout, split, stage) - expertParams;
            double grads = params * BYTES16, expertGrads = expertParams * BYTES16;
            // Shared gradients are reduced over dp (stride t), the experts' over their expert-data-parallel group of
            // dp/ep ranks (stride t·ep).
            if (layout.zeroStage() >= 2) {
                // Gradients are kept sharded, so each micro-batch's backward reduce-scatters its gradients; the
                // updated weights are all-gathered once (ZeRO 2) or before each forward and backward (ZeRO 3).
                double once = collectives.allGather(grads, d, t) + collectives.allGather(expertGrads, edp, t * layout.ep());
                reduce[stage] = m * once;
                gather[stage] = once * (layout.zeroStage() == 3 ? 2.0 * m : 1);
            } else {
                reduce[stage] = collectives.allReduce(grads, d, t) + collectives.allReduce(expertGrads, edp, t * layout.ep());
            }
            if (p > 1 && (stage == 0 || stage == p - 1)) {
                embeddingReduce[stage] = collectives.allReduce(vocab * h / t * BYTES16, 2, t * d * (p - 1));
            }
            double local = layout.zeroStage() >= 1 ? params / d + expertParams / edp : params + expertParams;
            optimizer[stage] = local * OPTIMIZER_BYTES_PER_PARAM / memBw;
        }
        return new Prices(m, split, p * v, forward, backward, gemmWeight, tpForward, tpBackward + (layout.recompute() == Recompute.FULL ? tpForward : 0),
                epForward, epForward + (layout.recompute() == Recompute.FULL ? epForward : 0),
                embeddingForward, embeddingBackward, embeddingTp, headForward, headBackward, p2p, reduce, gather, embeddingReduce, optimizer);
    }

    private double gemm(double m, double n, double k, double peak) {
        return 2 * m * n * k / (peak * parameters.gemmEfficiency(m, n, k));
    }

    /** Per-instruction prices of one layout, seconds per micro-batch unless named otherwise. */
    private record Prices(int m, int[] blocks, int parts, double blockForward, double blockBackward, double weightGradient,
                          double tpForward, double tpBackward, double epForward, double epBackward, double embeddingForward, double embeddingBackward,
                          double embeddingTp, double headForward, double headBackward, double p2p, double[] reduce,
                          double[] gather, double[] embeddingReduce, double[] optimizer) {
        double forward(int part) {
            return blocks[part] * blockForward + (part == 0 ? embeddingForward : 0) + (part == parts - 1 ? headForward : 0);
        }

        double backward(int part) {
            return blocks[part] * blockBackward + (part == 0 ? embeddingBackward : 0) + (part == parts - 1 ? headBackward : 0);
        }
    }
}
