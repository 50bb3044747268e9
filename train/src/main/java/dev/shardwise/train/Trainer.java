package dev.shardwise.train;

import dev.shardwise.core.machine.CpuPeak;
import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.memory.ProcessMemory;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;
import dev.shardwise.data.BatchSampler;
import dev.shardwise.model.Gpt;
import dev.shardwise.model.GptPart;
import dev.shardwise.model.PipelineCut;
import dev.shardwise.model.optim.LearningRateSchedule;
import dev.shardwise.comm.Communicator;
import dev.shardwise.comm.LocalCluster;
import dev.shardwise.comm.RankContext;
import dev.shardwise.comm.RankEnvironment;
import dev.shardwise.comm.mpi.MpiCommunicator;
import dev.shardwise.core.exec.ComputePool;
import dev.shardwise.parallel.ProcessGroups;
import dev.shardwise.parallel.ZeroMemory;
import dev.shardwise.parallel.ShardMoments;
import dev.shardwise.parallel.ZeroShardedUpdate;
import dev.shardwise.parallel.ZeroStage;
import dev.shardwise.parallel.StageGradients;
import dev.shardwise.parallel.pipeline.PipelineExecutor;
import dev.shardwise.parallel.pipeline.Timeline;
import dev.shardwise.model.ModelConfig;
import dev.shardwise.core.kernels.onednn.OneDnn;
import dev.shardwise.model.MatmulPrecision;
import dev.shardwise.model.ParameterSet;
import dev.shardwise.model.TensorParallel;
import dev.shardwise.parallel.tensor.CommunicatorTensorParallel;
import dev.shardwise.parallel.expert.CommunicatorExpertParallel;
import dev.shardwise.parallel.expert.TimedExpertParallel;
import dev.shardwise.parallel.ExpertParallelUpdate;
import dev.shardwise.model.ExpertParallel;

import java.io.IOException;
import java.io.PrintStream;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.function.Consumer;

/**
 * Training of a GPT: AdamW with warm-up + cosine learning rate, global-norm clipping, gradient
 * accumulation over micro-batches, periodic validation, checkpoints and {@code --resume} that continues bit
 * for bit, metrics as JSON lines and a loss plot in the run directory.
 *
 * <p>Ranks run one of two ways, chosen in {@link #run}: as threads of this JVM ({@code config.ranks()} of them,
 * the {@code local} backend), or, when a launcher started this process as one of several ({@link RankEnvironment}),
 * as this process being one rank of the job (the {@code mpi} backend). Either way each rank runs
 * {@link #runRank} with its own memory pool and kernel threads, and the results are bit-identical.
 *
 * <p>A rank holds its pipeline stage's model chunks, under tensor parallelism its tp slices of them (Shoeybi et al.
 * 2019; the layout's tp group carries the layers' collectives), under expert parallelism only its E/ep experts of
 * each MoE block (GShard; its ep group exchanges tokens by all-to-alls, {@link ExpertParallelUpdate} reduces), with
 * its ZeRO stage's share of their state over its data-parallel group; every rank of a data-parallel replica reads
 * the same rows of the global batch.
 *
 * <p>Each step: zero the gradients; for each micro-batch run forward (fused with the loss gradient) and
 * backward with loss scale 1/micro-batches; clip; update. Timers split the step into forward, backward and
 * optimizer.
 */
public final class Trainer {

    /**
     * What a finished run reports.
     *
     * @param peakMemoryBytes the leader's (rank 0's) pool peak
     * @param rankPeakBytes   every rank's pool peak in global rank order when the ranks are threads of this JVM; this
     *                        process's alone when it is one rank of a multi-process job
     */
    public record Result(Path runDir, long steps, double trainLoss, double valLoss, double tokensPerSecond, double mfu,
                         long peakMemoryBytes, List<Long> rankPeakBytes) {
        /** This result with every rank's peak from {@code ranks} (the results of all ranks, in global rank order). */
        Result withRankPeaks(List<Result> ranks) {
            return new Result(runDir, steps, trainLoss, valLoss, tokensPerSecond, mfu, peakMemoryBytes,
                    ranks.stream().map(Result::peakMemoryBytes).toList());
        }
    }

    /** How long the ranks of a multi-process job wait for rank 0 to prepare the bundled corpus (BPE training). */
    private static final Duration DATA_PREPARATION_TIMEOUT = Duration.ofMinutes(30);

    private final TrainConfig config;
    private final RankEnvironment job;
    private final PrintStream log;
    private final RunCheckpoints checkpoints;

    /** A trainer whose ranks are threads of this JVM ({@code config.ranks()} of them). */
    public Trainer(TrainConfig config, PrintStream log) {
        this(config, RankEnvironment.SINGLE, log);
    }

    /**
     * A trainer for a process started by a launcher: with {@code job.size() > 1} this process is rank
     * {@code job.rank()} of a multi-process job (the {@code mpi} backend; {@code config.ranks()} must equal the
     * job's size), otherwise its ranks are threads of this JVM. Only rank 0 writes the run directory and logs.
     *
     * @param job where this process sits in its job, normally {@link RankEnvironment#current()}
     */
    public Trainer(TrainConfig config, RankEnvironment job, PrintStream log) {
        this.config = config;
        this.job = job;
        this.log = log;
        this.checkpoints = new RunCheckpoints(config);
    }

    /**
     * Runs (or with {@code resume}, continues) the run in {@code config.runDir()}.
     *
     * @throws IOException              if data, checkpoints or the run directory cannot be read or written
     * @throws IllegalStateException    if the loss or gradient norm stops being finite
     * @throws IllegalArgumentException if the run directory already holds a run and {@code resume} is false
     */
    public Result run(boolean resume) throws IOException {
        return run(resume, null);
    }

    /**
     * As {@link #run(boolean)}; with {@code resume}, the run continues from checkpoint {@code resumeFrom}
     * ({@code step-N}, N, or a path; null: the newest intact checkpoint, passing over damaged ones with one line
     * that says which and why).
     *
     * @throws IOException also if {@code resumeFrom} names a missing or damaged checkpoint, or every checkpoint is damaged
     */
    public Result run(boolean resume, String from) throws IOException {
        if (job.isMultiProcess() && config.ranks() != job.size()) {
            throw new IllegalArgumentException("the config asks for ranks=" + config.ranks() + " but this process is one of "
                    + job.size() + " started by " + job.source().description() + "; each process of a job is one rank: "
                    + "set ranks to " + job.size() + " or leave it out");
        }
        if (config.precision().equals("bf16") && !OneDnn.isAvailable()) {
            throw new IllegalArgumentException("precision=bf16 needs oneDNN 2.x, which is not installed: apt-get install "
                    + "libdnnl2 (or scripts/ensure-onednn.sh), or train with --precision fp32");
        }
        Path runDir = config.runDir();
        List<Path> existing = ResumeChoice.steps(runDir.resolve("checkpoints"));
        if (!resume && !existing.isEmpty()) {
            throw new IllegalArgumentException(runDir + " already holds a run (" + existing.getFirst().getFileName()
                    + "); pass --resume to continue it, or choose another --run-dir");
        }
        Optional<Path> resumeFrom = resume
                ? ResumeChoice.choose(runDir.resolve("checkpoints"), from, line -> { if (job.rank() == 0) log.println(line); })
                : Optional.empty();
        if (config.initFrom() != null && resumeFrom.isEmpty()) {
            ModelConfig imported = SafetensorsModel.open(config.initFrom()).model();
            HfArchitecture.of(config.model(), "the config's model");
            if (!imported.equals(config.model())) {
                throw new IllegalArgumentException("--init-from " + config.initFrom() + " holds " + imported + " but the config asks for "
                        + config.model() + "; set the model keys to match its config.json");
            }
        }
        if (job.rank() == 0) {
            Files.createDirectories(runDir);
            writeAtomically(runDir.resolve("config.yaml"), ConfigLoader.toYaml(config));
            for (Path stale : RunCheckpoints.removeUnfinished(runDir.resolve("checkpoints"))) {
                log.printf("removed %s: a checkpoint an earlier run began but never committed%n", stale.getFileName());
            }
        }
        if (!job.isMultiProcess()) return runRanksAsThreads(resumeFrom);
        return ProcessRank.run(job, config.rankMemory(), ctx -> {   // this process is one rank of the job (mpi backend)
            Startup startup = startInTurn();
            try (TrainingData data = startup.data()) {
                return runRankOfJob(ctx, data, resumeFrom, startup.peak());
            }
        });
    }

    /** The ranks are threads of this JVM: this thread alone, or a {@link LocalCluster} (the {@code local} backend). */
    private Result runRanksAsThreads(Optional<Path> resumeFrom) throws IOException {
        CpuPeak peak = CpuPeak.measure();   // the whole machine, before ranks split its cores
        try (TrainingData data = openData()) {
            if (config.ranks() == 1 && config.zero() == 0) {
                return runRank(null, new MemoryPool("rank 0", config.rankMemory()), data, resumeFrom, peak);
            }
            LocalCluster.Options options = LocalCluster.Options.defaults().withMemoryBudget(config.rankMemory());
            List<Result> ranks = LocalCluster.run(config.ranks(), options, ctx -> runRankOfJob(ctx, data, resumeFrom, peak));
            return ranks.getFirst().withRankPeaks(ranks);
        }
    }

    /** What a process of a job starts with: the run's data and the job's fp32 peak (for MFU). */
    private record Startup(TrainingData data, CpuPeak peak) { }

    /**
     * Rank 0 goes first while the other processes of the job wait: it opens the data, preparing the bundled
     * corpus if it is missing (so processes never race on the cache), and measures its machine's peak with all
     * of its cores (measured while the others idle, as {@code --ranks} measures before its threads start). Then
     * the others open the data. The job's peak is that machine's times the number of nodes
     * ({@code size / local size}; nodes are assumed alike).
     */
    private Startup startInTurn() throws IOException {
        try (MpiCommunicator startup = MpiCommunicator.world(DATA_PREPARATION_TIMEOUT); Arena arena = Arena.ofConfined()) {
            Tensor fields = Tensor.wrap(arena.allocate(6 * Double.BYTES, 64), DType.F64, 6);   // rank 0's CpuPeak
            TrainingData data = null;
            if (job.rank() == 0) {
                try {
                    data = openData();
                    CpuPeak[] machine = new CpuPeak[1];
                    try (ComputePool all = new ComputePool("peak", Runtime.getRuntime().availableProcessors())) {
                        ComputePool.runWith(all, () -> machine[0] = CpuPeak.measure());
                    }
                    CpuPeak m = machine[0];
                    double[] values = {m.cores(), m.fp32Lanes(), m.fmaUnits(), m.clockGHz(), m.nominalFlops(), m.measuredFlops()};
                    for (int i = 0; i < values.length; i++) fields.set(values[i], i);
                } catch (IOException | RuntimeException e) {
                    startup.reportFailure(e);   // the others wait on this communicator, not the training one
                    throw e;
                }
            }
            startup.broadcast(fields, 0);
            if (job.rank() != 0) data = openData();
            CpuPeak machine = new CpuPeak((int) fields.getDouble(0), (int) fields.getDouble(1), (int) fields.getDouble(2),
                    fields.getDouble(3), fields.getDouble(4), fields.getDouble(5));
            return new Startup(data, machine.times(Math.max(1, job.size() / job.localSize())));
        }
    }

    /** One rank of a job of several (threads or processes): its process groups, then {@link #runRank}. */
    private Result runRankOfJob(RankContext ctx, TrainingData data, Optional<Path> resumeFrom, CpuPeak peak) throws IOException {
        try (ProcessGroups groups = new ProcessGroups(config.layout(), ctx.world())) {
            return runRank(groups, ctx.memory(), data, resumeFrom, peak);
        }
    }

    /** Opens the run's data, preparing the bundled corpus if it is missing. */
    private TrainingData openData() throws IOException {
        TrainingData data = TrainingData.open(config.data(), config.model().vocabSize(), log);
        if (data.tokenizer().vocabSize() > config.model().vocabSize()) {
            data.close();
            throw new IllegalArgumentException("the data's tokenizer has " + data.tokenizer().vocabSize()
                    + " tokens but the model's vocabulary is " + config.model().vocabSize()
                    + "; set model.vocabSize >= " + data.tokenizer().vocabSize());
        }
        return data;
    }

    /**
     * One rank's share of the run: its own replica, optimizer and memory pool; rank 0 (the leader) also evaluates,
     * writes metrics, checkpoints and plots, and shows the progress line. Every rank samples the global
     * micro-batch (B · ranks sequences, the batch a single-rank run would draw) and trains on its own B rows.
     */
    private Result runRank(ProcessGroups groups, MemoryPool pool, TrainingData data, Optional<Path> resumeFrom, CpuPeak peak)
            throws IOException {
        int b = config.batchSize(), row = config.seqLen() + 1;
        int rank = groups == null ? 0 : groups.coordinates().dpRank();
        boolean leader = groups == null || groups.globalRank() == 0;
        Communicator dpGroup = groups == null ? null : groups.dp();
        int pp = config.layout().pp(), vpp = config.layout().vpp(), stage = groups == null ? 0 : groups.coordinates().ppStage();
        int tpSize = config.layout().tp();
        List<GptPart.Span> spans = stageSpans(stage);
        ZeroStage zero = ZeroStage.of(config.zero());
        TensorParallel tp = tpSize > 1 ? new CommunicatorTensorParallel(groups.tp(), config.layout().sequenceParallel()) : TensorParallel.NONE;
        // with --timeline, the all-to-alls are timed so the last step's show as spans of their own
        TimedExpertParallel timedExchanges = config.layout().ep() > 1 && config.timeline() != null
                ? new TimedExpertParallel(new CommunicatorExpertParallel(groups.ep())) : null;
        ExpertParallel ep = timedExchanges != null ? timedExchanges
                : config.layout().ep() > 1 ? new CommunicatorExpertParallel(groups.ep()) : ExpertParallel.NONE;
        // at ZeRO 0 or 1 the expert-parallel update splits its runs unevenly itself: no padding, whole values and
        // gradients; at ZeRO 2 and 3 each unit's runs of experts and of dense parameters are padded apart, to be sharded
        // over their own groups
        boolean expertUpdate = ep.size() > 1 && zero.number() < 2;
        ZeroStage allocation = expertUpdate ? ZeroStage.REPLICATED : zero;
        ParameterSet.Builder declared = Gpt.declare(config.model(), spans, pp > 1, tp, ep);
        int dpSize = dpGroup == null ? 1 : dpGroup.size();
        try (ParameterSet params = ep.size() > 1 && !expertUpdate ? allocation.allocateSegmented(declared, pool, DType.F32, dpSize)
                     : allocation.allocate(declared, pool, DType.F32, dpSize);
             MatmulPrecision precision = MatmulPrecision.of(config.precision(), pool);
             StageGradients stages = pp > 1 || tpSize > 1
                     ? new StageGradients(pp > 1 ? groups.pp() : null, tpSize > 1 ? groups.tp() : null, params, pool)
                     : StageGradients.NONE;
             OptimizerState optimizer = expertUpdate ? expertParallelOptimizer(params, pool, groups, stages)
                     : optimizer(zero, params, pool, dpGroup, stages, ep.size() > 1
                             ? new ZeroShardedUpdate.Experts(groups.expertDp(), ep.size()) : ZeroShardedUpdate.Experts.NONE);
             Tensor global = Tensor.allocate(pool, MemoryCategory.BUFFERS, DType.I32, config.globalMicroBatch(), row);
             TrainStep trainStep = new TrainStep(params, chunks(params, spans, tp, ep), pool, config.gradClip(), optimizer.update(),
                     new TrainStep.Pipeline(pp > 1 ? groups.pp() : null, config.schedule(), pp, vpp))) {
            params.usePrecision(precision);
            RunCheckpoints.Place place = groups == null ? RunCheckpoints.Place.SINGLE : new RunCheckpoints.Place(groups.globalRank(),
                    config.layout().worldSize(), rank, dpGroup.size(), writtenElsewhere(stage, groups.coordinates().tpRank(), params),
                    () -> {
                        groups.dp().barrier();               // dp x (tp x pp) covers every rank: a barrier of the world
                        groups.modelParallel().barrier();
                    });
            BatchSampler sampler = new BatchSampler(data.train(), config.globalMicroBatch(), config.seqLen(), config.seed());
            TrainState state = new TrainState();
            if (resumeFrom.isPresent()) {
                checkpoints.restore(resumeFrom.get(), params, optimizer, sampler, state);
                if (leader) log.printf("resumed from %s (step %d)%n", resumeFrom.get(), state.step());
            } else if (config.initFrom() != null) {   // the weights of a model the user has, the moments zero
                SafetensorsModel source = SafetensorsModel.open(config.initFrom());
                optimizer.forLoad(held -> RunCheckpoints.read(source, params,
                        held.stream().filter(h -> h.kind() == OptimizerState.Kind.VALUES).toList()), 0);
                if (leader) log.printf("initialised the weights from %s%n", config.initFrom());
            }
            Tensor mine = global.slice(0, rank * b, b);
            Consumer<Tensor> fill = config.ranks() == 1 ? sampler::next : batch -> {
                sampler.next(global);
                MemorySegment.copy(global.segment(), mine.byteOffset(), batch.segment(), batch.byteOffset(), 4L * b * row);
            };
            try (Tensor batch = config.ranks() == 1 ? null : Tensor.allocate(pool, MemoryCategory.BUFFERS, DType.I32, b, row);
                 CheckpointSaver saver = new CheckpointSaver(checkpoints, place, config.asyncCheckpoints())) {
                return loop(leader, data, pool, params, saver, optimizer, sampler, config.ranks() == 1 ? global : batch, fill,
                        state, trainStep, peak, timedExchanges);
            }
        }
    }

    /**
     * The parameters this rank holds that another rank saves: those a lower pipeline stage also holds (the tied
     * embedding, which the last stage holds again), and on tensor-parallel ranks other than 0 the tensors every tp
     * rank holds whole.
     */
    private java.util.Set<String> writtenElsewhere(int stage, int tpRank, ParameterSet params) {
        java.util.Set<String> names = new java.util.HashSet<>();
        for (int s = 0; s < stage; s++) {
            for (ParameterSet.Spec spec : Gpt.declare(config.model(), stageSpans(s), true).specs()) names.add(spec.name());
        }
        if (tpRank > 0) {
            for (dev.shardwise.model.Parameter p : params.parameters()) if (p.replicatedOverTensorParallel()) names.add(p.name());
        }
        return names;
    }

    private List<GptPart.Span> stageSpans(int stage) {
        return stageSpans(config, stage);
    }

    /**
     * The model parts pipeline stage {@code stage} holds, chunk c being part c·pp + stage: the config's
     * {@code pipelineCut}, or a cut balanced by modelled cost (the whole model when pp·vpp = 1).
     */
    static List<GptPart.Span> stageSpans(TrainConfig config, int stage) {
        int pp = config.layout().pp(), vpp = config.layout().vpp();
        List<GptPart.Span> parts = config.pipelineCut() != null ? PipelineCut.pinned(config.model(), config.pipelineCut(), pp * vpp)
                : PipelineCut.balanced(config.model(), config.seqLen(), pp * vpp);
        List<GptPart.Span> mine = new ArrayList<>(vpp);
        for (int c = 0; c < vpp; c++) mine.add(parts.get(c * pp + stage));
        return List.copyOf(mine);
    }

    private List<GptPart> chunks(ParameterSet params, List<GptPart.Span> spans, TensorParallel tp, ExpertParallel ep) {
        return spans.stream().map(span -> new GptPart(config.model(), params, span, config.layout().recompute(),
                config.recomputeEvery(), tp, ep)).toList();
    }

    /**
     * Expert parallelism's update (GShard) at the config's ZeRO stage (0 or 1): the dense gradients averaged over the
     * dp group, the experts' over the ranks holding the same experts (unit by unit, overlapped with the last
     * micro-batch's backward), the moments offloaded if the config says so; the parameters initialised by global
     * name, so every expert starts as it would on one rank.
     */
    private OptimizerState expertParallelOptimizer(ParameterSet params, MemoryPool pool, ProcessGroups groups,
                                                   StageGradients stages) {
        ShardMoments.Factory moments = config.offloadOptimizer() == null ? ShardMoments.resident()
                : ShardMoments.onDisk(config.offloadOptimizer(), ZeroStage.DEFAULT_OFFLOAD_CHUNK_ELEMENTS);
        ExpertParallelUpdate update = new ExpertParallelUpdate(params, config.optimizer(), config.zero(), groups.dp(), groups.ep(),
                groups.expertDp(), pool, stages, moments, true);
        try {
            params.initialize(config.seed());
            return OptimizerState.expertParallel(update, params);
        } catch (RuntimeException e) {
            update.close();
            throw e;
        }
    }

    /**
     * The update {@code zero} runs over the dp group (none: one rank) and its state, with the parameters
     * initialised; gradient buckets are all-reduced during backward, ZeRO's gathers and reduce-scatters overlap the
     * passes; a pipeline stage's update shares the tied embedding and the norm with the other stages ({@code stages});
     * under expert parallelism (ZeRO 2 and 3) the experts are sharded over {@code experts}' group.
     */
    private OptimizerState optimizer(ZeroStage zero, ParameterSet params, MemoryPool pool, Communicator dpGroup,
                                     StageGradients stages, ZeroShardedUpdate.Experts experts) {
        ZeroStage.Options options = ZeroStage.Options.defaults().withBucketElements(OVERLAP_BUCKET_ELEMENTS)
                .withOffload(config.offloadOptimizer(), ZeroStage.DEFAULT_OFFLOAD_CHUNK_ELEMENTS).withStages(stages)
                .withExperts(experts);
        ZeroStage.Update update = zero.build(params, dpGroup, pool, config.optimizer(), options);
        try {
            update.initialize(config.seed());
            return OptimizerState.of(update, params, pool);
        } catch (RuntimeException e) {
            update.close();
            throw e;
        }
    }

    /**
     * Gradient elements per overlapped all-reduce bucket (4 MiB in fp32): small enough that a model of a few
     * million parameters has several buckets to start while backward runs (PyTorch DDP makes its first bucket 1 MiB).
     */
    static final int OVERLAP_BUCKET_ELEMENTS = 1 << 20;

    private Result loop(boolean leader, TrainingData data, MemoryPool pool, ParameterSet params, CheckpointSaver saver,
                        OptimizerState optimizer,
                        BatchSampler sampler, Tensor batch, Consumer<Tensor> fill, TrainState state, TrainStep trainStep,
                        CpuPeak peak, TimedExpertParallel timedExchanges) throws IOException {
        List<TimedExpertParallel.Span> lastExchanges = List.of();   // the last step's all-to-alls (with --timeline under ep)
        Path runDir = config.runDir();
        LearningRateSchedule schedule = config.learningRateSchedule();
        double flopsPerStep = config.model().trainingFlopsPerToken(config.seqLen()) * config.tokensPerStep();
        ProgressLine progress = new ProgressLine(log, config.steps());
        if (leader) {
            log.printf("model %s: %,d parameters, %d layers, hidden %d, %d heads, vocab %d; %d tokens/step%s%s; %s%n",
                    config.preset(), config.model().parameterCount(), config.model().layers(), config.model().hidden(),
                    config.model().heads(), config.model().vocabSize(), config.tokensPerStep(),
                    config.layout().dp() > 1 ? " over " + config.layout().dp() + " data-parallel ranks" : "",
                    config.zero() > 0 ? "; ZeRO stage " + config.zero() + (config.offloadOptimizer() != null
                            ? ", optimizer state offloaded to " + config.offloadOptimizer() : "") : "", peak.describe());
            if (config.ranks() > 1 || config.zero() > 0) log.print(MemoryReport.table(config));
        }
        List<LossPlot.Point> trainCurve = new ArrayList<>(), valCurve = new ArrayList<>();
        // only the leader reads the earlier curve: it alone rewrites metrics.jsonl, and only it plots
        for (Map<String, Object> row : leader && state.step() > 0 && Files.exists(runDir.resolve("metrics.jsonl"))
                ? MetricsLog.read(runDir.resolve("metrics.jsonl")) : List.<Map<String, Object>>of()) {
            long s = ((Number) row.get("step")).longValue();
            if (s > state.step()) continue;
            trainCurve.add(new LossPlot.Point(s, ((Number) row.get("loss")).doubleValue()));
            if (row.get("val_loss") instanceof Number v) valCurve.add(new LossPlot.Point(s, v.doubleValue()));
        }
        double lastLoss = Double.NaN, lastVal = Double.NaN, lastTokensPerSecond = 0, lastMfu = 0;
        long peakBytes = 0;
        ZeroMemory zeroFormula = MemoryReport.formula(config, 0);   // the leader is stage 0
        if (leader && config.layout().pp() > 1 && config.gradAccumulation() < 2 * config.layout().pp()) {
            log.printf("note: %d micro-batch(es) per step over %d pipeline stages: the pipeline idles about %.0f%% of a step "
                            + "((p-1)/(m+p-1)); raise --global-batch to a multiple of --micro-batch (e.g. --global-batch %d)%n",
                    config.gradAccumulation(), config.layout().pp(),
                    100.0 * (config.layout().pp() - 1) / (config.gradAccumulation() + config.layout().pp() - 1),
                    4 * config.layout().pp() * config.batchSize() * config.layout().dp());
        }
        if (config.saveCheckpoints() && config.checkpointAtStart() && state.step() == 0) {
            saver.save(leader, runDir.resolve("checkpoints"), params, optimizer, state, data);
        }
        double checkpointStallMs = Double.NaN;   // the last save's hold-up of training, reported in the next step's row
        try (MetricsLog metrics = leader ? new MetricsLog(runDir.resolve("metrics.jsonl"), state.step()) : null) {
            while (state.step() < config.steps()) {
                long step = state.step();            // 0-based index of the step being run
                long start = System.nanoTime();
                pool.resetPeaks();
                double lr = schedule.at(step);
                TrainStep.Result r;
                try {
                    r = trainStep.run(batch, config.gradAccumulation(), fill, lr);
                    if (timedExchanges != null) lastExchanges = timedExchanges.drain();   // before evaluation adds its own
                } catch (IllegalStateException e) {
                    throw new IllegalStateException(String.format("training diverged at step %d (%s); lower lr (now %g) "
                            + "or raise warmupSteps, and resume from the last checkpoint", step + 1, e.getMessage(), config.lr()), e);
                }
                long end = System.nanoTime();
                double loss = r.loss(), gradNorm = r.gradNorm();
                BatchSampler.Position position = sampler.position();
                state.completeStep(config.tokensPerStep(), position.epoch(), position.index());

                double seconds = (end - start) / 1e9;
                lastTokensPerSecond = config.tokensPerStep() / seconds;
                lastMfu = flopsPerStep / seconds / peak.measuredFlops();
                lastLoss = loss;
                peakBytes = Math.max(peakBytes, pool.peakBytes());
                Map<String, Object> row = new LinkedHashMap<>();
                row.put("step", state.step());
                row.put("loss", loss);
                row.put("lr", lr);
                row.put("grad_norm", gradNorm);
                row.put("tokens_per_s", lastTokensPerSecond);
                row.put("mfu", lastMfu);
                row.put("step_ms", seconds * 1e3);
                row.put("forward_ms", r.forwardNs() / 1e6);
                row.put("backward_ms", r.backwardNs() / 1e6);
                row.put("grads_reduce_ms", r.reduceNs() / 1e6);
                row.put("optimizer_ms", r.optimizerNs() / 1e6);
                row.put("pipeline_wait_ms", r.pipelineWaitNs() / 1e6);
                row.put("bubble", r.bubble());
                if (!Double.isNaN(checkpointStallMs)) {   // the checkpoint saved after the previous step
                    row.put("checkpoint_stall_ms", checkpointStallMs);
                    row.put("checkpoint_async", config.asyncCheckpoints());
                    checkpointStallMs = Double.NaN;
                }
                MoeReport moe = trainStep.lastMoe();
                if (moe != null) {   // the loss above is the cross-entropy; the auxiliary losses are trained on beside it
                    row.put("aux_loss", moe.auxLoss());
                    row.put("moe_load_max", moe.maxLoad());
                    row.put("moe_load_mean", moe.meanLoad());
                    row.put("moe_load_max_over_mean", moe.maxOverMean());
                    row.put("moe_load_max_over_mean_layers", moe.meanOverLayers());
                    row.put("moe_load_max_over_mean_50", moe.windowMaxOverMean());   // the load summed over the last 50 steps
                    row.put("moe_load_max_over_mean_layers_50", moe.windowMeanOverLayers());
                    row.put("moe_dropped", moe.dropped());
                    row.put("moe_router_spread", moe.routerSpread());
                }
                row.put("mem_peak_bytes", pool.peakBytes());
                for (MemoryCategory c : MemoryCategory.values()) row.put("mem_peak_" + c.label().replace('-', '_'), pool.peakBytes(c));
                Optional<ProcessMemory> process = ProcessMemory.current();   // the whole process beside the pool's tensors (Linux only)
                process.ifPresent(m -> {
                    row.put("rss_bytes", m.residentBytes());
                    row.put("rss_peak_bytes", m.peakResidentBytes());
                });
                for (MemoryCategory c : MemoryReport.MODEL_STATE) {   // ZeRO's formula, to read beside the measured peaks
                    row.put("mem_formula_" + c.label().replace('-', '_'), zeroFormula.bytes(c));
                }
                boolean last = state.step() == config.steps();
                boolean evaluateNow = last || (config.evalEvery() > 0 && state.step() % config.evalEvery() == 0);
                // Under ZeRO 3 every forward gathers parameters collectively, and a pipeline's forward runs on every
                // stage, so then every rank evaluates with the leader.
                // Under tensor parallelism every forward runs collectives over the tp group, so the leader's tp group
                // evaluates with it too.
                // Under expert parallelism every MoE block's forward runs all-to-alls over the ep group: every rank evaluates.
                if (evaluateNow && !leader && (config.zero() == 3 || config.layout().pp() > 1 || config.layout().tp() > 1
                        || config.layout().ep() > 1)) {
                    evaluate(data, pool, trainStep);
                }
                if (leader) {
                    trainCurve.add(new LossPlot.Point(state.step(), loss));
                    if (evaluateNow) {
                        lastVal = evaluate(data, pool, trainStep);
                        row.put("val_loss", lastVal);
                        valCurve.add(new LossPlot.Point(state.step(), lastVal));
                    }
                    metrics.write(row);   // before the checkpoint, so a resumed run never lacks this step's line
                    progress.update(state.step(), loss, lr, lastTokensPerSecond, lastMfu, pool, process, seconds,
                            row.containsKey("val_loss") ? lastVal : Double.NaN, config.layout().pp() > 1 ? r.bubble() : Double.NaN, moe);
                }
                if (config.saveCheckpoints() && (last || (config.checkpointEvery() > 0 && state.step() % config.checkpointEvery() == 0))) {
                    // collective under ZeRO and over the pipeline
                    checkpointStallMs = saver.save(leader, runDir.resolve("checkpoints"), params, optimizer, state, data) / 1e6;
                }
                if (leader && (last || row.containsKey("val_loss"))) plot(runDir, trainCurve, valCurve);
            }
        }
        saver.finish();   // the run never ends before its last checkpoint is committed
        if (leader) progress.finish();
        if (leader && !Double.isNaN(checkpointStallMs)) {
            log.printf("last checkpoint held training up %.1f ms (%s)%n", checkpointStallMs,
                    config.asyncCheckpoints() ? "asynchronous: copied to host buffers, written in the background" : "synchronous");
        }
        if (config.timeline() != null && state.step() > 0) {
            List<PipelineExecutor.Step> steps = trainStep.gatherLastSteps();   // collective over the pipeline group
            List<Timeline.Span> exchanges = timedExchanges == null ? List.of() : trainStep.gatherLastExchanges(lastExchanges);
            if (leader) {
                Timeline.write(config.timeline(), steps, exchanges);
                log.println("timeline of the last step: " + config.timeline() + " (open it in https://ui.perfetto.dev)");
            }
        }
        peakBytes = Math.max(peakBytes, pool.peakBytes());   // evaluation and checkpoints included
        return new Result(runDir, state.step(), lastLoss, lastVal, lastTokensPerSecond, lastMfu, peakBytes, List.of(peakBytes));
    }

    /**
     * Mean validation loss over the first {@code evalBatches} global micro-batches of the validation set, in file
     * order, each batch's loss the mean over its rows. A batch is run a micro-batch (B rows) at a time, so
     * evaluation needs no more activation memory than a training step however many ranks share the global batch.
     */
    private double evaluate(TrainingData data, MemoryPool pool, TrainStep trainStep) {
        // Each validation batch is a global batch (micro-batch × dp × micro-batches per step), so the sequences a run is
        // evaluated on depend on its global batch alone, not on how its layout splits it.
        int row = config.seqLen() + 1, micro = config.batchSize();
        Iterator<int[]> batches = BatchSampler.sequential(data.val(), config.globalMicroBatch() * config.gradAccumulation(),
                config.seqLen());
        double sum = 0;
        int count = 0;
        while (batches.hasNext() && count < config.evalBatches()) {
            int[] values = batches.next();
            int rows = values.length / row;
            double rowWeighted = 0;   // sum over micro-batches of (mean loss × rows)
            for (int first = 0; first < rows; first += micro) {
                int n = Math.min(micro, rows - first);
                try (Tensor b = Tensor.allocate(pool, MemoryCategory.BUFFERS, DType.I32, n, row)) {
                    MemorySegment.copy(values, first * row, b.segment(), ValueLayout.JAVA_INT, b.byteOffset(), n * row);
                    double loss = trainStep.evaluate(b);
                    rowWeighted += n == rows ? loss : loss * n;
                }
            }
            sum += rows <= micro ? rowWeighted : rowWeighted / rows;
            count++;
        }
        return count == 0 ? Double.NaN : sum / count;
    }

    private void plot(Path runDir, List<LossPlot.Point> train, List<LossPlot.Point> val) {
        try {
            LossPlot.write(runDir.resolve("loss.png"), "Shardwise " + config.preset() + ": loss (nats/token)", train, val);
        } catch (IOException | RuntimeException | Error e) {   // fonts or AWT missing: the run goes on without a plot
            log.println("warning: could not draw loss.png (" + e + "); metrics.jsonl has the numbers");
        }
    }

    private static void writeAtomically(Path file, String text) throws IOException {
        Path tmp = file.resolveSibling(file.getFileName() + ".tmp");
        Files.writeString(tmp, text, StandardCharsets.UTF_8);
        Files.move(tmp, file, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
    }
}
