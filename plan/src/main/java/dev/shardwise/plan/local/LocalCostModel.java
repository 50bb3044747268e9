package dev.shardwise.plan.local;

import dev.shardwise.model.ExpertParallelRank;
import dev.shardwise.model.Gpt;
import dev.shardwise.model.GptPart;
import dev.shardwise.model.ModelConfig;
import dev.shardwise.model.MoeConfig;
import dev.shardwise.model.ParameterSet;
import dev.shardwise.model.PipelineCut;
import dev.shardwise.model.TensorParallelRank;
import dev.shardwise.parallel.ParallelLayout;
import dev.shardwise.parallel.ZeroMemory;
import dev.shardwise.parallel.ZeroStage;
import dev.shardwise.parallel.pipeline.Instruction;
import dev.shardwise.parallel.pipeline.PipelineSchedule;
import dev.shardwise.parallel.pipeline.ScheduleKind;

import java.util.ArrayList;
import java.util.List;

/**
 * Predicts a layout's training step on this machine from a {@link LocalProfile}: each stage's parts (the cut the
 * trainer makes, {@link PipelineCut#balanced}) priced from the profiled embedding, blocks and head, the very
 * instruction lists the runtime executes simulated ({@link PipelineSchedule#simulate}), and the data-parallel
 * reduction, ZeRO's gathers and the optimizer added at the step's end, where the local backend runs them (its
 * collectives use the rank threads' own cores, so they overlap nothing). Memory: the parameters, gradients and AdamW
 * state exactly as the ranks allocate them ({@link ZeroStage}'s padded shards), plus the step arenas the schedule keeps
 * in flight, each holding the footprint the profile measured for a pass of the stage's chunk. Under tensor parallelism
 * the pieces are those the profile measured split the same way (their collectives inside), the parameters a tp rank's
 * slices, and what a stage sends a sequence-parallel shard; under expert parallelism the MoE blocks are the
 * profile's ep pieces (all-to-alls inside), a rank holds E/ep experts, and the experts' gradients and AdamW state (at
 * ZeRO 2 and 3 also their gradients' and weights' shards) are reduced, gathered and sharded over the ranks that hold
 * the same experts, the dense parameters' over dp.
 */
public final class LocalCostModel {
    private final ModelConfig config;
    private final LocalProfile profile;

    /** A cost model of {@code config} on {@code profile} (its ranks, micro-batch and sequence length). */
    public LocalCostModel(ModelConfig config, LocalProfile profile) {
        this.config = config;
        this.profile = profile;
    }

    /**
     * The step time and per-rank peak memory of {@code layout} under {@code schedule} for {@code globalBatch} sequences.
     *
     * @throws IllegalArgumentException if the layout does not match the profile (ranks, micro-batch, a tensor- or
     *                                  expert-parallel split it did not profile), or dp·micro-batch does not divide the
     *                                  global batch
     */
    public LocalEstimate estimate(ParallelLayout layout, ScheduleKind schedule, long globalBatch) {
        if (layout.worldSize() != profile.ranks() || layout.microBatch() != profile.microBatch()) {
            throw new IllegalArgumentException("layout " + layout + " needs a profile of " + layout.worldSize() + " ranks at micro-batch "
                    + layout.microBatch() + "; this one has " + profile.ranks() + " ranks at micro-batch " + profile.microBatch());
        }
        long perReplica = (long) layout.dp() * layout.microBatch();
        if (globalBatch % perReplica != 0) {
            throw new IllegalArgumentException("global batch " + globalBatch + " is not a multiple of dp·micro-batch = " + perReplica);
        }
        int m = Math.toIntExact(globalBatch / perReplica);
        LocalProfile.Pieces pieces = profile.pieces(layout);
        int p = layout.pp(), v = layout.vpp();
        List<GptPart.Span> parts = PipelineCut.balanced(config, profile.seq(), p * v);
        boolean split = layout.zeroStage() < 2;   // ZeRO 2/3 run ZB-H1's B whole (their unit buffers cannot stay open to W)
        PipelineSchedule program = PipelineSchedule.build(schedule, p, v, m);
        double sendSeconds = profile.collectiveLatencySeconds() + stageOutputBytes(layout) * profile.sendSecondsPerByte();
        double[] reduce = new double[p], optimizer = new double[p];
        ParameterSet.Builder[] declared = new ParameterSet.Builder[p];
        for (int stage = 0; stage < p; stage++) {
            declared[stage] = declare(layout, parts, stage);
            long params = declared[stage].count();   // before padding
            boolean embeddingAndHead = p == 1;   // one stage holds the embedding and the tied head, which gathers it again
            reduce[stage] = reduction(layout, declared[stage], params, m, embeddingAndHead)
                    + (p > 1 && (stage == 0 || stage == p - 1) ? embeddingSwap(layout) : 0);
            optimizer[stage] = optimizerElements(layout, declared[stage]) * profile.optimizerSecondsPerParameter()
                    + gradientElements(layout, declared[stage], params) * profile.gradientSecondsPerElement();
        }
        PipelineSchedule.StageCost cost = (stage, instruction) -> switch (instruction) {
            case Instruction.Forward f -> price(parts.get(f.chunk() * p + stage), pieces, layout, Phase.FORWARD, split);
            case Instruction.Backward b -> price(parts.get(b.chunk() * p + stage), pieces, layout, Phase.BACKWARD, split);
            case Instruction.BackwardInput b -> price(parts.get(b.chunk() * p + stage), pieces, layout, Phase.INPUT, split);
            case Instruction.BackwardWeight w -> price(parts.get(w.chunk() * p + stage), pieces, layout, Phase.WEIGHT, split);
            case Instruction.SendActivation s -> sendSeconds;
            case Instruction.SendGradient s -> sendSeconds;
            case Instruction.ReceiveActivation r -> 0.0;
            case Instruction.ReceiveGradient r -> 0.0;
            case Instruction.ReduceGradients r -> reduce[stage];
            case Instruction.OptimizerStep o -> optimizer[stage];
        };
        double step = program.simulate(cost);
        int slowest = 0;
        double slowestBusy = -1, compute = 0;
        for (int stage = 0; stage < p; stage++) {
            double busy = 0, work = 0;
            for (Instruction i : program.program(stage)) {
                double d = cost.duration(stage, i);
                busy += d;
                if (i instanceof Instruction.Forward || i instanceof Instruction.Backward || i instanceof Instruction.BackwardInput
                        || i instanceof Instruction.BackwardWeight) work += d;
            }
            if (busy > slowestBusy) {
                slowestBusy = busy;
                slowest = stage;
                compute = work;
            }
        }
        long[] state = new long[p], activations = new long[p];
        for (int stage = 0; stage < p; stage++) {
            state[stage] = stateBytes(layout, declared[stage]);
            activations[stage] = activationPeak(layout, pieces, program, parts, stage);
        }
        return new LocalEstimate(layout, schedule, step, compute, Math.max(0, step - slowestBusy), reduce[slowest],
                optimizer[slowest], state, activations);
    }

    private enum Phase { FORWARD, BACKWARD, INPUT, WEIGHT }

    /** One part's seconds for one micro-batch in {@code phase}. */
    private static double price(GptPart.Span span, LocalProfile.Pieces pieces, ParallelLayout layout, Phase phase, boolean split) {
        double total = 0;
        if (span.embedding()) total += seconds(pieces.embedding(), phase, split);
        total += span.blocks() * seconds(pieces.block().get(layout.recompute()), phase, split);
        if (span.head()) total += seconds(pieces.head(), phase, split);
        return total;
    }

    /** The activations a stage sends per micro-batch: [B·T, C] in fp32, a tp rank's T/tp positions under sequence parallelism. */
    private double stageOutputBytes(ParallelLayout layout) {
        double rows = (double) layout.microBatch() * profile.seq() / (layout.sequenceParallel() ? layout.tp() : 1);
        return rows * config.hidden() * 4;
    }

    private static double seconds(LocalProfile.Part part, Phase phase, boolean split) {
        return switch (phase) {
            case FORWARD -> part.forwardSeconds();
            case BACKWARD -> part.backwardSeconds();
            case INPUT -> split ? part.backwardInputSeconds() : part.backwardSeconds();
            case WEIGHT -> split ? part.backwardWeightSeconds() : 0;
        };
    }

    /**
     * The data-parallel reduction of a stage's {@code params} gradients per step, at the rates the profile measured:
     * one all-reduce (ZeRO 0 and 1; ZeRO 1's reduce-scatter and all-gather move the same bytes); under ZeRO 2 a
     * reduce-scatter of every unit per micro-batch and one all-gather of the updated weights; under ZeRO 3 per
     * micro-batch an all-gather of every unit before forward (the embeddings' twice where the stage's tied head reads
     * them again) and before backward, and the reduce-scatter. Each unit's collective also pays the latency. Under
     * expert parallelism the dense gradients are all-reduced (ZeRO 0, 1) or each unit's dense runs reduce-scattered and
     * gathered (ZeRO 2, 3) over dp, and the experts' over the expert-data-parallel group (ZeroShardedUpdate's
     * segments), each run by a collective of its own.
     */
    private double reduction(ParallelLayout layout, ParameterSet.Builder declared, long params, int m, boolean embeddingAndHead) {
        if (layout.dp() == 1) return 0;
        double latency = profile.collectiveLatencySeconds();
        long experts = layout.ep() > 1 ? expertElements(declared) : 0;
        double share = expertGroupShare(layout);
        if (layout.zeroStage() < 2) {
            if (layout.ep() == 1) return 4.0 * params * profile.allReduceSecondsPerByte() + latency;
            // the dense gradients all-reduced over dp, the experts' over the ranks holding the same experts
            return 4.0 * (params - experts) * profile.allReduceSecondsPerByte() + latency
                    + (share > 0 ? 4.0 * experts * share * profile.allReduceSecondsPerByte() + latency : 0);
        }
        // per unit: its dense runs over dp, its expert runs over the expert-data-parallel group (without ep, one dense run)
        double dense = 4.0 * (params - experts), expert = 4.0 * experts * share;
        double runs = declared.segmentCount(false) + (share > 0 ? declared.segmentCount(true) : 0);
        double reduceScatter = (dense + expert) * profile.reduceScatterSecondsPerByte() + runs * latency;
        double allGather = (dense + expert) * profile.allGatherSecondsPerByte() + runs * latency;
        if (layout.zeroStage() == 2) return m * reduceScatter + allGather;
        double again = embeddingAndHead
                ? 4.0 * declared.unitSizes().get(GptPart.EMBEDDINGS) * profile.allGatherSecondsPerByte() + latency : 0;
        return m * (2 * allGather + again + reduceScatter);
    }

    /**
     * What a byte of the experts' collectives costs against a byte of dp's: a ring collective over g ranks moves
     * (g-1)/g of the buffer through each rank, so over the expert-data-parallel group of dp/ep ranks it is
     * ((dp/ep - 1)/(dp/ep)) / ((dp - 1)/dp) of dp's; 0 where that group is one rank (each expert lives on one rank of
     * the dp group: nothing to reduce or gather).
     */
    private static double expertGroupShare(ParallelLayout layout) {
        int dp = layout.dp(), g = layout.expertDp();
        if (layout.ep() == 1) return 1;
        if (g <= 1 || dp <= 1) return 0;
        return ((g - 1.0) / g) / ((dp - 1.0) / dp);
    }

    /** The first and last stages swap the tied embedding's gradient (a tp rank's vocabulary slice): one send each way. */
    private double embeddingSwap(ParallelLayout layout) {
        long rows = Math.ceilDiv(config.vocabSize(), layout.tp());
        return 2 * (profile.collectiveLatencySeconds() + 4.0 * rows * config.hidden() * profile.sendSecondsPerByte());
    }

    /**
     * Parameters, gradients and AdamW state a rank holding {@code declared} allocates (ZeRO's padded shards, as the ranks do),
     * plus ZeRO 2's and 3's whole-unit buffers: a unit's gradient while it is reduce-scattered and the next unit's
     * (two), and under ZeRO 3 also the gathered weights of the unit computing and the one prefetched (two more). Under
     * expert parallelism at ZeRO 2 and 3 (the parameters {@linkplain #declare segmented}) the shards are a rank's padded
     * piece of each dense run over dp and of each expert run over the expert-data-parallel group, as {@code train
     * --dry-run} counts them.
     */
    private long stateBytes(ParallelLayout layout, ParameterSet.Builder declared) {
        int dp = layout.dp(), zero = layout.zeroStage();
        long unitBuffers = zero >= 2 ? (zero == 3 ? 4 : 2) * 4 * declared.largestUnit() : 0;
        if (layout.ep() > 1 && zero >= 2) {
            long all = declared.paddedCount(dp), shard = shardElements(layout, declared);
            return 4 * (zero == 3 ? shard : all) + 4 * shard + 8 * shard + unitBuffers;
        }
        if (layout.ep() > 1) {
            long params = declared.count();
            return 4 * params + 4 * params + 8 * optimizerElements(layout, declared);
        }
        long padded = declared.paddedCount(ZeroStage.of(zero).paddingMultiple(dp));
        return ZeroMemory.of(zero, dp, padded, false).total() + unitBuffers;
    }

    /**
     * Elements of a ZeRO 2 or 3 shard under expert parallelism: the padded dense runs over dp plus the padded expert
     * runs over the expert-data-parallel group ({@code declared} segmented).
     */
    private static long shardElements(ParallelLayout layout, ParameterSet.Builder declared) {
        return declared.paddedCount(layout.dp(), false) / layout.dp() + declared.paddedCount(layout.dp(), true) / layout.expertDp();
    }

    /**
     * The parameters whose AdamW state a rank of a stage holding {@code declared} updates: all at ZeRO 0; at ZeRO 1 and up
     * its share of each run of the flat layout, a dense run's over dp and, under expert parallelism, an expert run's over
     * the expert-data-parallel ranks that hold the same experts (⌈run/n⌉ at ZeRO 1, as the ranks shard them; the padded
     * segments' pieces at ZeRO 2 and 3).
     */
    private static long optimizerElements(ParallelLayout layout, ParameterSet.Builder declared) {
        if (layout.zeroStage() == 0) return declared.count();
        if (layout.ep() == 1) return declared.paddedCount(ZeroStage.of(layout.zeroStage()).paddingMultiple(layout.dp())) / layout.dp();
        if (layout.zeroStage() >= 2) return shardElements(layout, declared);
        return ZeroMemory.expertParallelStateElements(declared.specs(), MoeConfig::isExpertParameter, layout.zeroStage(), layout.dp(),
                layout.expertDp());
    }

    /**
     * The gradient elements a rank zeroes before a step and reads for the clipping norm: all of the stage's at ZeRO 0
     * and 1, its shard (as many as it updates) at ZeRO 2 and 3, whose gradients stay sharded.
     */
    private static long gradientElements(ParallelLayout layout, ParameterSet.Builder declared, long params) {
        return layout.zeroStage() >= 2 ? optimizerElements(layout, declared) : params;
    }

    /** Elements of {@code declared} that belong to routed experts. */
    private static long expertElements(ParameterSet.Builder declared) {
        return declared.specs().stream().filter(s -> MoeConfig.isExpertParameter(s.name())).mapToLong(ParameterSet.Spec::numel).sum();
    }

    /**
     * The parameters of pipeline stage {@code stage} (tp rank 0's slices, ep rank 0's experts): chunk c is part c·pp + stage
     * of {@code parts}; under expert parallelism at ZeRO 2 and 3 {@linkplain ParameterSet.Builder#segmentedBy segmented}
     * into runs of dense parameters and of experts, as the trainer allocates them.
     */
    private ParameterSet.Builder declare(ParallelLayout layout, List<GptPart.Span> parts, int stage) {
        int p = layout.pp(), v = layout.vpp();
        List<GptPart.Span> mine = new ArrayList<>();
        for (int c = 0; c < v; c++) mine.add(parts.get(c * p + stage));
        ParameterSet.Builder declared = Gpt.declare(config, mine, p * v > 1, TensorParallelRank.of(layout.tp(), 0),
                ExpertParallelRank.of(layout.ep(), 0));
        return layout.ep() > 1 && layout.zeroStage() >= 2 ? declared.segmentedBy(MoeConfig::isExpertParameter) : declared;
    }

    /**
     * The activation bytes a rank of {@code stage} holds at its peak: one arena per (micro-batch, chunk) in flight at
     * once on its instruction list (a forward opens one, a backward or W closes it; closed arenas are reused), each
     * holding the largest footprint of the stage's chunks and, in a pipeline, the chunk's input and output-gradient
     * buffers; plus the largest scratch a piece allocates and frees inside its pass.
     */
    private long activationPeak(ParallelLayout layout, LocalProfile.Pieces pieces, PipelineSchedule program, List<GptPart.Span> parts,
                                int stage) {
        int p = layout.pp();
        boolean zeroBubble = program.program(stage).stream().anyMatch(i -> i instanceof Instruction.BackwardWeight);
        boolean split = zeroBubble && layout.zeroStage() < 2;
        long footprint = 0;
        for (int c = 0; c < layout.vpp(); c++) footprint = Math.max(footprint, passBytes(parts.get(c * p + stage), pieces, layout, split));
        if (p > 1) footprint += 2L * (long) stageOutputBytes(layout);
        int live = 0, arenas = 0;
        for (Instruction i : program.program(stage)) {
            switch (i) {
                case Instruction.Forward f -> arenas = Math.max(arenas, ++live);
                case Instruction.Backward b -> live--;
                case Instruction.BackwardWeight w -> live--;
                default -> { }
            }
        }
        long scratch = 0;
        for (int c = 0; c < layout.vpp(); c++) scratch = Math.max(scratch, scratchBytes(parts.get(c * p + stage), pieces, layout));
        return arenas * footprint + scratch;
    }

    /** The largest scratch any piece of {@code span} allocates and frees within its pass (one at a time). */
    private static long scratchBytes(GptPart.Span span, LocalProfile.Pieces pieces, ParallelLayout layout) {
        long s = span.blocks() > 0 ? pieces.block().get(layout.recompute()).scratchBytes() : 0;
        if (span.embedding()) s = Math.max(s, pieces.embedding().scratchBytes());
        if (span.head()) s = Math.max(s, pieces.head().scratchBytes());
        return s;
    }

    /** The bytes one pass of {@code span} allocates: its pieces' footprints, all held until the pass ends. */
    private static long passBytes(GptPart.Span span, LocalProfile.Pieces pieces, ParallelLayout layout, boolean split) {
        return pieces.embedding().bytesOf(span.embedding() ? 1 : 0, split)
                + pieces.block().get(layout.recompute()).bytesOf(span.blocks(), split)
                + pieces.head().bytesOf(span.head() ? 1 : 0, split);
    }
}
