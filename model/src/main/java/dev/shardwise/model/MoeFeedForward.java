package dev.shardwise.model;

import dev.shardwise.core.kernels.Vectors;
import dev.shardwise.core.memory.StepArena;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;

import java.util.function.BiConsumer;

/**
 * A mixture-of-experts feed-forward block (Shazeer et al. 2017; GShard, Lepikhin et al. 2020; Switch, Fedus et al.
 * 2021): y_n = s·Σ_{j kept} g_{n,j}·Expert_{e_{n,j}}(x_n) + Shared(x_n), x [N, C] -> y [N, C], s the
 * routed scale ({@link MoeConfig#routedScale}, 1 unless set). The {@link MoeRouter}
 * picks each token's k experts and gates; with a capacity factor each expert keeps at most
 * {@link MoeConfig#capacity} assignments, first choices of every token before second choices (GShard), and the
 * dropped ones add nothing (the residual carries the token); dropless keeps all. Dispatch gathers the kept
 * assignments sorted by expert (token order within an expert), the {@link GroupedExperts} run each expert over its
 * contiguous rows (at ep 1 one {@link ExpertTiles} list holds the routed and the shared experts' tiles, so both run in
 * one pass over the compute pool, and each routed tile gathers its own rows first, and in backward writes its own rows
 * of combine's backward, while they are in cache), and combine adds s·g·output back onto each token. Shared experts (DeepSeekMoE) are one ungated MLP
 * of S·F_e hidden features that every token passes through.
 *
 * <p>The auxiliary losses enter the objective through backward: their gradient, scaled by the pass's loss scale
 * ({@link MoeRun#lossScale}), is added to the router's; their value goes to {@link MoeRun} for the metrics.
 * Under tensor parallelism the router is whole on every tp rank (the same tokens, the same routing) and each expert,
 * routed or shared, keeps the tp split of its linears ({@link GroupedExperts}).
 *
 * <p>Under sequence parallelism (Korthikanti et al. 2022; Megatron-Core's MoE layer, which needs it whenever ep and tp
 * combine) x and y are this rank's sequence shard [N/tp, C]. Forward all-gathers x to the whole [N, C] (as a
 * column-parallel input does), so the router, the auxiliary losses, the balance bias and expert parallelism's
 * dispatch see the same N tokens as without sequence parallelism; the experts leave their outputs as tp-partial sums
 * (tp rank 0's holding the row-parallel biases), the combine adds them up per token (it is linear in them), and one
 * reduce-scatter of y [N, C] replaces the experts' all-reduces of [M, C] (M = N·k kept assignments) and leaves each
 * rank its positions. Backward all-gathers dy (and x again, for the router's and shared experts' dW), all-reduces
 * the gates' gradient [N·k] (a dot product with the partial outputs), and reduce-scatters dx [N, C], partial sums
 * of the experts' input gradients plus the router's, counted on tp rank 0. Per block and micro-batch: forward one
 * all-gather and one reduce-scatter of [N, C]; backward two all-gathers and one reduce-scatter of [N, C] and one
 * all-reduce of N·k float64 values. Every parameter here is applied to the gathered tokens, so no gradient is a
 * partial sum over the sequence: the router's and the biases' are whole on every rank, the experts' their tp slices.
 */
final class MoeFeedForward implements FeedForward {
    private final MoeConfig moe;
    private final MoeRouter router;
    private final GroupedExperts experts;  // this rank's experts: all E, or E/ep under expert parallelism
    private final ExpertDispatch dispatch; // ep > 1: the all-to-alls to and from the experts' ranks; else null
    private final GroupedExperts shared;   // or null
    private final MoeRun run;
    private final TensorParallel tp;
    private final long[] load;             // this step's assignments per expert, summed over recorded passes
    private long dropped, assignments;
    private double spreadSquares;          // Σ (h - mean_e h)² of this step's recorded passes, and its terms
    private long spreadTerms;

    /**
     * What backward reads.
     *
     * @param routing   the router's choice, gates and probabilities
     * @param rowOf     where assignment a = n·k + j sits in xs, or -1 when capacity dropped it [N·k]
     * @param assigned  the assignment a = n·k + j of each row of xs (token n = a / k) [M]
     * @param offsets   expert e's rows of xs are [offsets[e], offsets[e+1]) [E + 1]
     * @param xs        the dispatched tokens [M, C]
     * @param experts   the experts' saved activations (ep 1), or null
     * @param exchanged what the all-to-alls left (ep > 1), or null
     * @param ys        the experts' outputs for the kept assignments [M, C], in dispatch order
     * @param shared    the shared experts' (over x [N, C]), or null
     * @param scale     the loss scale of the pass, for the auxiliary losses' gradient
     * @param auxLoss   α·balance + β·z-loss of this pass (unscaled)
     * @param out       y [N, C] (under sequence parallelism this rank's shard [N/tp, C]; N above is always the whole)
     */
    record Saved(MoeRouter.Routing routing, int[] rowOf, int[] assigned, int[] offsets, Tensor xs,
                 GroupedExperts.Saved experts, ExpertDispatch.Saved exchanged, Tensor ys, GroupedExperts.Saved shared,
                 double scale, double auxLoss, Tensor out)
            implements Layer.Saved {
        /** The same with output {@code y}. */
        Saved withOut(Tensor y) {
            return new Saved(routing, rowOf, assigned, offsets, xs, experts, exchanged, ys, shared, scale, auxLoss, y);
        }
    }

    static void declare(ParameterSet.Builder builder, String name, ModelConfig config) {
        declare(builder, name, config, TensorParallel.NONE, ExpertParallel.NONE);
    }

    /**
     * Declares the router, rank {@code ep.epRank()}'s E/ep experts (by their global numbers) and the shared experts,
     * each expert's tp slice under tensor parallelism.
     */
    static void declare(ParameterSet.Builder builder, String name, ModelConfig config, TensorParallel tp, ExpertParallel ep) {
        MoeConfig moe = config.moe();
        int perRank = ep.localExperts(moe.experts());
        MoeRouter.declare(builder, name + ".router", config, moe);
        GroupedExperts.declare(builder, name + ".experts", config, ep.epRank() * perRank, perRank, moe.expertHidden(), tp);
        if (moe.sharedExperts() > 0) {
            GroupedExperts.declare(builder, name + ".shared", config, 0, 1, moe.sharedExperts() * moe.expertHidden(), tp);
        }
    }

    MoeFeedForward(ParameterSet params, String name, ModelConfig config, MoeRun run) {
        this(params, name, config, TensorParallel.NONE, run);
    }

    MoeFeedForward(ParameterSet params, String name, ModelConfig config, TensorParallel tp, MoeRun run) {
        this.moe = config.moe();
        this.router = new MoeRouter(params, name + ".router", moe);
        ExpertParallel ep = run.expertParallel();
        int perRank = ep.localExperts(moe.experts());
        this.experts = new GroupedExperts(params, name + ".experts", config, ep.epRank() * perRank, perRank, moe.expertHidden(), tp);
        this.dispatch = ep.size() > 1 ? new ExpertDispatch(experts, ep) : null;
        this.shared = moe.sharedExperts() > 0
                ? new GroupedExperts(params, name + ".shared", config, 0, 1, moe.sharedExperts() * moe.expertHidden(), tp) : null;
        this.run = run;
        this.tp = tp;
        this.load = new long[moe.experts()];
        run.register(this);
    }

    /**
     * x [N, C] -> y [N, C]; under sequence parallelism x [N/tp, C] -> y [N/tp, C], this rank's positions.
     *
     * @throws IllegalArgumentException if x is bf16 (bf16 precision): the block's products are fp32 only
     */
    @Override
    public Saved forward(StepArena arena, Tensor x, Layer.Rows rows) {
        if (x.dtype() == DType.BF16) throw new IllegalArgumentException(MoeConfig.BF16_REFUSAL);
        if (!x.isContiguous()) throw new IllegalArgumentException("the MoE layer needs a contiguous input, got " + x.describe());
        if (!tp.sequenceParallel()) return forwardWhole(arena, arena, x);
        // the gathered x and the partial y live in a scratch arena: backward gathers x again
        try (StepArena scratch = new StepArena(arena.pool())) {
            Tensor whole = scratch.allocateForOverwrite(x.dtype(), x.dim(0) * tp.size(), x.dim(1));
            tp.gatherFromSequenceRegionForward(whole, x, rows.b());
            Saved saved = forwardWhole(arena, scratch, whole);
            Tensor y = arena.allocateForOverwrite(x.dtype(), x.shape());
            tp.reduceScatterToSequenceRegionForward(y, saved.out, rows.b());
            return saved.withOut(y);
        }
    }

    /**
     * The block over the whole x [N, C]: y [N, C] in {@code outArena}, the rest of what backward reads in
     * {@code arena}; under sequence parallelism y is this rank's partial sum (the experts' outputs not reduced).
     */
    private Saved forwardWhole(StepArena arena, StepArena outArena, Tensor x) {
        int n = x.dim(0), c = x.dim(1), e = moe.experts(), k = moe.topK();
        MoePhases clock = run.phases();
        long t = clock.start();
        MoeRouter.Routing routing = router.route(arena, x, run);
        t = clock.lap(MoePhases.Phase.ROUTE, t);

        // capacity: first choices of every token, then second choices, ... (GShard's priority)
        int capacity = moe.capacity(n);
        int[] kept = new int[e], rowOf = new int[n * k];
        int dropsNow = 0;
        for (int j = 0; j < k; j++) {
            for (int i = 0; i < n; i++) {
                int a = i * k + j, expert = routing.choice()[a];
                if (kept[expert] < capacity) {
                    kept[expert]++;
                    rowOf[a] = 0;
                } else {
                    rowOf[a] = -1;
                    dropsNow++;
                }
            }
        }
        // dispatch order: by expert, then by token
        int[] offsets = new int[e + 1];
        for (int j = 0; j < e; j++) offsets[j + 1] = offsets[j] + kept[j];
        int m = offsets[e];
        int[] next = offsets.clone(), assigned = new int[m];
        for (int a = 0; a < n * k; a++) {
            if (rowOf[a] < 0) continue;
            int r = next[routing.choice()[a]]++;
            rowOf[a] = r;
            assigned[r] = a;
        }
        Tensor xs = null, ys = null;
        GroupedExperts.Saved expertsSaved = null, sharedSaved = null;
        ExpertDispatch.Saved exchanged = null;
        // one tile list for the routed and the shared experts (ep 1), so one pass over the pool runs them all
        ExpertTiles tiles = new ExpertTiles();
        if (dispatch != null) {   // every rank joins the all-to-alls, tokens or not
            xs = arena.allocateForOverwrite(x.dtype(), Math.max(m, 1), c);
            if (m > 0) MoeRows.gatherAssigned(xs.slice(0, 0, m), x, assigned, k);
            t = clock.lap(MoePhases.Phase.DISPATCH, t);   // the experts' phase holds the all-to-alls
            exchanged = dispatch.forward(arena, xs, m, c, x.dtype(), offsets);
            ys = exchanged.ys();
        } else if (m > 0) {   // each expert tile gathers its own rows of xs first (the experts' phase holds dispatch)
            t = clock.lap(MoePhases.Phase.DISPATCH, t);
            Tensor dispatched = xs = arena.allocateForOverwrite(x.dtype(), m, c);
            expertsSaved = experts.forwardTiles(arena, xs, offsets, tiles,
                    (at, rows) -> MoeRows.gatherAssigned(dispatched, x, assigned, k, at, rows));
            ys = expertsSaved.out();
        }
        int[] all = {0, n};
        if (shared != null) sharedSaved = shared.forwardTiles(arena, x, all, tiles, null);
        tiles.run(clock);
        if (expertsSaved != null) experts.finishForward(expertsSaved, offsets);
        if (sharedSaved != null) shared.finishForward(sharedSaved, all);
        t = clock.lap(MoePhases.Phase.EXPERTS, t);
        // combine, each token's assignments in order, onto the shared experts' output
        Tensor y = outArena.allocateForOverwrite(x.dtype(), n, c);
        MoeRows.combine(y, sharedSaved == null ? null : sharedSaved.out(), ys, rowOf, k, routing.gate(), moe.routedScale());
        double aux = router.auxLoss(routing);
        if (run.recording()) {
            for (int j = 0; j < e; j++) load[j] += routing.counts()[j];
            spreadSquares += routing.spread();
            spreadTerms += (long) n * e;
            dropped += dropsNow;
            assignments += (long) n * k;
            run.recordAuxLoss(aux);
        }
        clock.lap(MoePhases.Phase.COMBINE, t);
        return new Saved(routing, rowOf, assigned, offsets, xs, expertsSaved, exchanged, ys, sharedSaved, run.lossScale(), aux, y);
    }

    /**
     * Writes dx [N, C] and accumulates the router's, the experts' and the shared experts' gradients (queued on
     * {@code weights} when not null) from dy [N, C], plus the auxiliary losses' gradient times the pass's loss scale.
     * Under sequence parallelism dx, dy and x are this rank's shards [N/tp, C]; the whole dy and x gathered here stay
     * in {@code arena} for the queued dW's.
     */
    @Override
    public void backward(StepArena arena, Tensor dx, Tensor dy, Tensor x, Layer.Rows rows, Layer.Saved s,
                         WeightGradients weights) {
        if (!tp.sequenceParallel()) {
            backwardWhole(arena, dx, dy, x, (Saved) s, weights);
            return;
        }
        int n = x.dim(0) * tp.size(), c = x.dim(1);
        Tensor wholeX = arena.allocateForOverwrite(x.dtype(), n, c), wholeDy = arena.allocateForOverwrite(dy.dtype(), n, c);
        tp.gatherFromSequenceRegionForward(wholeX, x, rows.b());
        tp.reduceScatterToSequenceRegionBackward(wholeDy, dy, rows.b());
        Tensor partial = arena.allocateForOverwrite(dx.dtype(), n, c);
        backwardWhole(arena, partial, wholeDy, wholeX, (Saved) s, weights);
        tp.gatherFromSequenceRegionBackward(dx, partial, rows.b());
    }

    /**
     * The block's backward over the whole x and dy [N, C], writing dx [N, C]; under sequence parallelism dx is this
     * rank's partial sum: its experts' input gradients, plus the router's on tp rank 0.
     */
    private void backwardWhole(StepArena arena, Tensor dx, Tensor dy, Tensor x, Saved saved, WeightGradients weights) {
        MoeRouter.Routing routing = saved.routing;
        boolean partial = tp.sequenceParallel();
        int n = x.dim(0), c = x.dim(1), k = moe.topK();
        MoePhases clock = run.phases();
        long t = clock.start();
        double[] dgate = new double[n * k];
        Tensor dxs = null;
        int m = saved.assigned.length;
        int[] all = {0, n};
        ExpertTiles tiles = new ExpertTiles();   // the routed (ep 1) and shared experts' input-gradient tiles
        GroupedExperts.Hidden expertsHidden = null, sharedHidden = null;
        Tensor dys = null, dshared = null;
        if (saved.xs != null) {
            // y_n += s·g·ys_r: dys_r = s·g·dy_n, dg = s·dy_n·ys_r
            dys = arena.allocateForOverwrite(x.dtype(), Math.max(m, 1), c);
            if (dispatch != null) {
                MoeRows.combineBackward(dys, dgate, dy, saved.ys, saved.rowOf, k, routing.gate(), moe.routedScale());
                dxs = dispatch.backward(arena, dys, m, c, saved.exchanged, weights);
            } else {   // each expert tile writes its own rows of dys (and their gates' gradients) first
                Tensor dysAll = dys;
                double[] dgateAll = dgate;
                dxs = arena.allocateForOverwrite(x.dtype(), m, c);
                expertsHidden = experts.backwardTiles(arena, dxs, dys, saved.xs, saved.offsets, saved.experts, tiles,
                        (at, rows) -> MoeRows.combineBackwardRows(dysAll, dgateAll, dy, saved.ys, saved.assigned, k,
                                routing.gate(), moe.routedScale(), at, rows));
            }
        }
        if (shared != null) {
            dshared = arena.allocateForOverwrite(x.dtype(), n, c);
            sharedHidden = shared.backwardTiles(arena, dshared, dy, x, all, saved.shared, tiles, null);
        }
        tiles.run(clock);
        if (expertsHidden != null) experts.finishBackward(dxs, saved.offsets);
        if (sharedHidden != null) shared.finishBackward(dshared, all);
        clock.lap(MoePhases.Phase.EXPERTS_BACKWARD, t);   // under ep with the all-to-alls and the experts' dW
        if (expertsHidden != null || sharedHidden != null) {
            GroupedExperts.Hidden eh = expertsHidden, sh = sharedHidden;
            Tensor dysFinal = dys;
            WeightGradients.defer(weights, () -> {
                long start = clock.start();
                ExpertTiles weightTiles = new ExpertTiles();
                if (eh != null) experts.weightTiles(weightTiles, eh, dysFinal, saved.xs, saved.offsets, saved.experts);
                if (sh != null) shared.weightTiles(weightTiles, sh, dy, x, all, saved.shared);
                weightTiles.run(clock);
                clock.lap(MoePhases.Phase.EXPERT_WEIGHTS, start);
            });
        }
        t = clock.start();
        if (partial) {   // dgate = s·dy·ys summed over the ranks' partial ys (tp rank 0's with the biases): the same bits on every rank
            Tensor sum = arena.allocateForOverwrite(DType.F64, n * k).copyFrom(dgate);
            tp.allReduceSum(sum);
            dgate = sum.toDoubleArray();
        }
        router.backward(arena, dx, x, routing, dgate, saved.scale, weights);   // writes dx
        if (partial && tp.tpRank() != 0) Vectors.zero(dx);   // the router's dx is whole on every rank: count it once
        t = clock.lap(MoePhases.Phase.ROUTER_BACKWARD, t);
        // dx_n += the experts' input gradients of n's assignments, then the shared experts'
        if (dxs != null || dshared != null) MoeRows.scatterAdd(dx, dxs, saved.rowOf, k, dshared);
        clock.lap(MoePhases.Phase.SCATTER_ADD, t);
        clock.pass();
    }

    long[] load() { return load; }
    long dropped() { return dropped; }
    long assignments() { return assignments; }

    /** The mean of (h_{n,e} - mean_e h_{n,e})² over the step's routed tokens and experts; 0 before any. */
    double spreadSquare() { return spreadTerms == 0 ? 0 : spreadSquares / spreadTerms; }

    void resetLoad() {
        java.util.Arrays.fill(load, 0);
        spreadSquares = 0;
        spreadTerms = 0;
        dropped = 0;
        assignments = 0;
    }

    void updateBias(double[] stepLoad, BiConsumer<Parameter, double[]> addToValues) {
        router.updateBias(stepLoad, addToValues);
    }
}
