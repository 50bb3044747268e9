package dev.shardwise.parallel;

import dev.shardwise.comm.Communicator;
import dev.shardwise.comm.ReduceOp;
import dev.shardwise.core.kernels.Vectors;
import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.tensor.Tensor;
import dev.shardwise.model.Gpt;
import dev.shardwise.model.Parameter;
import dev.shardwise.model.ParameterSet;
import dev.shardwise.model.optim.AdamWOptimizer;
import dev.shardwise.model.optim.ParameterUpdate;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.util.ArrayDeque;
import java.util.ArrayList;
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
 * start and the embedding finishes wte's gradient at its end.
 *
 * <p>Overlap (DeepSpeed's parameter prefetch): each pass runs on a helper thread ({@link PassOverlap}) while the
 * rank's own thread runs the gathers and reduce-scatters the hooks post, in order. Backward overlaps at stages 2
 * and 3, forward at stage 3 (stage 2 has nothing to gather). At stage 3, as a unit opens, the next unit's gather
 * is posted behind its own (prefetch, by the unit order the first pass of each kind recorded), so unit l+1's
 * all-gather runs while unit l computes. Evaluation's forward (outside {@link #forward}) gathers unit by unit on
 * the calling thread.
 *
 * <p>Reductions add in rank order and every rank runs the same collectives in the same order, so a layout is
 * bit-reproducible run to run.
 */
public final class ZeroShardedUpdate implements ParameterUpdate, Gpt.Hooks {
    private final int stage;
    private final StageGradients stages;
    private final ParameterSet params;
    private final Communicator dp;
    private final MemoryPool pool;
    private final int dpSize;
    private final int dpRank;
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
        this.dpSize = dp.size();
        this.dpRank = dp.rank();
        this.shardSize = Math.toIntExact(params.paddedCount() / dpSize);
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
            int piece = u.size() / dpSize;
            adamW.addRange(params, u.parameters(), u.offset() + (long) dpRank * piece, piece, u.offset() / dpSize);
        }
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
                Vectors.copy(piece(valueShard, u), full.slice(0, dpRank * (u.size() / dpSize), u.size() / dpSize));
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
        Tensor g = Tensor.allocate(pool, MemoryCategory.BUFFERS, params.dtype(), unit.size());
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
        Tensor piece = piece(gradShard, unit);
        int micro = microBatch;
        inFlight.add(overlap.post(() -> {
            try {
                if (micro == 0) {
                    dp.reduceScatter(piece, whole, ReduceOp.AVG);
                } else {
                    try (Tensor reduced = Tensor.allocate(pool, MemoryCategory.BUFFERS, params.dtype(), piece.dim(0))) {
                        dp.reduceScatter(reduced, whole, ReduceOp.AVG);
                        Vectors.accumulate(piece, reduced);
                    }
                }
            } finally {
                transientGrads.remove(whole);
                whole.close();
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

    /** On the rank thread: the unit's whole values in a new BUFFERS tensor. */
    private Tensor gatherNow(ParameterSet.Unit unit) {
        Tensor t = Tensor.allocate(pool, MemoryCategory.BUFFERS, params.dtype(), unit.size());
        try {
            dp.allGather(t, piece(valueShard, unit));
        } catch (RuntimeException e) {
            t.close();
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
            if (f.state() == Future.State.SUCCESS) f.resultNow().close();
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
        full.close();
    }

    private void bindValues(ParameterSet.Unit unit, Tensor full) {
        for (Parameter p : unit.parameters()) p.bindValue(full == null ? null : view(full, unit, p));
    }

    /** {@code p}'s part of a unit-sized buffer, with its shape. */
    private Tensor view(Tensor unitBuffer, ParameterSet.Unit unit, Parameter p) {
        int at = Math.toIntExact(params.offsetOf(p) - unit.offset());
        return unitBuffer.slice(0, at, Math.toIntExact(p.numel())).view(p.shape());
    }

    /** This rank's piece of {@code unit} in a shard-laid-out tensor [S]. */
    private Tensor piece(Tensor shard, ParameterSet.Unit unit) {
        return shard.slice(0, unit.offset() / dpSize, unit.size() / dpSize);
    }

    // ------------------------------------------------------------------ update

    @Override
    public Applied apply(double lr, double maxNorm) {
        long start = System.nanoTime();
        overlap.drain();   // the reduce-scatters still in flight when backward ended: the exposed part
        discardPrefetched();   // the values are about to change
        if (stages.tiedUnit() != null) stages.sumTied(piece(gradShard, stages.tiedUnit()), pool);
        ParameterSet.Unit uncounted = stages.uncountedUnit();
        double sumOfSquares;
        if (stages.tensorParallel()) {
            // the shard is each unit's piece in turn: unit u's elements [offset + dpRank·size/dp, + size/dp) at offset/dp
            List<ParameterSet.Unit> units = params.units();
            long[] flat = new long[units.size()];
            int[] at = new int[units.size()], lengths = new int[units.size()];
            for (int i = 0; i < units.size(); i++) {
                ParameterSet.Unit u = units.get(i);
                lengths[i] = u.size() / dpSize;
                at[i] = u.offset() / dpSize;
                flat[i] = u.offset() + (long) dpRank * lengths[i];
            }
            stages.sumPartialGradients(gradShard, flat, at, lengths);
            sumOfSquares = stages.countedSumOfSquares(gradShard, flat, at, lengths);
        } else {
            sumOfSquares = uncounted == null ? Vectors.sumOfSquares(gradShard)
                    : StageGradients.sumOfSquaresWithout(gradShard, uncounted.offset() / dpSize, uncounted.size() / dpSize);
        }
        double norm = Math.sqrt(stages.sumOverStages(scalar.reduce(sumOfSquares, ReduceOp.SUM)));
        long communication = System.nanoTime() - start;
        ShardAdamW.clip(gradShard, norm, maxNorm);
        steps++;
        adamW.step(moments, stage == 2 ? params.values() : valueShard, stage == 2, gradShard, false, lr, steps);
        if (stage == 2) {
            long gather = System.nanoTime();
            Tensor flat = params.values();
            for (ParameterSet.Unit u : params.units()) {
                int piece = u.size() / dpSize;
                dp.allGather(flat.slice(0, u.offset(), u.size()), flat.slice(0, u.offset() + dpRank * piece, piece));
            }
            communication += System.nanoTime() - gather;
        }
        return new Applied(norm, communication);
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
        for (ParameterSet.Unit u : params.units()) dp.allGather(full.slice(0, u.offset(), u.size()), piece(valueShard, u));
    }

    /** Takes this rank's shard of whole values {@code full} [P'] (read from a checkpoint). */
    public void loadValues(Tensor full) {
        if (stage == 2) {
            Vectors.copy(params.values(), full);
            return;
        }
        discardPrefetched();
        for (ParameterSet.Unit u : params.units()) Vectors.copy(piece(valueShard, u), ownPiece(full, u));
    }

    /** Collective: fills whole first and second moments [P'] from every rank's shard. */
    public void gatherMoments(Tensor fullM, Tensor fullV) {
        overlap.drain();
        moments.read((m, v) -> {
            for (ParameterSet.Unit u : params.units()) {
                dp.allGather(fullM.slice(0, u.offset(), u.size()), piece(m, u));
                dp.allGather(fullV.slice(0, u.offset(), u.size()), piece(v, u));
            }
        });
    }

    /** Takes this rank's shard of whole moments [P'] and the number of updates applied before. */
    public void loadMoments(Tensor fullM, Tensor fullV, long steps) {
        moments.write((m, v) -> {
            for (ParameterSet.Unit u : params.units()) {
                Vectors.copy(piece(m, u), ownPiece(fullM, u));
                Vectors.copy(piece(v, u), ownPiece(fullV, u));
            }
        });
        this.steps = steps;
    }

    private Tensor ownPiece(Tensor full, ParameterSet.Unit unit) {
        int piece = unit.size() / dpSize;
        return full.slice(0, unit.offset() + dpRank * piece, piece);
    }

    /** Elements of this rank's shard, P'/N. */
    public int shardSize() { return shardSize; }

    @Override
    public void close() {
        overlap.close();
        discardPrefetched();
        for (Tensor g : transientGrads) g.close();
        for (Tensor v : gatheredValues) if (v != null) v.close();
        if (valueShard != null) valueShard.close();
        gradShard.close();
        moments.close();
        scalar.close();
    }
}
