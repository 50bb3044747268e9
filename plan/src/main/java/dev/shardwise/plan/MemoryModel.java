package dev.shardwise.plan;

import dev.shardwise.model.Recompute;
import dev.shardwise.parallel.ParallelLayout;
import dev.shardwise.parallel.pipeline.Instruction;
import dev.shardwise.parallel.pipeline.PipelineSchedule;
import dev.shardwise.parallel.pipeline.ScheduleKind;

import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * Peak bytes per device of a layout: mixed-precision training with Adam (Rajbhandari et al. 2020's 2 + 2 + 12
 * bytes per parameter: 16-bit weights and gradients, fp32 master weights and two moments), divided over the dp
 * group by ZeRO stage (1: optimizer state, 2: + gradients, 3: + weights); activations per Korthikanti et al. 2022
 * Table 2, per block and micro-batch in 16-bit,
 * <pre>
 *   none:       s·b·h·(10 + 24/t + 5·a·s/(h·t))      sp: s·b·h·(34 + 5·a·s/h)/t
 *   selective:  s·b·h·(10 + 24/t)                      sp: s·b·h·34/t
 *   full:       2·s·b·h (the block's input)            sp: 2·s·b·h/t
 * </pre>
 * (for f = 4h; the 24 is 8 + 4f/h in general), times the micro-batch chunks a stage holds at once, counted on the
 * schedule's own instruction lists (a Forward adds one, a Backward or BackwardWeight frees it), plus the
 * recompute working set of one block, the last stage's fp32 logits, the point-to-point buffers, ZeRO 3's gathered
 * block and the reserve of {@link CostParameters#reservedBytes}. The first and the last stage are checked; the
 * larger is reported. Expert parameters (E/ep experts per MoE block on a rank) are sharded by ZeRO over their
 * expert-data-parallel group of dp/ep ranks, the rest over dp.
 */
final class MemoryModel {
    private static final double WEIGHT_BYTES = 2, GRADIENT_BYTES = 2, OPTIMIZER_BYTES = 12;

    private final ModelSpec model;
    private final ClusterSpec cluster;
    private final CostParameters parameters;
    private final Map<List<Integer>, int[]> inFlight = new HashMap<>();

    MemoryModel(ModelSpec model, ClusterSpec cluster, CostParameters parameters) {
        this.model = model;
        this.cluster = cluster;
        this.parameters = parameters;
    }

    /**
     * The largest stage's peak with m micro-batches per step: of the first and last stages when the blocks split
     * evenly (the others hold fewer chunks in flight and no embedding or logits), else of every stage.
     */
    MemoryBreakdown peak(ParallelLayout layout, ScheduleKind schedule, int m) {
        checkDivisible(model, layout);
        int p = layout.pp();
        int[] split = LayerSplit.of(model.layers(), p * layout.vpp());
        int[] live = inFlight(schedule, p, layout.vpp(), m);
        boolean even = model.layers() % split.length == 0;
        MemoryBreakdown peak = null;
        for (int stage = 0; stage < p; stage++) {
            if (even && stage != 0 && stage != p - 1) continue;
            MemoryBreakdown b = stage(layout, split, stage, live[stage]);
            if (peak == null || b.total() > peak.total()) peak = b;
        }
        return peak;
    }

    private MemoryBreakdown stage(ParallelLayout layout, int[] split, int stage, int liveChunks) {
        int d = layout.dp(), t = layout.tp(), zero = layout.zeroStage();
        double experts = stageExpertParameters(model, layout, split, stage);
        double shared = stageParameters(model, layout, split, stage) - experts;
        // ZeRO shards the shared parameters' state over dp, the experts' over their expert-data-parallel group.
        double edp = (double) d / layout.ep();
        double weights = WEIGHT_BYTES * (zero >= 3 ? shared / d + experts / edp : shared + experts);
        double gradients = GRADIENT_BYTES * (zero >= 2 ? shared / d + experts / edp : shared + experts);
        double optimizer = OPTIMIZER_BYTES * (zero >= 1 ? shared / d + experts / edp : shared + experts);
        double saved = blockActivationBytes(model, layout, layout.recompute());
        double activations = (double) liveChunks * LayerSplit.largestChunk(split, layout.pp(), stage) * saved;
        if (layout.recompute() != Recompute.NONE) {
            activations += blockActivationBytes(model, layout, Recompute.NONE) - saved;   // one block rebuilt in backward
        }
        double tokens = (double) layout.microBatch() * model.seq();
        if (stage == layout.pp() - 1) activations += tokens * model.vocab() / t * 4;      // fp32 logits, one micro-batch
        double buffers = parameters.reservedBytes() + 2 * tokens * model.hidden() * WEIGHT_BYTES;  // send + receive
        if (zero >= 3) buffers += blockParametersPerRank(model, layout) * WEIGHT_BYTES;   // one gathered block
        return new MemoryBreakdown(weights, gradients, optimizer, activations, buffers, stage);
    }

    /**
     * Bytes one block saves for backward for one micro-batch under {@code recompute} (the table above), with two
     * corrections: grouped-query attention saves K and V for kv of the a heads (4·(1 − kv/a)·s·b·h bytes less, the
     * 24 counting K and V at 2·s·b·h each), and an MoE block keeps its MLP's two f-wide tensors and its input for each
     * of the topK copies of a token (topK·(4f/h + 2)·s·b·h in place of 4f/h·s·b·h; the router's E scores per token are
     * negligible): the f-wide tensors split by t, the dispatched copies not (every tp rank routes and dispatches the
     * same tokens, under sequence parallelism the gathered sequence); MoE blocks are averaged in at their fraction
     * 1/moeEvery. A gated (SwiGLU) MLP keeps three f-wide
     * tensors instead of two (6f/h).
     */
    static double blockActivationBytes(ModelSpec model, ParallelLayout layout, Recompute recompute) {
        double t = layout.tp(), s = model.seq(), b = layout.microBatch(), h = model.hidden(), a = model.heads();
        double sbh = s * b * h;
        double mlp = 2.0 * model.mlpMatrices() * model.ffnHidden() / h;     // gated: gate, up and their product
        double split = 8 + (1 - model.moeFraction()) * mlp + model.moeFraction() * model.topK() * mlp   // 24 for f = 4h, dense
                - 4 * (1 - (double) model.kvHeads() / model.heads());
        double dispatched = model.moeFraction() * model.topK() * 2;   // whole on every tp rank, with or without sp
        double scores = 5 * a * s / h;
        boolean sp = layout.sequenceParallel();
        return switch (recompute) {
            case NONE -> sp ? sbh * ((10 + split + scores) / t + dispatched) : sbh * (10 + (split + scores) / t + dispatched);
            case SELECTIVE -> sp ? sbh * ((10 + split) / t + dispatched) : sbh * (10 + split / t + dispatched);
            case FULL -> sp ? 2 * sbh / t : 2 * sbh;
        };
    }

    /** One block's parameters on one rank: its shared ones over t, its experts over t·ep. */
    static double blockParametersPerRank(ModelSpec model, ParallelLayout layout) {
        return model.blockSharedParameters() / layout.tp() + model.blockExpertParameters() / ((double) layout.tp() * layout.ep());
    }

    /**
     * Parameters one rank of {@code stage} holds before ZeRO: its blocks' ({@link LayerSplit}; shared ones /t, experts
     * /(t·ep)), plus the token embedding (V·h/t) and positions (s·h) on the first stage, the tied head's copy (V·h/t)
     * and final norm on the last.
     */
    static double stageParameters(ModelSpec model, ParallelLayout layout, int[] split, int stage) {
        int p = layout.pp(), t = layout.tp();
        double params = LayerSplit.stageBlocks(split, p, stage) * blockParametersPerRank(model, layout);
        double embedding = (double) model.vocab() * model.hidden() / t;
        if (stage == 0) params += embedding + (double) model.seq() * model.hidden();
        if (stage == p - 1) params += (p > 1 ? embedding : 0) + 2.0 * model.hidden();
        return params;
    }

    /** The part of {@link #stageParameters} that are expert weights, E/ep experts per MoE block, each /t. */
    static double stageExpertParameters(ModelSpec model, ParallelLayout layout, int[] split, int stage) {
        return LayerSplit.stageBlocks(split, layout.pp(), stage) * model.blockExpertParameters() / ((double) layout.tp() * layout.ep());
    }

    /**
     * @throws IllegalArgumentException naming the sizes and the valid choices if t does not divide heads, ffn
     *                                  hidden or vocab, t and kv_heads do not divide one another, ep does not divide
     *                                  the experts (or is above 1 for a dense model), or p·v exceeds the layers
     */
    static void checkDivisible(ModelSpec model, ParallelLayout layout) {
        int t = layout.tp();
        if (model.heads() % t != 0 || model.ffnHidden() % t != 0 || model.vocab() % t != 0) {
            throw new IllegalArgumentException("tp=" + t + " must divide heads=" + model.heads() + ", ffn_hidden="
                    + model.ffnHidden() + " and vocab=" + model.vocab() + " of model " + model.name() + "; use a tp that divides all three");
        }
        if (model.kvHeads() % t != 0 && t % model.kvHeads() != 0) {
            throw new IllegalArgumentException("tp=" + t + " and kv_heads=" + model.kvHeads() + " of model " + model.name()
                    + " do not divide one another: key/value heads are either split over tp or replicated on tp/kv_heads ranks each");
        }
        int ep = layout.ep();
        if (ep > 1 && (!model.isMoe() || model.experts() % ep != 0)) {
            throw new IllegalArgumentException("ep=" + ep + " must divide experts=" + model.experts() + " of model " + model.name()
                    + (model.isMoe() ? "; use an ep that divides the experts" : "; a dense model has no experts to spread, use ep=1"));
        }
        int parts = layout.pp() * layout.vpp();
        if (parts > model.layers()) {
            throw new IllegalArgumentException("pp·vpp = " + layout.pp() + "·" + layout.vpp() + " model chunks exceed the layers="
                    + model.layers() + " of model " + model.name() + "; every chunk needs a block, use pp·vpp of at most the layers");
        }
    }

    /**
     * Micro-batch chunks alive at once on each stage, counted on the built lists. The count
     * stops growing once m reaches 2p (interleaved warm-up is (p−1)·2 + (v−1)·p chunks, below 2p·v; checked
     * for p up to 16 and v up to 8 against m = 8p), so lists with m above 2p are counted at m = 2p, a multiple of p
     * as interleaving needs.
     */
    private int[] inFlight(ScheduleKind kind, int p, int v, int m) {
        int counted = kind != ScheduleKind.GPIPE && m > 2 * p ? 2 * p : m;
        return inFlight.computeIfAbsent(List.of(kind.ordinal(), p, v, counted), key -> {
            PipelineSchedule s = PipelineSchedule.build(kind, p, v, counted);
            int[] live = new int[p];
            for (int stage = 0; stage < p; stage++) live[stage] = maxLive(s.program(stage));
            return live;
        });
    }

    private static int maxLive(List<Instruction> program) {
        int live = 0, max = 0;
        for (Instruction i : program) {
            switch (i) {
                case Instruction.Forward f -> max = Math.max(max, ++live);
                case Instruction.Backward b -> live--;
                case Instruction.BackwardWeight w -> live--;
                case Instruction.BackwardInput b -> { }
                case Instruction.SendActivation s -> { }
                case Instruction.ReceiveActivation r -> { }
                case Instruction.SendGradient s -> { }
                case Instruction.ReceiveGradient r -> { }
                case Instruction.ReduceGradients r -> { }
                case Instruction.OptimizerStep o -> { }
            }
        }
        return max;
    }
}
