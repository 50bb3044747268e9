package dev.shardwise.parallel;

import dev.shardwise.comm.Communicator;
import dev.shardwise.comm.ReduceOp;
import dev.shardwise.core.kernels.Vectors;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.tensor.Tensor;
import dev.shardwise.model.Gpt;
import dev.shardwise.model.MoeConfig;
import dev.shardwise.model.Parameter;
import dev.shardwise.model.ParameterSet;
import dev.shardwise.model.optim.AdamWOptimizer;
import dev.shardwise.model.optim.GradientClipping;
import dev.shardwise.model.optim.ParameterUpdate;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.function.BiConsumer;

/**
 * The update of an expert-parallel rank (GShard; Megatron-Core's expert-data-parallel reduction): the flat
 * gradients split into runs of non-expert parameters, averaged over the data-parallel group (every rank holds them),
 * and runs of this rank's experts, averaged over the expert-data-parallel group (the dp/ep ranks holding the same
 * experts) and scaled by 1/ep, since each already sums the contributions of the ep ranks whose tokens it served: so
 * every gradient is the mean over all dp ranks' micro-batches, as without expert parallelism. The global norm adds
 * the non-expert squares once and the expert squares summed over the expert-parallel group (each expert once).
 *
 * <p>ZeRO stage 1 (Rajbhandari et al. 2020) shards the AdamW state of each run over the run's group: rank j of n owns
 * chunk j of ⌈len/n⌉ elements, updates it, and broadcasts it to the group (non-expert state over dp, expert state
 * over the expert-data-parallel group: 8 bytes per element ÷ n). Stage 0 owns every run whole. Per step: an
 * all-reduce of every run over its group, two scalars, and at stage 1 n broadcasts of each run's chunks. Stages 2
 * and 3 under expert parallelism are {@link ZeroShardedUpdate}'s ({@link ZeroShardedUpdate.Experts}).
 *
 * <p>Under pipeline parallelism ({@link StageGradients}) the tied embedding's gradient is summed with the other end
 * stage's first, the head's copy of it is left out of the norm, and the squares are summed over the stages too.
 * Under tensor parallelism (each expert keeps the tp split of its linears; the ep and expert-data-parallel groups
 * are made of ranks of one tp rank) each rank's squares count its slices and, on tp rank 0 only, what every tp rank
 * holds whole, and are summed over the tp group.
 *
 * <p>Overlapped (as PyTorch DDP's reducer, Li et al. 2020; {@link DataParallel} does it without expert parallelism):
 * the last micro-batch's backward runs on a helper thread ({@link LastBackwardOverlap}) and, as it finishes each parameter
 * unit (through the model's {@link Gpt.Hooks}), the unit's parts of the runs are all-reduced over their groups (and
 * the experts' scaled by 1/ep) on the rank's thread while backward goes on with the units below; {@link #apply}
 * waits for what is still queued (the exposed part) and reduces only what no unit covered. The all-reduce and the
 * scale are elementwise, so the result is the same bits as reducing after backward. A pipeline stage's tied
 * embedding is left for {@link #apply}: it is summed with the other end's before its reduction.
 *
 * <p>One rank's training thread; the communicators belong to the caller.
 */
public final class ExpertParallelUpdate implements ParameterUpdate {
    /** A run [offset, offset + length) of the flat buffers and the group that reduces it. */
    private record Run(int offset, int length, boolean expert) { }

    /**
     * A run's elements [offset, offset + length) inside one unit ({@code unit} its index; -1: in none), what
     * {@link #reduce} does to them the same, elementwise, whether alone or as part of the whole run.
     */
    private record Part(int offset, int length, boolean expert, int unit) { }

    /**
     * Elements [flatStart, flatStart + length) of the flat buffers, whose AdamW moments sit at
     * [momentOffset, momentOffset + length) of the moments {@link #readMoments} shows.
     */
    public record Range(int flatStart, int momentOffset, int length) { }

    private final ParameterSet params;
    private final MemoryPool pool;
    private final StageGradients stages;
    private final Communicator dp, ep, expertDp;
    private final boolean sharded;
    private final ScalarReduction dpScalar, epScalar;
    private final ShardAdamW adamW;
    private final ShardMoments moments;
    private final List<Run> runs = new ArrayList<>();
    private final List<Range> held = new ArrayList<>(), saved = new ArrayList<>();
    private final LastBackwardOverlap overlap;   // null: reduce after backward
    private final List<List<Part>> runParts = new ArrayList<>();    // per run: its parts, one per unit it crosses
    private final List<List<Part>> unitParts = new ArrayList<>();   // per unit index: the parts its backward reduces
    private final boolean[] unitReduced;   // per unit: its parts were posted by this step's last backward
    private long steps;

    /**
     * @param params   this rank's parameters: the non-expert ones and its E/ep experts of each MoE block
     * @param zero     ZeRO stage, 0 or 1
     * @param dp       the data-parallel group (every rank of a stage's replicas)
     * @param ep       the expert-parallel group
     * @param expertDp the expert-data-parallel group (ranks holding the same experts)
     * @throws IllegalArgumentException if zero is not 0 or 1
     */
    public ExpertParallelUpdate(ParameterSet params, AdamWOptimizer.Settings settings, int zero, Communicator dp,
                                Communicator ep, Communicator expertDp, MemoryPool pool) {
        this(params, settings, zero, dp, ep, expertDp, pool, StageGradients.NONE);
    }

    /**
     * As above for one pipeline stage's parameters, or one tensor-parallel rank's slices: the tied embedding summed
     * with the other end's, the norm over every stage and tp rank, each element counted once ({@code stages}).
     */
    public ExpertParallelUpdate(ParameterSet params, AdamWOptimizer.Settings settings, int zero, Communicator dp,
                                Communicator ep, Communicator expertDp, MemoryPool pool, StageGradients stages) {
        this(params, settings, zero, dp, ep, expertDp, pool, stages, ShardMoments.resident());
    }

    /**
     * As above, the AdamW moments this rank holds created by {@code moments} (in memory, or in a memory-mapped file:
     * ZeRO-Infinity's optimizer offload).
     */
    public ExpertParallelUpdate(ParameterSet params, AdamWOptimizer.Settings settings, int zero, Communicator dp,
                                Communicator ep, Communicator expertDp, MemoryPool pool, StageGradients stages,
                                ShardMoments.Factory moments) {
        this(params, settings, zero, dp, ep, expertDp, pool, stages, moments, false);
    }

    /**
     * As above; with {@code overlap} the reductions run unit by unit during the last micro-batch's backward (the
     * model run with {@link #hooks()}), the same bits as after it.
     */
    public ExpertParallelUpdate(ParameterSet params, AdamWOptimizer.Settings settings, int zero, Communicator dp,
                                Communicator ep, Communicator expertDp, MemoryPool pool, StageGradients stages,
                                ShardMoments.Factory moments, boolean overlap) {
        if (zero != 0 && zero != 1) {
            throw new IllegalArgumentException("ExpertParallelUpdate runs ZeRO 0 or 1, got zero=" + zero
                    + "; stages 2 and 3 under expert parallelism run ZeroShardedUpdate with ZeroShardedUpdate.Experts");
        }
        this.params = params;
        this.pool = pool;
        this.stages = stages;
        this.dp = dp;
        this.ep = ep;
        this.expertDp = expertDp;
        this.sharded = zero == 1;
        this.dpScalar = new ScalarReduction(dp, pool);
        this.epScalar = new ScalarReduction(ep, pool);
        List<Parameter> byOffset = new ArrayList<>(params.parameters());
        byOffset.sort(Comparator.comparingLong(params::offsetOf));
        int at = 0;
        for (Parameter p : byOffset) {
            if (!MoeConfig.isExpertParameter(p.name())) continue;
            int offset = Math.toIntExact(params.offsetOf(p)), n = Math.toIntExact(p.numel());
            if (offset > at) add(at, offset - at, false);
            add(offset, n, true);
            at = offset + n;
        }
        int all = Math.toIntExact(params.paddedCount());
        if (all > at) add(at, all - at, false);
        this.adamW = new ShardAdamW(settings);
        int shard = 0;
        for (Run r : runs) {
            Communicator group = group(r.expert());
            int chunk = chunk(r, group), from = Math.min(r.length(), sharded ? group.rank() * chunk : 0);
            int length = Math.min(r.length() - from, sharded ? chunk : r.length());
            adamW.addRange(params, params.parameters(), r.offset() + from, length, shard);
            if (length > 0) held.add(new Range(r.offset() + from, shard, length));
            // a checkpoint takes each element from one rank of the run's group: its ⌈len/n⌉ chunk (the one it owns at ZeRO 1)
            int share = (r.length() + group.size() - 1) / group.size(), first = Math.min(r.length(), group.rank() * share);
            int count = Math.min(r.length() - first, share);
            if (count > 0) saved.add(new Range(r.offset() + first, sharded ? shard : r.offset() + first, count));
            shard += length;
        }
        ParameterSet.Unit tied = stages.tiedUnit();   // reduced in apply, after the sum with the other end's
        for (int u = 0; u < params.units().size(); u++) unitParts.add(new ArrayList<>());
        for (Run r : runs) {
            List<Part> parts = new ArrayList<>();
            for (int from = r.offset(), end = r.offset() + r.length(), to; from < end; from = to) {
                ParameterSet.Unit u = unitAt(from);
                to = u == null ? Math.min(end, nextUnitStart(from)) : Math.min(end, u.offset() + u.size());
                Part part = new Part(from, to - from, r.expert(), u == null ? -1 : u.index());
                parts.add(part);
                if (u != null && (tied == null || tied.index() != u.index())) unitParts.get(u.index()).add(part);
            }
            runParts.add(List.copyOf(parts));
        }
        this.unitReduced = new boolean[params.units().size()];
        this.overlap = overlap ? new LastBackwardOverlap(pool.rankName().replace(' ', '-') + "-ep-update", this::unitDone) : null;
        try {
            this.moments = moments.create(pool, params.dtype(), Math.max(shard, 1));
        } catch (IOException e) {
            dpScalar.close();
            epScalar.close();
            if (this.overlap != null) this.overlap.close();
            throw new UncheckedIOException("cannot create the optimizer state's file: " + e.getMessage(), e);
        }
    }

    private void add(int offset, int length, boolean expert) {
        if (!runs.isEmpty() && runs.getLast().expert() == expert && runs.getLast().offset() + runs.getLast().length() == offset) {
            Run last = runs.removeLast();
            runs.add(new Run(last.offset(), last.length() + length, expert));
        } else {
            runs.add(new Run(offset, length, expert));
        }
    }

    /** The group that reduces and shards a run: expert dp for experts' elements, else dp. */
    private Communicator group(boolean expert) {
        return expert ? expertDp : dp;
    }

    /** Elements per owner of a run: ⌈length / n⌉ when sharded, else the whole run. */
    private int chunk(Run r, Communicator group) {
        return sharded ? (r.length() + group.size() - 1) / group.size() : r.length();
    }

    @Override
    public Gpt.Hooks hooks() {
        return overlap == null ? Gpt.Hooks.NONE : overlap;
    }

    @Override
    public void beginMicroBatch(int index, int count) {
        if (overlap != null) overlap.beginMicroBatch(index, count);
    }

    @Override
    public void backward(Runnable backward) {
        if (overlap != null) overlap.backward(backward);
        else backward.run();
    }

    /** The unit's gradients are final for this step (last micro-batch): post the reduction of its parts of the runs. */
    private void unitDone(ParameterSet.Unit unit) {
        List<Part> parts = unitParts.get(unit.index());
        if (parts.isEmpty()) return;
        unitReduced[unit.index()] = true;
        overlap.post(() -> {
            for (Part part : parts) reduce(part);
            return null;
        });
    }

    /** Averages {@code part}'s gradients over its group (dp, or the experts' over expert dp), an expert's then scaled by 1/ep. */
    private void reduce(Part part) {
        Tensor g = params.grads().slice(0, part.offset(), part.length());
        Communicator group = group(part.expert());
        if (group.size() > 1) group.allReduce(g, ReduceOp.AVG);
        if (part.expert()) Vectors.scale(g, 1.0 / ep.size());
    }

    @Override
    public void settle() {
        if (overlap != null) overlap.drain();
    }

    @Override
    public Applied apply(double lr, double maxNorm) {
        Tensor grads = params.grads(), values = params.values();
        long start = System.nanoTime();
        double dense = 0, experts = 0;
        if (overlap != null) overlap.drain();   // the reductions still queued when backward ended: the exposed part
        stages.sumTiedFlat(grads, pool);
        for (int i = 0; i < runs.size(); i++) {
            List<Part> parts = runParts.get(i);
            if (parts.stream().noneMatch(this::reduced)) {
                Run r = runs.get(i);
                reduce(new Part(r.offset(), r.length(), r.expert(), -1));   // not overlapped: the whole run at once
            } else {
                for (Part part : parts) if (!reduced(part)) reduce(part);
            }
        }
        java.util.Arrays.fill(unitReduced, false);
        int all = Math.toIntExact(params.paddedCount());
        stages.sumPartialGradients(grads, new long[]{0}, new int[]{0}, new int[]{all});   // tp: replicated kv pieces
        ParameterSet.Unit uncounted = stages.uncountedUnit();   // the last stage's copy of the tied wte, or null
        for (Run r : runs) {
            Tensor g = grads.slice(0, r.offset(), r.length());
            // under tp, this rank's share: its slices, and what every tp rank holds whole on tp rank 0 only
            double squares = stages.tensorParallel()
                    ? stages.countedSumOfSquares(g, new long[]{r.offset()}, new int[]{0}, new int[]{r.length()})
                    : uncounted == null ? Vectors.sumOfSquares(g)
                    : StageGradients.sumOfSquaresWithout(g, uncounted.offset() - r.offset(), uncounted.size());
            if (r.expert()) experts += squares;
            else dense += squares;
        }
        double norm = Math.sqrt(stages.sumOverStages(dense + (ep.size() > 1 ? epScalar.reduce(experts, ReduceOp.SUM) : experts)));
        long communication = System.nanoTime() - start;
        if (!Double.isFinite(norm)) throw new IllegalStateException("gradient norm " + norm);
        double scale = GradientClipping.scaleFor(norm, maxNorm);
        if (scale != 1.0) Vectors.scale(grads, scale);
        steps++;
        adamW.step(moments, values, true, grads, true, lr, steps);
        if (sharded) {
            long gather = System.nanoTime();
            broadcastChunks(values);
            communication += System.nanoTime() - gather;
        }
        return new Applied(norm, communication);
    }

    /** ZeRO 1: every owner of a run's chunk broadcasts that chunk of {@code flat} [P'] over the run's group. */
    private void broadcastChunks(Tensor flat) {
        for (Run r : runs) {
            Communicator group = group(r.expert());
            int chunk = chunk(r, group);
            for (int owner = 0; owner < group.size(); owner++) {
                int from = Math.min(r.length(), owner * chunk), length = Math.min(r.length() - from, chunk);
                if (length > 0 && group.size() > 1) group.broadcast(flat.slice(0, r.offset() + from, length), owner);
            }
        }
    }

    /** The ranges whose AdamW state this rank holds: every run whole at ZeRO 0, its ⌈len/n⌉ chunk of each at ZeRO 1. */
    public List<Range> held() {
        return List.copyOf(held);
    }

    /**
     * The ranges this rank writes to a checkpoint: its ⌈len/n⌉ chunk of each run over the run's group (dense runs over
     * dp, experts over the expert-data-parallel group), so every element of every rank's state is written once.
     */
    public List<Range> saved() {
        return List.copyOf(saved);
    }

    /** Runs {@code body} with the moments m, v of the {@link #held} ranges, to read. */
    public void readMoments(BiConsumer<Tensor, Tensor> body) {
        moments.read(body);
    }

    /** As {@link #readMoments}, the moments to overwrite from a checkpoint; then {@code steps} updates count as applied. */
    public void writeMoments(BiConsumer<Tensor, Tensor> body, long steps) {
        moments.write(body);
        this.steps = steps;
    }

    /** Whether this step's backward posted the reduction of {@code part} (never the tied unit's: it posts none). */
    private boolean reduced(Part part) {
        return part.unit() >= 0 && unitReduced[part.unit()];
    }

    /** The unit holding flat element {@code at}, or null. */
    private ParameterSet.Unit unitAt(int at) {
        for (ParameterSet.Unit u : params.units()) if (at >= u.offset() && at < u.offset() + u.size()) return u;
        return null;
    }

    /** Where the first unit after flat element {@code at} starts (the end of the flat layout if none). */
    private int nextUnitStart(int at) {
        int next = Math.toIntExact(params.paddedCount());
        for (ParameterSet.Unit u : params.units()) if (u.offset() > at) next = Math.min(next, u.offset());
        return next;
    }

    @Override
    public double mean(double value) {
        if (overlap != null) overlap.drain();
        return dp.size() > 1 ? dpScalar.reduce(value, ReduceOp.AVG) : value;
    }

    @Override
    public long steps() {
        return steps;
    }

    /** Frees the moments and scalar buffers; the communicators belong to the caller. */
    @Override
    public void close() {
        if (overlap != null) overlap.close();
        moments.close();
        dpScalar.close();
        epScalar.close();
    }
}
