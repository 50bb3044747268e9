package dev.shardwise.parallel;

import dev.shardwise.comm.Communicator;
import dev.shardwise.comm.ReduceOp;
import dev.shardwise.core.kernels.Vectors;
import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.tensor.Tensor;
import dev.shardwise.model.Gpt;
import dev.shardwise.model.MoeConfig;
import dev.shardwise.model.Parameter;
import dev.shardwise.model.ParameterSet;
import dev.shardwise.model.optim.AdamWOptimizer;
import dev.shardwise.model.optim.ParameterUpdate;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.Future;
import java.util.function.Supplier;

/**
 * ZeRO stages 2 and 3 (Rajbhandari et al. 2020, "P_os+g" and "P_os+g+p"): besides the AdamW state, each rank of
 * the data-parallel group keeps only its shard of the gradients (stage 2) and of the parameters too (stage 3).
 *
 * <p>Sharding is per {@linkplain ParameterSet.Unit unit} (as PyTorch FSDP flattens each wrapped module): every
 * unit u, [a_u, a_u + n_u) of the flat layout with n_u a multiple of N, splits into N pieces of s_u = n_u/N, and
 * rank r owns piece r, [a_u + r·s_u, a_u + (r+1)·s_u). Its pieces of all units, in unit order, form its shard
 * [P'/N] (unit u's piece starts at a_u/N). Each micro-batch, through the model's {@link Gpt.Hooks}:
 * <pre>
 *   stage 3, before a unit's forward or backward: all-gather its values [n_u] into a transient buffer, bind them
 *   before a unit's backward:                     a zeroed transient gradient buffer [n_u], bound to its parameters
 *   after a unit's backward:                      reduce-scatter(AVG) that buffer into this rank's gradient piece
 *                                                 (added to it after the first micro-batch), then free the buffers
 *   stage 3, after a unit's forward:              free its gathered values
 * </pre>
 * The update clips the global norm (one all-reduce of Σ shard²), runs AdamW on the shard, and at stage 2
 * all-gathers every unit's values in place; at stage 3 the values stay sharded until the next forward gathers them.
 * With gradient accumulation the gradients are reduce-scattered every micro-batch and accumulated in the shard, as
 * DeepSpeed does, so no full gradient ever persists.
 *
 * <p>Per rank (ZeRO's fp32 Adam case, Ψ = P'): stage 2 holds parameters 4Ψ + gradients 4Ψ/N + optimizer state
 * 8Ψ/N; stage 3 holds 4Ψ/N + 4Ψ/N + 8Ψ/N. The transient unit buffers are charged to BUFFERS: the gradients of
 * the unit in backward and of at most {@link #MAX_REDUCTIONS_IN_FLIGHT} units waiting for their reduce-scatter,
 * and (stage 3) the values of the unit in use and of the one prefetched, in forward as in backward; the
 * embeddings' gradients (and at stage 3 values) stay for all of backward, because the tied head reads wte at its
 * start and the embedding finishes wte's gradient at its end. They are recycled by size ({@link UnitBuffers}), so
 * the pool keeps each size's high-water count between passes instead of faulting fresh memory in every micro-batch.
 *
 * <p>Overlap (DeepSpeed's parameter prefetch): each pass runs on a helper thread ({@link PassOverlap}) while the
 * rank's own thread runs the gathers and reduce-scatters the hooks post, in order. Backward overlaps at stages 2
 * and 3, forward at stage 3 (stage 2 has nothing to gather). At stage 3, as a unit opens, the next unit's gather
 * is posted behind its own (prefetch, by the unit order the first pass of each kind recorded), so unit l+1's
 * all-gather runs while unit l computes. Evaluation's forward (outside {@link #forward}) gathers unit by unit on
 * the calling thread.
 *
 * <p>Under expert parallelism (GShard; {@link Experts}) each unit splits further into segments, runs of dense
 * parameters and runs of this rank's experts (the parameters allocated {@linkplain ParameterSet.Builder#segmentedBy
 * segmented} so each run is a multiple of N): a dense segment is sharded, gathered and reduce-scattered over the dp
 * group as above, an expert segment over the expert-data-parallel group of N/ep ranks holding the same experts, and
 * its reduced gradient is scaled by 1/ep (each rank's expert gradient already sums the ep ranks' tokens it served),
 * so every gradient is the mean over all dp ranks' micro-batches. The rank's shard is its piece of every segment in
 * turn; the global norm is one all-reduce over dp, which covers every dense piece and every expert's pieces once.
 * Per rank, with Ψ_expert counting all experts and Ψ = Ψ_dense + Ψ_expert/ep the parameters the rank holds: stage 2
 * holds 4Ψ + 12Ψ_dense/N + 12Ψ_expert/N, stage 3 16Ψ_dense/N + 16Ψ_expert/N (plus each run's padding).
 *
 * <p>Reductions add in rank order and every rank runs the same collectives in the same order, so a layout is
 * bit-reproducible run to run.
 */
public final class ZeroShardedUpdate implements ParameterUpdate, Gpt.Hooks {
    /**
     * How the experts of an expert-parallel rank are sharded: over {@code expertDp}, the ranks of the dp group holding
     * the same experts, their gradients scaled by 1/{@code ep}. {@link #NONE}: no expert parallelism, every parameter
     * sharded over dp.
     *
     * @param expertDp the expert-data-parallel group (null only in {@link #NONE})
     * @param ep       the expert-parallel group's size
     */
    public record Experts(Communicator expertDp, int ep) {
        public static final Experts NONE = new Experts(null, 1);

        /** @throws IllegalArgumentException if ep &lt; 1, or ep &gt; 1 without a group */
        public Experts {
            if (ep < 1 || (ep > 1 && expertDp == null)) {
                throw new IllegalArgumentException("expert sharding needs ep >= 1 and, for ep > 1, the expert-data-parallel "
                        + "group; got ep=" + ep + ", group " + expertDp);
            }
        }

        boolean sharded() {
            return ep > 1;
        }
    }

    /**
     * Elements [flatStart, flatStart + length) of the flat layout [P'], held at [shardOffset, shardOffset + length) of
     * this rank's shards: its piece of one segment.
     */
    public record Piece(int flatStart, int shardOffset, int length) { }

    /**
     * A run [offset, offset + length) of one unit's flat elements sharded over {@code group}: rank r of it owns piece
     * r of length/n elements, at {@code shardOffset} of its shards.
     */
    private record Segment(int offset, int length, boolean expert, Communicator group, int shardOffset) {
        int pieceLength() { return length / group.size(); }

        int flatPiece() { return offset + group.rank() * pieceLength(); }

        Tensor of(Tensor flat) { return flat.slice(0, offset, length); }

        Tensor pieceOf(Tensor shard) { return shard.slice(0, shardOffset, pieceLength()); }

        Tensor ownPieceOf(Tensor flat) { return flat.slice(0, flatPiece(), pieceLength()); }
    }

    private final int stage;
    private final StageGradients stages;
    private final ParameterSet params;
    private final Communicator dp;
    private final MemoryPool pool;
    private final UnitBuffers buffers;   // transient unit-sized gathers and gradients, recycled
    private final Experts experts;
    private final List<List<Segment>> segments;   // per unit index, in flat order
    private final int shardSize;
    private final Tensor valueShard;   // [S] stage 3, PARAMETERS; null at stage 2 (the flat values are whole)
    private final Tensor gradShard;    // [S] GRADIENTS
    private final ShardMoments moments;
    private final ScalarReduction scalar;
    private final ShardAdamW adamW;
    private final Tensor[] gatheredValues;   // per unit, stage 3, BUFFERS while bound
    private final Tensor[] unitGrads;        // per unit, BUFFERS from its backward until its reduce-scatter ran
    private final Set<Tensor> transientGrads = ConcurrentHashMap.newKeySet();
    private final PassOverlap overlap;   // every collective goes through it, on the rank's thread
    private final boolean overlapPasses;
    // Stage 3 prefetch: the order each kind of pass opened units in, recorded on its first pass; later passes gather
    // the next unit in that order while the current one computes. Touched only by the thread running the pass.
    private final UnitOrder forwardOrder = new UnitOrder();
    private final UnitOrder backwardOrder = new UnitOrder();
    private final Map<Integer, Future<Tensor>> prefetched = new ConcurrentHashMap<>();
    private boolean inTrainingForward;   // set around forward(); evaluation's forward gathers without prefetch
    /** Unit reduce-scatters posted by backward and maybe not yet run (backward's thread only). */
    private final ArrayDeque<Future<Object>> inFlight = new ArrayDeque<>();

    /**
     * How many units' gradient buffers may wait for their reduce-scatter while backward goes on: transient gradient
     * memory stays under about two units (plus the embeddings', open all backward) however slow communication is.
     */
    static final int MAX_REDUCTIONS_IN_FLIGHT = 2;
    private volatile int microBatch;
    private long steps;

    /**
     * @param stage  2 or 3
     * @param params allocated with {@link ParameterSet.Residency#VALUES} (stage 2) or {@link ParameterSet.Residency#NONE}
     *               (stage 3), every unit padded to a multiple of the dp size
     * @param moments where the AdamW moments of the shard live ({@link ShardMoments#resident} or on disk)
     * @throws IllegalArgumentException if the stage is not 2 or 3, the residency does not match it, or a unit does
     *                                  not split into equal shards
     */
    public ZeroShardedUpdate(int stage, ParameterSet params, Communicator dp, MemoryPool pool,
                             AdamWOptimizer.Settings settings, ShardMoments.Factory moments) {
        this(stage, params, dp, pool, settings, moments, true);
    }

    /**
     * As {@link #ZeroShardedUpdate(int, ParameterSet, Communicator, MemoryPool, AdamWOptimizer.Settings,
     * ShardMoments.Factory)}; with {@code overlapPasses} false, forward and backward run on the calling thread and
     * wait for each unit's gather (and reduce-scatter) in turn.
     */
    public ZeroShardedUpdate(int stage, ParameterSet params, Communicator dp, MemoryPool pool,
                             AdamWOptimizer.Settings settings, ShardMoments.Factory moments, boolean overlapPasses) {
        this(stage, params, dp, pool, settings, moments, overlapPasses, StageGradients.NONE);
    }

    /**
     * As {@link #ZeroShardedUpdate(int, ParameterSet, Communicator, MemoryPool, AdamWOptimizer.Settings,
     * ShardMoments.Factory, boolean)} for one pipeline stage's parameters: the tied embedding's gradient piece summed
     * with the other end's, the norm over every stage ({@code stages}).
     */
    public ZeroShardedUpdate(int stage, ParameterSet params, Communicator dp, MemoryPool pool,
                             AdamWOptimizer.Settings settings, ShardMoments.Factory moments, boolean overlapPasses,
                             StageGradients stages) {
        this(stage, params, dp, pool, settings, moments, overlapPasses, stages, Experts.NONE);
    }

    /**
     * As above for an expert-parallel rank: its experts' segments sharded over {@code experts}' group, the parameters
     * allocated {@linkplain ParameterSet.Builder#segmentedBy segmented} by {@link MoeConfig#isExpertParameter}.
     *
     * @throws IllegalArgumentException also if a segment does not split into equal pieces over its group
     */
    public ZeroShardedUpdate(int stage, ParameterSet params, Communicator dp, MemoryPool pool,
                             AdamWOptimizer.Settings settings, ShardMoments.Factory moments, boolean overlapPasses,
                             StageGradients stages, Experts experts) {
        if (stage != 2 && stage != 3) throw new IllegalArgumentException("ZeroShardedUpdate runs ZeRO stage 2 or 3, got " + stage);
        ParameterSet.Residency expected = stage == 2 ? ParameterSet.Residency.VALUES : ParameterSet.Residency.NONE;
        if (params.residency() != expected) {
            throw new IllegalArgumentException("ZeRO stage " + stage + " needs parameters allocated with residency " + expected
                    + ", got " + params.residency() + " (see ParameterSet.Builder.allocate)");
        }
        for (ParameterSet.Unit u : params.units()) {
            if (u.size() % dp.size() != 0) {
                throw new IllegalArgumentException("ZeRO needs every unit to split into " + dp.size() + " equal shards, but unit "
                        + u.name() + " has " + u.size() + " elements; allocate the parameters padded to a multiple of the "
                        + "dp size (ParameterSet.Builder.allocate(pool, dtype, " + dp.size() + ", residency))");
            }
        }
        this.stage = stage;
        this.stages = stages;
        this.params = params;
        this.dp = dp;
        this.pool = pool;
        this.buffers = new UnitBuffers(pool, params.dtype());
        this.experts = experts;
        List<List<Segment>> bySegment = new ArrayList<>();
        int shard = 0;
        for (ParameterSet.Unit u : params.units()) {
            List<Segment> mine = segmentsOf(u, shard);
            bySegment.add(mine);
            for (Segment g : mine) shard += g.pieceLength();
        }
        this.segments = List.copyOf(bySegment);
        this.shardSize = shard;
        int units = params.units().size();
        this.gatheredValues = new Tensor[units];
        this.unitGrads = new Tensor[units];
        this.overlap = new PassOverlap(pool.rankName().replace(' ', '-') + "-zero" + stage);
        this.overlapPasses = overlapPasses;
        Tensor values = null, grads = null;
        ShardMoments m = null;
        ScalarReduction s = null;
        try {
            values = stage == 3 ? Tensor.allocate(pool, MemoryCategory.PARAMETERS, params.dtype(), shardSize) : null;
            grads = Tensor.allocate(pool, MemoryCategory.GRADIENTS, params.dtype(), shardSize);
            m = moments.create(pool, params.dtype(), shardSize);
            s = new ScalarReduction(dp, pool);
        } catch (RuntimeException | IOException e) {
            for (AutoCloseable c : new AutoCloseable[]{values, grads, m, s}) closeQuietly(c, e);
            if (e instanceof RuntimeException re) throw re;
            throw new UncheckedIOException("cannot create the optimizer state's file: " + e.getMessage(), (IOException) e);
        }
        this.valueShard = values;
        this.gradShard = grads;
        this.moments = m;
        this.scalar = s;
        this.adamW = new ShardAdamW(settings);
        for (ParameterSet.Unit u : params.units()) {
            for (Segment g : segments.get(u.index())) adamW.addRange(params, u.parameters(), g.flatPiece(), g.pieceLength(), g.shardOffset());
        }
    }

    /**
     * The unit's segments, this rank's pieces laid out from {@code shardOffset}: the whole unit over dp, or under
     * expert parallelism its runs of dense parameters over dp and of experts over the expert-data-parallel group (each
     * run from its first parameter's offset, the padding before the next run or the unit's end included).
     */
    private List<Segment> segmentsOf(ParameterSet.Unit u, int shardOffset) {
        List<Parameter> byOffset = new ArrayList<>(u.parameters());
        byOffset.sort(Comparator.comparingLong(params::offsetOf));
        List<int[]> starts = new ArrayList<>();   // {offset, expert ? 1 : 0}
        for (Parameter p : byOffset) {
            boolean expert = experts.sharded() && MoeConfig.isExpertParameter(p.name());
            if (starts.isEmpty() || (starts.getLast()[1] == 1) != expert) {
                starts.add(new int[]{starts.isEmpty() ? u.offset() : Math.toIntExact(params.offsetOf(p)), expert ? 1 : 0});
            }
        }
        if (starts.isEmpty()) starts.add(new int[]{u.offset(), 0});
        List<Segment> out = new ArrayList<>();
        for (int i = 0; i < starts.size(); i++) {
            int from = starts.get(i)[0], to = i + 1 < starts.size() ? starts.get(i + 1)[0] : u.offset() + u.size();
            boolean expert = starts.get(i)[1] == 1;
            Communicator group = expert ? experts.expertDp() : dp;
            if ((to - from) % group.size() != 0) {
                throw new IllegalArgumentException("ZeRO needs every " + (expert ? "run of experts" : "run of dense parameters")
                        + " of unit " + u.name() + " to split into " + group.size() + " equal shards, but [" + from + ", " + to
                        + ") has " + (to - from) + " elements; allocate the parameters segmented by "
                        + "MoeConfig::isExpertParameter and padded to a multiple of the dp size (ParameterSet.Builder"
                        + ".segmentedBy, then allocate(pool, dtype, " + dp.size() + ", residency))");
            }
            Segment g = new Segment(from, to - from, expert, group, shardOffset);
            out.add(g);
            shardOffset += g.pieceLength();
        }
        return List.copyOf(out);
    }

    private static void closeQuietly(AutoCloseable c, Exception primary) {
        if (c == null) return;
        try {
            c.close();
        } catch (Exception e) {
            primary.addSuppressed(e);
        }
    }

    public int stage() { return stage; }

    /**
     * Fills this rank's parameter shard with the initial values a whole-model {@link ParameterSet#initialize}
     * gives, unit by unit through a transient buffer, so no rank ever holds all parameters (stage 3). At stage 2
     * the flat values are whole: initialise them directly.
     */
    public void initialize(long seed) {
        if (stage == 2) {
            params.initialize(seed);
            return;
        }
        for (ParameterSet.Unit u : params.units()) {
            try (Tensor full = Tensor.allocate(pool, MemoryCategory.BUFFERS, params.dtype(), u.size())) {
                bindValues(u, full);
                params.initialize(seed, u.parameters());
                for (Segment g : segments.get(u.index())) {
                    Vectors.copy(g.pieceOf(valueShard), full.slice(0, g.flatPiece() - u.offset(), g.pieceLength()));
                }
                bindValues(u, null);
            }
        }
    }

    @Override
    public Gpt.Hooks hooks() {
        return this;
    }

    @Override
    public void beginMicroBatch(int index, int count) {
        this.microBatch = index;
    }

    /** Stage 3: runs forward on a helper thread while this thread runs the gathers its hooks post (prefetch). */
    @Override
    public <T> T forward(Supplier<T> forward) {
        if (stage != 3) return forward.get();
        forwardOrder.begin();
        inTrainingForward = true;
        try {
            return overlapPasses ? overlap.run("forward", forward) : forward.get();
        } finally {
            inTrainingForward = false;
            forwardOrder.end();
        }
    }

    /** Runs backward on a helper thread while this thread runs the gathers and reduce-scatters its hooks post. */
    @Override
    public void backward(Runnable backward) {
        backwardOrder.begin();
        inFlight.clear();
        try {
            if (overlapPasses) overlap.run("backward", backward);
            else backward.run();
        } finally {
            backwardOrder.end();
        }
    }

    // ------------------------------------------------------------------ hooks

    @Override
    public void beforeForward(ParameterSet.Unit unit) {
        if (stage != 3) return;
        if (inTrainingForward) open(unit, forwardOrder);
        else gather(unit);
    }

    @Override
    public void afterForward(ParameterSet.Unit unit) {
        if (stage == 3) releaseValues(unit);
    }

    @Override
    public void beforeBackward(ParameterSet.Unit unit) {
        if (stage == 3) open(unit, backwardOrder);
        Tensor g = buffers.take(unit.size(), true);
        transientGrads.add(g);
        unitGrads[unit.index()] = g;
        for (Parameter p : unit.parameters()) p.bindGrad(view(g, unit, p));
    }

    /** Starts the reduce-scatter of the unit's gradients into this rank's piece (on the rank thread), frees the unit. */
    @Override
    public void afterBackward(ParameterSet.Unit unit) {
        Tensor whole = unitGrads[unit.index()];
        unitGrads[unit.index()] = null;
        for (Parameter p : unit.parameters()) p.bindGrad(null);
        if (stage == 3) releaseValues(unit);
        List<Segment> parts = segments.get(unit.index());
        int micro = microBatch;
        inFlight.add(overlap.post(() -> {
            try {
                for (Segment g : parts) {
                    Tensor piece = g.pieceOf(gradShard), part = whole.slice(0, g.offset() - unit.offset(), g.length());
                    if (micro == 0) {
                        g.group().reduceScatter(piece, part, ReduceOp.AVG);
                    } else {
                        Tensor reduced = buffers.take(piece.dim(0), false);
                        try {
                            g.group().reduceScatter(reduced, part, ReduceOp.AVG);
                            Vectors.accumulate(piece, reduced);
                        } finally {
                            buffers.give(reduced);
                        }
                    }
                }
            } finally {
                transientGrads.remove(whole);
                buffers.give(whole);
            }
            return null;
        }));
        // Bound the unit gradient buffers alive at once: backward waits for the oldest reduce-scatter when too far ahead.
        while (inFlight.size() > MAX_REDUCTIONS_IN_FLIGHT) PassOverlap.await(inFlight.poll());
        while (!inFlight.isEmpty() && inFlight.peek().isDone()) inFlight.poll();
    }

    /**
     * Stage 3, as a pass opens {@code unit}: binds its values (gathered now, or taken from the prefetch) after posting
     * the gather of the unit the pass opens next, so that gather runs while {@code unit} computes.
     */
    private void open(ParameterSet.Unit unit, UnitOrder order) {
        Future<Tensor> mine = prefetched.remove(unit.index());
        if (mine == null && gatheredValues[unit.index()] == null) mine = overlap.post(() -> gatherNow(unit));
        prefetchNext(unit, order);   // queued behind this unit's own gather
        if (mine != null) bind(unit, PassOverlap.await(mine));
    }

    /** All-gathers {@code unit}'s values into a transient buffer and binds its parameters to it (idempotent). */
    private void gather(ParameterSet.Unit unit) {
        if (gatheredValues[unit.index()] != null) return;
        bind(unit, overlap.call(() -> gatherNow(unit)));
    }

    private void bind(ParameterSet.Unit unit, Tensor full) {
        gatheredValues[unit.index()] = full;
        bindValues(unit, full);
    }

    /** On the rank thread: the unit's whole values in a transient buffer. */
    private Tensor gatherNow(ParameterSet.Unit unit) {
        Tensor t = buffers.take(unit.size(), false);
        try {
            for (Segment g : segments.get(unit.index())) {
                g.group().allGather(t.slice(0, g.offset() - unit.offset(), g.length()), g.pieceOf(valueShard));
            }
        } catch (RuntimeException e) {
            buffers.give(t);
            throw e;
        }
        return t;
    }

    /**
     * Stage 3: starts gathering the unit that the pass will open after {@code unit} (by the order the first pass of
     * its kind recorded), so its all-gather runs while {@code unit} computes. Every rank makes the same decisions,
     * so the collectives stay in the same order everywhere.
     */
    private void prefetchNext(ParameterSet.Unit unit, UnitOrder order) {
        int next = order.next(unit.index());
        if (next < 0 || gatheredValues[next] != null || prefetched.containsKey(next)) return;
        ParameterSet.Unit nextUnit = params.units().get(next);
        prefetched.put(next, overlap.post(() -> gatherNow(nextUnit)));
    }

    /** Frees gathers prefetched but never opened (a pass left its recorded order); rank thread, nothing queued. */
    private void discardPrefetched() {
        for (Future<Tensor> f : prefetched.values()) {
            if (f.state() == Future.State.SUCCESS) buffers.give(f.resultNow());
        }
        prefetched.clear();
    }

    /**
     * The order one kind of pass (forward or backward) opens units in: recorded on its first pass, then followed
     * position by position to name the unit after the current one. Used by one pass's thread at a time.
     */
    private static final class UnitOrder {
        private final List<Integer> units = new ArrayList<>();
        private boolean recorded;
        private int position;

        void begin() { position = 0; }

        void end() { recorded = true; }

        /** The unit opened after {@code unit}, or -1: none, still recording, or the pass left the recorded order. */
        int next(int unit) {
            if (!recorded) {
                units.add(unit);
                return -1;
            }
            int at = position++;
            if (at >= units.size() || units.get(at) != unit) return -1;
            return at + 1 < units.size() ? units.get(at + 1) : -1;
        }
    }

    private void releaseValues(ParameterSet.Unit unit) {
        Tensor full = gatheredValues[unit.index()];
        if (full == null) return;
        bindValues(unit, null);
        gatheredValues[unit.index()] = null;
        buffers.give(full);
    }

    private void bindValues(ParameterSet.Unit unit, Tensor full) {
        for (Parameter p : unit.parameters()) p.bindValue(full == null ? null : view(full, unit, p));
    }

    /** {@code p}'s part of a unit-sized buffer, with its shape. */
    private Tensor view(Tensor unitBuffer, ParameterSet.Unit unit, Parameter p) {
        int at = Math.toIntExact(params.offsetOf(p) - unit.offset());
        return unitBuffer.slice(0, at, Math.toIntExact(p.numel())).view(p.shape());
    }

    /** This rank's piece of a unit of one segment (a dense unit) in a shard-laid-out tensor [S]. */
    private Tensor piece(Tensor shard, ParameterSet.Unit unit) {
        List<Segment> parts = segments.get(unit.index());
        if (parts.size() != 1) throw new IllegalStateException("unit " + unit.name() + " has " + parts.size() + " segments");
        return parts.getFirst().pieceOf(shard);
    }

    /** Every segment of every unit, in shard order. */
    private List<Segment> allSegments() {
        List<Segment> all = new ArrayList<>();
        for (List<Segment> u : segments) all.addAll(u);
        return all;
    }

    // ------------------------------------------------------------------ update

    @Override
    public Applied apply(double lr, double maxNorm) {
        long start = System.nanoTime();
        overlap.drain();   // the reduce-scatters still in flight when backward ended: the exposed part
        discardPrefetched();   // the values are about to change
        if (stages.tiedUnit() != null) stages.sumTied(piece(gradShard, stages.tiedUnit()), pool);
        if (experts.sharded()) {
            for (Segment g : allSegments()) if (g.expert()) Vectors.scale(g.pieceOf(gradShard), 1.0 / experts.ep());
        }
        ParameterSet.Unit uncounted = stages.uncountedUnit();
        double sumOfSquares;
        if (stages.tensorParallel()) {
            // the shard is each segment's piece in turn: its elements [flatPiece, + pieceLength) at shardOffset
            List<Segment> all = allSegments();
            long[] flat = new long[all.size()];
            int[] at = new int[all.size()], lengths = new int[all.size()];
            for (int i = 0; i < all.size(); i++) {
                lengths[i] = all.get(i).pieceLength();
                at[i] = all.get(i).shardOffset();
                flat[i] = all.get(i).flatPiece();
            }
            stages.sumPartialGradients(gradShard, flat, at, lengths);
            sumOfSquares = stages.countedSumOfSquares(gradShard, flat, at, lengths);
        } else if (uncounted == null) {
            sumOfSquares = Vectors.sumOfSquares(gradShard);
        } else {
            Segment u = segments.get(uncounted.index()).getFirst();
            sumOfSquares = StageGradients.sumOfSquaresWithout(gradShard, u.shardOffset(), u.pieceLength());
        }
        double norm = Math.sqrt(stages.sumOverStages(scalar.reduce(sumOfSquares, ReduceOp.SUM)));
        long communication = System.nanoTime() - start;
        ShardAdamW.clip(gradShard, norm, maxNorm);
        steps++;
        adamW.step(moments, stage == 2 ? params.values() : valueShard, stage == 2, gradShard, false, lr, steps);
        if (stage == 2) {
            long gather = System.nanoTime();
            Tensor flat = params.values();
            for (Segment g : allSegments()) g.group().allGather(g.of(flat), g.ownPieceOf(flat));
            communication += System.nanoTime() - gather;
        }
        return new Applied(norm, communication);
    }

    /**
     * Stage 3: adds delta to the elements of {@code p} this rank's shard holds, its piece of each segment that
     * overlaps p (the change is elementwise and every rank is given the same delta, so the next gather sees the
     * whole sum, as if each rank had added it to whole values); stage 2: to the whole values. Between passes only.
     *
     * @throws IllegalArgumentException if delta's length is not p's element count
     * @throws IllegalStateException    at stage 3 if p's unit is gathered now (inside a pass)
     */
    @Override
    public void addToValues(Parameter p, double[] delta) {
        if (stage == 2) {
            ParameterUpdate.super.addToValues(p, delta);
            return;
        }
        ParameterUpdate.checkDelta(p, delta);
        if (p.hasValue()) {
            throw new IllegalStateException("parameter " + p.name() + " is gathered now; change it between passes, after apply");
        }
        overlap.drain();
        discardPrefetched();   // a gather made before the change would be stale
        long start = params.offsetOf(p), end = start + p.numel();
        for (Segment g : allSegments()) {
            long from = Math.max(start, g.flatPiece()), to = Math.min(end, (long) g.flatPiece() + g.pieceLength());
            for (long i = from; i < to; i++) {
                int at = g.shardOffset() + Math.toIntExact(i - g.flatPiece());
                valueShard.set(valueShard.getDouble(at) + delta[Math.toIntExact(i - start)], at);
            }
        }
    }

    @Override
    public void settle() {
        overlap.drain();
    }

    @Override
    public double mean(double value) {
        overlap.drain();
        return scalar.reduce(value, ReduceOp.AVG);
    }

    @Override
    public long steps() {
        return steps;
    }

    // ------------------------------------------------------------------ checkpoints

    /** Collective: fills {@code full} [P'] with every unit's whole values, in the flat layout. */
    public void gatherValues(Tensor full) {
        overlap.drain();
        if (stage == 2) {
            Vectors.copy(full, params.values());
            return;
        }
        for (Segment g : allSegments()) g.group().allGather(g.of(full), g.pieceOf(valueShard));
    }

    /** This rank's shards, each [S] in shard layout (see {@link #pieces}): values (stage 3), m, v. */
    @FunctionalInterface
    public interface Shards {
        /** @param values the value shard at stage 3; null at stage 2, whose values are whole in the parameter set */
        void accept(Tensor values, Tensor m, Tensor v);
    }

    /**
     * Runs {@code body} with this rank's shards to read (for a checkpoint written piece by piece), after the
     * overlapped gathers and reductions have finished. Not collective. Which flat elements each part of the shards
     * holds is {@link #pieces}.
     */
    public void readShards(Shards body) {
        overlap.drain();
        moments.read((m, v) -> body.accept(valueShard, m, v));
    }

    /** As {@link #readShards}, the shards to overwrite from a checkpoint; then {@code steps} updates count as applied. */
    public void writeShards(Shards body, long steps) {
        overlap.drain();
        discardPrefetched();
        moments.write((m, v) -> body.accept(valueShard, m, v));
        this.steps = steps;
    }

    /**
     * Where this rank's shards sit in the flat layout: its piece of every segment in turn (without expert parallelism,
     * one per unit: unit u's elements [u.offset() + dpRank·u.size()/N, + u.size()/N) at u.offset()/N). Over the dp
     * group (and, for experts, over the ranks holding other experts) every flat element is in exactly one rank's pieces.
     */
    public List<Piece> pieces() {
        return allSegments().stream().map(g -> new Piece(g.flatPiece(), g.shardOffset(), g.pieceLength())).toList();
    }

    /** Elements of this rank's shard: P'/N without expert parallelism. */
    public int shardSize() { return shardSize; }

    @Override
    public void close() {
        overlap.close();
        discardPrefetched();
        for (Tensor g : transientGrads) g.close();
        for (Tensor v : gatheredValues) if (v != null) v.close();
        buffers.close();
        if (valueShard != null) valueShard.close();
        gradShard.close();
        moments.close();
        scalar.close();
    }
}
