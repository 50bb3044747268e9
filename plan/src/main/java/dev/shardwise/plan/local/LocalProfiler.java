package dev.shardwise.plan.local;

import dev.shardwise.comm.Communicator;
import dev.shardwise.comm.LocalCluster;
import dev.shardwise.comm.ReduceOp;
import dev.shardwise.core.kernels.Vectors;
import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.memory.StepArena;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;
import dev.shardwise.model.ExpertParallel;
import dev.shardwise.model.Gpt;
import dev.shardwise.model.GptPart;
import dev.shardwise.model.ModelConfig;
import dev.shardwise.model.ParameterSet;
import dev.shardwise.model.Recompute;
import dev.shardwise.model.TensorParallel;
import dev.shardwise.model.optim.AdamWOptimizer;
import dev.shardwise.parallel.expert.CommunicatorExpertParallel;
import dev.shardwise.parallel.tensor.CommunicatorTensorParallel;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Arrays;
import java.util.EnumMap;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.SplittableRandom;
import java.util.TreeSet;
import java.util.concurrent.atomic.AtomicBoolean;

/**
 * Measures a {@link LocalProfile}: runs the model's pieces (the embedding, one block under each recompute policy,
 * the head with the loss) forward and backward on {@code ranks} rank threads at once, each with the share of the
 * cores training would give it ({@link LocalCluster}), whole and under each tensor- and expert-parallel split asked
 * for (the ranks then form tp and ep groups and run their slices with the groups' collectives), plus the update over
 * one block (AdamW; the gradients' zeroing and norm) and the local backend's all-reduce, ZeRO's unit all-gather and
 * reduce-scatter (through reused unit buffers, as the ZeRO 2/3 hooks recycle theirs), and send. Each time is the
 * fastest of a few repetitions after a warm-up (a shared machine's noise only ever slows a repetition down;
 * {@code bench planner} compares it with each layout's fastest round), taken on the slowest rank, with every rank starting each repetition together and each timed phase starting
 * with cold caches, as in training (see {@link #EVICTION_BYTES}).
 */
public final class LocalProfiler {
    /** Bytes of the all-reduce and send timed for the per-byte costs. */
    private static final int COLLECTIVE_FLOATS = 2 << 20;
    /**
     * Bytes each rank writes before every timed forward, backward, B and W: several times any last-level cache, so a
     * piece starts cold as it does in training, where the other blocks' passes run between a block's forward and its
     * backward (timing one block again and again would find its weights cached).
     */
    private static final long EVICTION_BYTES = 128L << 20;

    /** Whether this JVM has run the pieces once (see {@link #profile}). */
    private static final AtomicBoolean warmedUp = new AtomicBoolean();

    private LocalProfiler() { }

    /**
     * Profiles {@code config} at micro-batch {@code microBatch} and sequence length {@code seq} with {@code ranks}
     * ranks running at once, {@code repeats} timed repetitions of each piece, unsplit only.
     *
     * @throws IllegalArgumentException if a size is not positive or seq exceeds the model's context
     */
    public static LocalProfile profile(ModelConfig config, int ranks, int microBatch, int seq, int repeats) {
        return profile(config, ranks, microBatch, seq, repeats, Set.of(LocalProfile.Split.NONE));
    }

    /**
     * As {@link #profile(ModelConfig, int, int, int, int)}, the pieces also under each tensor-parallel split of
     * {@code splits} (tp 1 is always profiled).
     *
     * @throws IllegalArgumentException also if a split's tp does not divide the ranks
     */
    public static LocalProfile profile(ModelConfig config, int ranks, int microBatch, int seq, int repeats,
                                       Set<LocalProfile.Split> splits) {
        Set<LocalProfile.Split> all = new TreeSet<>(splits);
        all.add(LocalProfile.Split.NONE);
        for (LocalProfile.Split split : all) {
            if (ranks % split.tp() != 0) {
                throw new IllegalArgumentException("profile: " + split + " does not divide " + ranks + " ranks into tensor-parallel groups");
            }
        }
        if (ranks < 1 || microBatch < 1 || seq < 1 || repeats < 1) {
            throw new IllegalArgumentException("profile: ranks, micro-batch, seq and repeats must be positive, got " + ranks + ", "
                    + microBatch + ", " + seq + ", " + repeats);
        }
        if (seq > config.contextLength()) {
            throw new IllegalArgumentException("profile: seq=" + seq + " exceeds the model's context of " + config.contextLength());
        }
        if (!warmedUp.getAndSet(true)) {
            // The first profile in a JVM would time code the JIT has not compiled yet (the kernels take seconds of
            // calls to reach their compiled form): run every piece once untimed first.
            profileRanks(config, ranks, microBatch, seq, 1, Set.of(LocalProfile.Split.NONE));
        }
        return slowest(profileRanks(config, ranks, microBatch, seq, repeats, all));
    }

    /** Each rank's measurements, {@code ranks} rank threads at once, each with its own cache-eviction buffer. */
    private static List<LocalProfile> profileRanks(ModelConfig config, int ranks, int microBatch, int seq, int repeats,
                                                   Set<LocalProfile.Split> splits) {
        return LocalCluster.run(ranks, ctx -> {
            try (Arena eviction = Arena.ofConfined()) {
                return new RankProfiler(config, ctx.world(), ctx.memory(), ctx.compute().threads(), microBatch, seq, repeats, splits,
                        eviction.allocate(EVICTION_BYTES)).run();
            }
        });
    }

    /**
     * Every time the largest over the ranks (the slowest rank sets the pace of a synchronous step); the pieces' bytes
     * as {@link LocalProfile.Part#acrossRanks} combines them.
     */
    private static LocalProfile slowest(List<LocalProfile> ranks) {
        LocalProfile first = ranks.getFirst();
        Map<LocalProfile.Split, LocalProfile.Pieces> pieces = new HashMap<>();
        for (LocalProfile.Split split : first.pieces().keySet()) {
            pieces.put(split, LocalProfile.Pieces.acrossRanks(ranks.stream().map(r -> r.pieces().get(split)).toList()));
        }
        double optimizer = 0, gradients = 0, allReduce = 0, allGather = 0, reduceScatter = 0, latency = 0, send = 0;
        for (LocalProfile r : ranks) {
            optimizer = Math.max(optimizer, r.optimizerSecondsPerParameter());
            gradients = Math.max(gradients, r.gradientSecondsPerElement());
            allReduce = Math.max(allReduce, r.allReduceSecondsPerByte());
            allGather = Math.max(allGather, r.allGatherSecondsPerByte());
            reduceScatter = Math.max(reduceScatter, r.reduceScatterSecondsPerByte());
            latency = Math.max(latency, r.collectiveLatencySeconds());
            send = Math.max(send, r.sendSecondsPerByte());
        }
        return new LocalProfile(first.ranks(), first.threadsPerRank(), first.microBatch(), first.seq(), pieces, optimizer, gradients,
                allReduce, allGather, reduceScatter, latency, send);
    }

    /** One rank's measurements; {@code eviction} is the buffer it writes to start each timed pass with cold caches. */
    private record RankProfiler(ModelConfig config, Communicator world, MemoryPool pool, int threads, int microBatch, int seq,
                                int repeats, Set<LocalProfile.Split> splits, MemorySegment eviction) {
        LocalProfile run() {
            SplittableRandom random = new SplittableRandom(17 + world.rank());
            try (Tensor batch = Tensor.allocate(pool, MemoryCategory.BUFFERS, DType.I32, microBatch, seq + 1)) {
                int[] ids = new int[microBatch * (seq + 1)];
                for (int i = 0; i < ids.length; i++) ids[i] = random.nextInt(config.vocabSize());
                MemorySegment.copy(ids, 0, batch.segment(), ValueLayout.JAVA_INT, batch.byteOffset(), ids.length);
                Map<LocalProfile.Split, LocalProfile.Pieces> pieces = new HashMap<>();
                for (LocalProfile.Split split : splits) pieces.put(split, pieces(split, batch, random));
                double[] update = updateSecondsPerElement();
                double[] collectives = collectives();
                return new LocalProfile(world.size(), threads, microBatch, seq, pieces, update[0], update[1], collectives[0],
                        collectives[1], collectives[2], collectives[3], collectives[4]);
            }
        }

        /**
         * The pieces under {@code split}: the ranks split into tp groups of consecutive ranks and, under expert
         * parallelism, ep groups of consecutive tp groups (the same tp rank of each, as the trainer groups dp ranks),
         * each timing its slices and its experts.
         */
        private LocalProfile.Pieces pieces(LocalProfile.Split split, Tensor batch, SplittableRandom random) {
            int tpSize = split.tp(), epSize = split.ep(), replica = world.rank() / tpSize, tpRank = world.rank() % tpSize;
            try (Communicator group = tpSize == 1 ? null : world.split(replica, tpRank, "tp");
                 Communicator experts = epSize == 1 ? null : world.split(replica / epSize * tpSize + tpRank, replica % epSize, "ep")) {
                TensorParallel tp = group == null ? TensorParallel.NONE : new CommunicatorTensorParallel(group, split.sequenceParallel());
                ExpertParallel ep = experts == null ? ExpertParallel.NONE : new CommunicatorExpertParallel(experts);
                int rows = split.sequenceParallel() ? microBatch * seq / tpSize : microBatch * seq;
                try (Tensor input = Tensor.allocate(pool, MemoryCategory.BUFFERS, DType.F32, rows, config.hidden());
                     Tensor dOut = Tensor.allocate(pool, MemoryCategory.BUFFERS, DType.F32, rows, config.hidden())) {
                    float[] values = new float[rows * config.hidden()];
                    for (int i = 0; i < values.length; i++) values[i] = (float) random.nextGaussian();
                    input.copyFrom(values);
                    for (int i = 0; i < values.length; i++) values[i] *= 1e-3f;
                    dOut.copyFrom(values);
                    Tensor tokens = batch.slice(1, 0, seq), targets = batch.slice(1, 1, seq);
                    LocalProfile.Part embedding = measurePart(new GptPart.Span(true, 0, 0, false), Recompute.NONE, tp, ep, tokens, targets,
                            null, dOut, repeats);
                    Map<Recompute, LocalProfile.Part> block = new EnumMap<>(Recompute.class);
                    for (Recompute policy : Recompute.values()) {
                        block.put(policy, measureBlock(policy, tp, ep, tokens, targets, input, dOut));
                    }
                    LocalProfile.Part head = measurePart(new GptPart.Span(false, config.layers(), config.layers(), true), Recompute.NONE,
                            tp, ep, tokens, targets, input, null, repeats);
                    return new LocalProfile.Pieces(embedding, block, head);
                }
            }
        }

        private ParameterSet allocate(GptPart.Span span, TensorParallel tp, ExpertParallel ep) {
            ParameterSet params = Gpt.declare(config, List.of(span), true, tp, ep).allocate(pool, DType.F32);
            params.initialize(1234);
            return params;
        }

        /**
         * One block timed, and its bytes split into what each block of a pass adds and what a pass holds once however many
         * blocks it has (each block's backward temporaries come from one stack in the arena, rewound after the block):
         * the difference between an untimed pass of two blocks and the timed one of one block.
         */
        private LocalProfile.Part measureBlock(Recompute policy, TensorParallel tp, ExpertParallel ep, Tensor tokens, Tensor targets,
                                               Tensor input, Tensor dOut) {
            LocalProfile.Part one = measurePart(blockSpan(1), policy, tp, ep, tokens, targets, input, dOut, repeats);
            if (config.layers() < 2) return one;
            LocalProfile.Part two = measurePart(blockSpan(2), policy, tp, ep, tokens, targets, input, dOut, 0);
            long perBlock = Math.min(one.passBytes(), two.passBytes() - one.passBytes());
            long perSplitBlock = Math.min(one.splitPassBytes(), two.splitPassBytes() - one.splitPassBytes());
            return new LocalProfile.Part(one.forwardSeconds(), one.backwardSeconds(), one.backwardInputSeconds(), one.backwardWeightSeconds(),
                    perBlock, perSplitBlock, one.scratchBytes(), one.passBytes() - perBlock, one.splitPassBytes() - perSplitBlock);
        }

        /**
         * Forward, whole backward, and (where it splits) B then W, timed {@code timed} times (0: bytes only); the activation bytes the first whole pass and
         * the first split pass left in their fresh arenas, and how far above that the whole pass peaked (scratch arenas
         * its layers closed before it ended).
         */
        private LocalProfile.Part measurePart(GptPart.Span span, Recompute policy, TensorParallel tp, ExpertParallel ep, Tensor tokens,
                                              Tensor targets, Tensor input, Tensor dOut, int timed) {
            try (ParameterSet params = allocate(span, tp, ep); StepArena arena = new StepArena(pool); StepArena splitArena = new StepArena(pool)) {
                GptPart part = new GptPart(config, params, span, policy, 1, tp, ep);
                double[] forward = new double[timed], backward = new double[timed], inputGrad = new double[timed],
                        weightGrad = new double[timed];
                long passBytes = 0, splitBytes = 0, scratchBytes = 0;
                for (int r = -1; r < timed; r++) {
                    boolean cold = r >= 0;
                    evictCaches(cold);
                    world.barrier();
                    long before = pool.liveBytes(MemoryCategory.ACTIVATIONS);
                    pool.resetPeaks();
                    long t0 = System.nanoTime();
                    GptPart.Pass pass = part.forward(arena, tokens, targets, input, true, 1.0);
                    long t1 = System.nanoTime();
                    evictCaches(cold);
                    long t1b = System.nanoTime();
                    part.backward(arena, pass, dOut);
                    long t2 = System.nanoTime();
                    if (r < 0) {
                        passBytes = pool.liveBytes(MemoryCategory.ACTIVATIONS) - before;
                        scratchBytes = pool.peakBytes(MemoryCategory.ACTIVATIONS) - before - passBytes;
                    }
                    arena.reset();
                    double bInput = (t2 - t1b) / 1e9, bWeight = 0;
                    if (part.canSplitBackward()) {
                        world.barrier();
                        long beforeSplit = pool.liveBytes(MemoryCategory.ACTIVATIONS);
                        pool.resetPeaks();
                        GptPart.Pass again = part.forward(splitArena, tokens, targets, input, true, 1.0);
                        evictCaches(cold);
                        long t3 = System.nanoTime();
                        part.backwardInput(splitArena, again, dOut);
                        long t4 = System.nanoTime();
                        evictCaches(cold);
                        long t4b = System.nanoTime();
                        part.backwardWeight(again);
                        long t5 = System.nanoTime();
                        if (r < 0) splitBytes = pool.liveBytes(MemoryCategory.ACTIVATIONS) - beforeSplit;
                        splitArena.reset();
                        bInput = (t4 - t3) / 1e9;
                        bWeight = (t5 - t4b) / 1e9;
                    } else if (r < 0) {
                        splitBytes = passBytes;
                    }
                    if (r < 0) continue;
                    forward[r] = (t1 - t0) / 1e9;
                    backward[r] = (t2 - t1b) / 1e9;
                    inputGrad[r] = bInput;
                    weightGrad[r] = bWeight;
                }
                return new LocalProfile.Part(fastest(forward), fastest(backward), fastest(inputGrad), fastest(weightGrad), passBytes, splitBytes,
                        scratchBytes, 0, 0);
            }
        }

        /** Writes the eviction buffer when {@code cold}, so what a timed pass touches first comes from memory. */
        private void evictCaches(boolean cold) {
            if (cold) eviction.fill((byte) 1);
        }

        /** The model's first {@code blocks} blocks. */
        private static GptPart.Span blockSpan(int blocks) {
            return new GptPart.Span(false, 0, blocks, false);
        }

        /**
         * What a step does to the parameters outside the passes, as the trainer runs it, per element: {0} AdamW (per
         * parameter updated), {1} zeroing the gradients before the first micro-batch and taking their norm for clipping
         * (per gradient held); both timed from cold caches, as the whole model's state streams from memory in training.
         */
        private double[] updateSecondsPerElement() {
            try (ParameterSet params = allocate(blockSpan(1), TensorParallel.NONE, ExpertParallel.NONE);
                 AdamWOptimizer adam = new AdamWOptimizer(params, pool, AdamWOptimizer.Settings.gpt())) {
                double[] optimizer = new double[repeats], gradients = new double[repeats];
                double norm = 0;
                for (int r = -1; r < repeats; r++) {
                    evictCaches(true);
                    world.barrier();
                    long t0 = System.nanoTime();
                    params.zeroGrads();
                    long t1 = System.nanoTime();
                    evictCaches(true);   // the passes run between the zeroing and the norm
                    long t2 = System.nanoTime();
                    norm += Vectors.sumOfSquares(params.grads());
                    long t3 = System.nanoTime();
                    evictCaches(true);
                    long t4 = System.nanoTime();
                    adam.step(1e-4);
                    long t5 = System.nanoTime();
                    if (r < 0) continue;
                    gradients[r] = (t1 - t0 + t3 - t2) / 1e9;
                    optimizer[r] = (t5 - t4) / 1e9;
                }
                if (!(norm >= 0)) throw new IllegalStateException("gradient norm " + norm);
                return new double[] {fastest(optimizer) / params.count(), fastest(gradients) / params.count()};
            }
        }

        /**
         * Per byte: the all-reduce; ZeRO's all-gather of a unit and reduce-scatter of its zeroed, then written gradient
         * buffer (a block's parameters, through buffers reused from pass to pass as the ZeRO 2/3 hooks recycle theirs);
         * then a small collective's seconds and a send's seconds per byte. All 0 for one rank.
         */
        private double[] collectives() {
            if (world.size() == 1) return new double[5];
            int n = world.size();
            long blockParameters = Gpt.declare(config, List.of(blockSpan(1)), true, TensorParallel.NONE).count();
            int unit = Math.toIntExact(Math.max(COLLECTIVE_FLOATS, blockParameters) / n * n);
            try (Tensor big = Tensor.allocate(pool, MemoryCategory.BUFFERS, DType.F32, COLLECTIVE_FLOATS);
                 Tensor small = Tensor.allocate(pool, MemoryCategory.BUFFERS, DType.F32, 1);
                 Tensor shard = Tensor.allocate(pool, MemoryCategory.BUFFERS, DType.F32, unit / n);
                 Tensor whole = Tensor.allocate(pool, MemoryCategory.BUFFERS, DType.F32, unit);
                 Tensor grads = Tensor.allocate(pool, MemoryCategory.BUFFERS, DType.F32, unit)) {
                double[] reduce = new double[repeats], gather = new double[repeats], scatter = new double[repeats],
                        latency = new double[repeats], send = new double[repeats];
                for (int r = -1; r < repeats; r++) {
                    world.barrier();
                    long t0 = System.nanoTime();
                    world.allReduce(big, ReduceOp.SUM);
                    long t1 = System.nanoTime();
                    world.allReduce(small, ReduceOp.SUM);
                    long t2 = System.nanoTime();
                    world.barrier();
                    long t3 = System.nanoTime();
                    if (world.rank() == 0) world.send(big, 1, 7);
                    else if (world.rank() == 1) world.receive(big, 0, 7);
                    long t4 = System.nanoTime();
                    world.barrier();
                    long t5 = System.nanoTime();
                    world.allGather(whole, shard);
                    long t6 = System.nanoTime();
                    world.barrier();
                    long t7 = System.nanoTime();
                    Vectors.zero(grads);   // as a recycled unit gradient is zeroed before backward writes it
                    world.reduceScatter(shard, grads, ReduceOp.AVG);
                    long t8 = System.nanoTime();
                    if (r < 0) continue;
                    reduce[r] = (t1 - t0) / 1e9 / (4.0 * COLLECTIVE_FLOATS);
                    latency[r] = (t2 - t1) / 1e9;
                    send[r] = world.rank() == 1 ? (t4 - t3) / 1e9 / (4.0 * COLLECTIVE_FLOATS) : 0;
                    gather[r] = (t6 - t5) / 1e9 / (4.0 * unit);
                    scatter[r] = (t8 - t7) / 1e9 / (4.0 * unit);
                }
                return new double[] {fastest(reduce), fastest(gather), fastest(scatter), fastest(latency), fastest(send)};
            }
        }
    }

    /** The smallest value; 0 for none. */
    private static double fastest(double[] values) {
        return Arrays.stream(values).min().orElse(0);
    }
}
