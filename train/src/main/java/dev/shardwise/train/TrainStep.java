package dev.shardwise.train;

import dev.shardwise.comm.Communicator;
import dev.shardwise.comm.ReduceOp;
import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.memory.StepArena;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;
import dev.shardwise.model.Gpt;
import dev.shardwise.model.GptPart;
import dev.shardwise.model.MoeStats;
import dev.shardwise.model.ParameterSet;
import dev.shardwise.model.optim.AdamWOptimizer;
import dev.shardwise.model.optim.ParameterUpdate;
import dev.shardwise.parallel.GradientReduction;
import dev.shardwise.parallel.ReplicatedUpdate;
import dev.shardwise.parallel.pipeline.PipelineExecutor;
import dev.shardwise.parallel.pipeline.PipelineSchedule;
import dev.shardwise.parallel.pipeline.ScheduleKind;
import dev.shardwise.parallel.pipeline.Timeline;
import dev.shardwise.parallel.expert.TimedExpertParallel;

import java.util.ArrayList;
import java.util.List;
import java.util.function.Consumer;

/**
 * One optimizer step of a rank, run by the pipeline schedule executor: zero the gradients; run this stage's
 * instruction list (forward of each micro-batch through each chunk, fused with the loss gradient scaled by
 * 1/micro-batches on the head; backward; activations and gradients sent to and received from the neighbouring
 * stages); reduce the gradients (data parallelism, the tied embedding); clip the global norm; AdamW. A single rank
 * is the pipeline of one stage, whose schedule is today's loop: F0 B0 F1 B1 ... then reduce and update.
 * Shared by the {@link Trainer} and the training benchmark so both time the same work.
 */
public final class TrainStep implements AutoCloseable {

    /**
     * Where this rank sits in its pipeline.
     *
     * @param group    the pipeline group (rank = stage), or null for a single stage
     * @param schedule which schedule to run
     * @param stages   p
     * @param chunks   v, model chunks per stage
     */
    public record Pipeline(Communicator group, ScheduleKind schedule, int stages, int chunks) {
        /** The model in one piece on one stage. */
        public static final Pipeline SINGLE = new Pipeline(null, ScheduleKind.ONE_F_ONE_B, 1, 1);

        public int stage() {
            return group == null ? 0 : group.rank();
        }
    }

    private final ParameterSet params;
    private final double gradClip;
    private final ParameterUpdate update;
    private final Pipeline pipeline;
    private final StageModel stageModel;
    private final List<GptPart> chunks;
    private final MemoryPool pool;
    private final Tensor lossScalar;            // [1] f64, the loss summed over stages
    private final List<Tensor> extraBatches = new ArrayList<>();   // micro-batches 1.. of a step, i32 [B, T+1]
    private PipelineSchedule schedule;          // built for the step's micro-batch count
    private PipelineExecutor executor;
    private StepArena evaluationArena;
    private PipelineExecutor.Step lastStep;     // what the executor did in the last step, for timelines
    private long lastStepStartNs;               // System.nanoTime() as the executor began it
    private MoeReport lastMoe;                  // the last step's expert load and auxiliary losses; null without MoE
    private final List<ExpertLoadWindow> loadWindows;   // per chunk: its MoE load over the last 50 steps

    /**
     * What one step did.
     *
     * @param loss           mean loss over the micro-batches
     * @param gradNorm       global gradient norm before clipping
     * @param forwardNs      forward compute
     * @param backwardNs     backward compute (with the communication overlapped with it)
     * @param reduceNs       exposed communication: waiting for gradient reductions still in flight after backward,
     *                       the loss mean, and the update's own collectives (ZeRO's all-gather)
     * @param optimizerNs    time clipping and updating
     * @param pipelineWaitNs pipeline-wait: blocked receiving activations and gradients from other stages, and sending
     * @param bubble         the fraction of the pipelined part of the step (forward, backward and the transfers between
     *                       them; not the gradient reduction or the optimizer) this stage spent waiting on others
     */
    public record Result(double loss, double gradNorm, long forwardNs, long backwardNs, long reduceNs, long optimizerNs,
                         long pipelineWaitNs, double bubble) {
        public long totalNs() {
            return forwardNs + backwardNs + reduceNs + optimizerNs + pipelineWaitNs;
        }
    }

    /** A single-rank step with {@code optimizer}. */
    public TrainStep(Gpt model, AdamWOptimizer optimizer, MemoryPool pool, double gradClip) {
        this(model, optimizer, pool, gradClip, GradientReduction.NONE);
    }

    /** A step whose gradients and loss are combined over replicas by {@code reduction} before {@code optimizer} runs. */
    public TrainStep(Gpt model, AdamWOptimizer optimizer, MemoryPool pool, double gradClip, GradientReduction reduction) {
        this(model, pool, gradClip, new ReplicatedUpdate(model.parameters(), optimizer, reduction));
    }

    /** A step whose update (reduction, clipping, optimizer; ZeRO or not) is {@code update}. */
    public TrainStep(Gpt model, MemoryPool pool, double gradClip, ParameterUpdate update) {
        this(model.parameters(), List.of(model.part()), pool, gradClip, update, Pipeline.SINGLE);
    }

    /**
     * A step of one pipeline stage.
     *
     * @param params   the stage's parameters
     * @param chunks   the stage's model chunks (chunk c is model part c·p + stage)
     * @param update   the stage's update (its reduction over the data-parallel group, ZeRO or not, the tied sum)
     * @param pipeline the pipeline group and schedule
     */
    public TrainStep(ParameterSet params, List<GptPart> chunks, MemoryPool pool, double gradClip, ParameterUpdate update,
                     Pipeline pipeline) {
        if (chunks.size() != pipeline.chunks()) {
            throw new IllegalArgumentException(chunks.size() + " model chunks for a pipeline of " + pipeline.chunks() + " per stage");
        }
        this.params = params;
        this.gradClip = gradClip;
        this.update = update;
        this.pipeline = pipeline;
        this.chunks = List.copyOf(chunks);
        this.loadWindows = chunks.stream().map(c -> new ExpertLoadWindow()).toList();
        this.pool = pool;
        this.stageModel = new StageModel(chunks, update, pool, params.dtype());
        this.lossScalar = Tensor.allocate(pool, MemoryCategory.BUFFERS, DType.F64, 1);
    }

    /**
     * Runs one step over {@code microBatches} micro-batches; {@code fill} writes the next batch, i32 [B, T+1]
     * (inputs are columns 0..T-1, targets 1..T), into the tensor it is given, once per micro-batch in order.
     *
     * @throws IllegalStateException if the loss or gradient norm is not finite (the update is then skipped)
     */
    public Result run(Tensor batch, int microBatches, Consumer<Tensor> fill, double lr) {
        Tensor[] batches = batches(batch, microBatches);
        for (Tensor b : batches) fill.accept(b);
        params.zeroGrads();
        for (GptPart chunk : chunks) chunk.moe().resetStats();
        params.precision().weightsChanged();   // the last update moved the masters: bf16 copies are remade once, at first use
        double[] loss = new double[1];
        ParameterUpdate.Applied[] applied = new ParameterUpdate.Applied[1];
        stageModel.begin(batches, () -> {
            // the data-parallel mean first: it waits for this rank's reductions in flight, before the pipeline's sum
            loss[0] = sumOverStages(update.mean(stageModel.lossSum() / microBatches));
            if (!Double.isFinite(loss[0])) throw new IllegalStateException("loss " + loss[0]);
        }, () -> applied[0] = update.apply(lr, gradClip));
        PipelineExecutor executor = executor(microBatches);
        PipelineExecutor.Step step = executor.run(stageModel);
        lastStepStartNs = executor.lastOriginNs();
        lastStep = step;
        lastMoe = afterMoeStep();
        long reduceNs = step.reduceNs() + applied[0].communicationNs();
        long pipelineNs = step.waitNs() + step.sendNs();
        long pipelined = step.computeNs() + pipelineNs;
        return new Result(loss[0], applied[0].gradNorm(), step.forwardNs(), step.backwardNs(), reduceNs,
                step.optimizerNs() - applied[0].communicationNs(), pipelineNs, pipelined == 0 ? 0 : (double) pipelineNs / pipelined);
    }

    /** The step's micro-batch tensors: {@code batch} itself, then buffers of its shape. */
    private Tensor[] batches(Tensor batch, int microBatches) {
        while (extraBatches.size() < microBatches - 1) {
            extraBatches.add(Tensor.allocate(pool, MemoryCategory.BUFFERS, DType.I32, batch.shape()));
        }
        Tensor[] out = new Tensor[microBatches];
        out[0] = batch;
        for (int i = 1; i < microBatches; i++) out[i] = extraBatches.get(i - 1);
        return out;
    }

    private PipelineExecutor executor(int microBatches) {
        if (schedule == null || schedule.microBatches() != microBatches) {
            schedule = PipelineSchedule.build(pipeline.schedule(), pipeline.stages(), pipeline.chunks(), microBatches);
            executor = new PipelineExecutor(pipeline.group(), schedule, pipeline.stage());
        }
        return executor;
    }

    /**
     * Whether a zero-bubble schedule's B and W split each chunk's backward (false when the update's hooks forbid
     * it, ZeRO 2 and 3: B then runs the backward whole).
     */
    boolean splitsBackward() {
        return stageModel.splitsBackward();
    }

    /** The schedule the last step ran (for timelines), or null before the first step. */
    public PipelineSchedule schedule() {
        return schedule;
    }

    /**
     * The last step of every stage of this rank's pipeline, gathered on stage 0 (empty on the others): collective
     * over the pipeline group (see {@link StageSteps#gather}).
     *
     * @throws IllegalStateException if no step has run
     */
    public List<PipelineExecutor.Step> gatherLastSteps() {
        if (lastStep == null) throw new IllegalStateException("no step has run yet");
        return StageSteps.gather(pipeline.group(), schedule, lastStep, pool);
    }

    /**
     * The expert-parallel all-to-alls {@code mine} that this rank timed in its last step, with those of every other
     * stage of its pipeline, as timeline spans on stage 0 (empty on the others): collective over the pipeline group
     * (see {@link StageSteps#gatherExchanges}).
     *
     * @throws IllegalStateException if no step has run
     */
    public List<Timeline.Span> gatherLastExchanges(List<TimedExpertParallel.Span> mine) {
        if (lastStep == null) throw new IllegalStateException("no step has run yet");
        return StageSteps.gatherExchanges(pipeline.group(), mine, lastStepStartNs, pool);
    }

    /**
     * The step's MoE figures, and DeepSeek-V3's bias update (after the optimizer, so every replica moves its bias
     * alike; under ZeRO 3 each rank moves the elements of its shard, through the update's addToValues): each layer's
     * load is averaged over the data-parallel replicas first (collective over the data-parallel group, one scalar per
     * expert; then over the pipeline for the figures). Null for a dense model; every rank of a
     * model with MoE calls the same collectives whether or not its stage holds an MoE block.
     */
    private MoeReport afterMoeStep() {
        if (chunks.getFirst().config().moe() == null) return null;
        double aux = 0, dropped = 0, worst = 0, sumOfRatios = 0, sumOfSpreads = 0, layers = 0, maxLoad = 0, meanLoad = 0;
        double windowWorst = 0, windowSumOfRatios = 0;
        for (int c = 0; c < chunks.size(); c++) {
            GptPart chunk = chunks.get(c);
            MoeStats local = chunk.moe().stats();
            List<double[]> loads = new ArrayList<>();
            for (double[] load : local.loads()) {
                double[] mean = new double[load.length];
                for (int e = 0; e < load.length; e++) mean[e] = update.mean(load[e]);
                loads.add(mean);
            }
            double[] spreads = new double[local.spreads().length];
            for (int l = 0; l < spreads.length; l++) spreads[l] = update.mean(local.spreads()[l]);
            chunk.moe().updateBias(loads, update::addToValues);
            ExpertLoadWindow window = loadWindows.get(c);
            window.add(loads);
            windowWorst = Math.max(windowWorst, window.maxOverMean());
            windowSumOfRatios += window.sumOfMaxOverMean();
            for (double spread : spreads) sumOfSpreads += Math.sqrt(spread);
            MoeStats averaged = new MoeStats(update.mean(local.auxLoss()), loads, spreads, local.dropped(), local.assignments());
            aux += averaged.auxLoss();
            dropped += update.mean(local.dropped());
            worst = Math.max(worst, averaged.maxOverMean());
            sumOfRatios += averaged.sumOfMaxOverMean();
            layers += averaged.layers();
            maxLoad = Math.max(maxLoad, averaged.maxLoad());
            meanLoad = Math.max(meanLoad, averaged.meanLoad());   // the same in every MoE layer: tokens·k/E
        }
        double allLayers = Math.max(1, sumOverStages(layers));
        double meanOverLayers = sumOverStages(sumOfRatios) / allLayers;
        return new MoeReport(sumOverStages(aux), reduceOverStages(worst, ReduceOp.MAX), meanOverLayers, reduceOverStages(maxLoad, ReduceOp.MAX),
                reduceOverStages(meanLoad, ReduceOp.MAX), sumOverStages(dropped), sumOverStages(sumOfSpreads) / allLayers,
                reduceOverStages(windowWorst, ReduceOp.MAX), sumOverStages(windowSumOfRatios) / allLayers);
    }

    /** The last step's expert load and auxiliary losses, or null for a dense model or before the first step. */
    public MoeReport lastMoe() {
        return lastMoe;
    }

    /** {@code value} summed over the pipeline's stages (the loss lives on the last). */
    private double sumOverStages(double value) {
        return reduceOverStages(value, ReduceOp.SUM);
    }

    private double reduceOverStages(double value, ReduceOp op) {
        if (pipeline.group() == null) return value;
        lossScalar.set(value, 0);
        pipeline.group().allReduce(lossScalar, op);
        return lossScalar.getDouble(0);
    }

    /**
     * Mean loss of a [B, T+1] batch without gradients. Every stage of a pipeline calls it with the same batch: the
     * activations travel forward stage by stage, chunk by chunk, and every stage gets the head's loss.
     */
    public double evaluate(Tensor batch) {
        if (evaluationArena == null) evaluationArena = new StepArena(pool);
        params.precision().weightsChanged();
        int p = pipeline.stages(), stage = pipeline.stage();
        double loss = 0;
        try {
            Tensor activation = null;
            for (int c = 0; c < chunks.size(); c++) {
                GptPart part = chunks.get(c);
                if (!part.span().embedding() && p > 1) {   // the previous part's output, from the previous stage
                    activation = evaluationArena.allocateForOverwrite(params.dtype(),
                            part.activationRows(batch.dim(0), batch.dim(1) - 1), part.config().hidden());
                    pipeline.group().receive(activation, (stage + p - 1) % p, EVALUATION_TAG + c);
                }
                GptPart.Pass pass = part.forward(evaluationArena, inputs(batch), targets(batch), activation, false, 1);
                if (part.span().head()) {
                    loss = pass.loss();
                } else if (p > 1) {
                    int to = (stage + 1) % p;
                    pipeline.group().send(pass.output(), to, EVALUATION_TAG + c + (stage == p - 1 ? 1 : 0));
                    activation = null;
                } else {
                    activation = pass.output();
                }
            }
        } finally {
            evaluationArena.reset();
        }
        return sumOverStages(loss);
    }

    /** Message tags of evaluation's forward-only pipeline: the receiving chunk's index is added. */
    private static final int EVALUATION_TAG = 8_000;

    /** Frees the activation memory and the step's buffers. */
    @Override
    public void close() {
        stageModel.close();
        if (evaluationArena != null) evaluationArena.close();
        for (Tensor t : extraBatches) t.close();
        lossScalar.close();
    }

    /** Columns 0..T-1 of a [B, T+1] batch. */
    static Tensor inputs(Tensor batch) {
        return batch.slice(1, 0, batch.dim(1) - 1);
    }

    /** Columns 1..T of a [B, T+1] batch. */
    static Tensor targets(Tensor batch) {
        return batch.slice(1, 1, batch.dim(1) - 1);
    }
}
