package dev.shardwise.train;

import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.model.Gpt;
import dev.shardwise.model.ParameterSet;
import dev.shardwise.model.TensorParallelRank;
import dev.shardwise.parallel.ParallelLayout;
import dev.shardwise.parallel.ZeroMemory;
import dev.shardwise.parallel.ZeroStage;

import java.util.List;
import java.util.Locale;

/**
 * A run's layout and its per-rank model-state bytes by category, what Shardwise allocates (every unit padded to a
 * multiple of the dp size N when ZeRO shards) next to ZeRO's formula for the Ψ parameters a rank holds (under tensor
 * parallelism its share, Ψ_split/tp + Ψ_whole); printed by
 * {@code train --dry-run} and at the start of a run.
 */
public final class MemoryReport {
    /** The categories ZeRO's formulas cover. */
    static final List<MemoryCategory> MODEL_STATE =
            List.of(MemoryCategory.PARAMETERS, MemoryCategory.GRADIENTS, MemoryCategory.OPTIMIZER_STATE);

    private MemoryReport() { }

    /**
     * ZeRO's formula for a rank of pipeline stage {@code stage} (0, the leader's, when the model is not cut): per-rank
     * bytes of parameters, gradients and optimizer state for the Ψ parameters the stage holds.
     */
    public static ZeroMemory formula(TrainConfig config, int stage) {
        return ZeroMemory.of(config.zero(), config.layout().dp(), stageParameters(config, stage), config.offloadOptimizer() != null);
    }

    /** The bytes a rank of {@code stage} will allocate for model state (exact: the padded flat layout's shards). */
    public static ZeroMemory allocated(TrainConfig config, int stage) {
        int dp = config.layout().dp();
        long padded = declare(config, stage).paddedCount(ZeroStage.of(config.zero()).paddingMultiple(dp));
        return ZeroMemory.of(config.zero(), dp, padded, config.offloadOptimizer() != null);
    }

    /**
     * Ψ of a rank of a stage: the parameters its parts hold (the last stage's copy of the tied wte included); under
     * tensor parallelism its share, Ψ_split/tp + Ψ_whole ({@link TensorParallelShare}).
     */
    static long stageParameters(TrainConfig config, int stage) {
        if (config.layout().pp() == 1 && config.layout().tp() == 1) return config.model().parameterCount();
        return share(config, stage).perRank();
    }

    /**
     * How tensor parallelism splits a stage's parameters (Shoeybi et al. 2019): {@code split} counts the elements of
     * the global tensors tp slices (the blocks' attention and MLP matrices and their column-parallel biases, wte),
     * {@code whole} those every tp rank holds entire (norms, row-parallel biases, wpe).
     */
    record TensorParallelShare(long split, long whole, int tp) {
        /** Ψ per rank: Ψ_split/tp + Ψ_whole (a vocabulary tp does not divide adds its padding rows on top). */
        long perRank() {
            return split / tp + whole;
        }
    }

    /** The tensor-parallel split of pipeline stage {@code stage}'s parameters. */
    static TensorParallelShare share(TrainConfig config, int stage) {
        long split = 0, whole = 0;
        for (ParameterSet.Spec spec : declare(config, stage).specs()) {
            if (spec.slice() == null) {
                whole += spec.numel();
            } else {
                long n = 1;
                for (int d : spec.slice().globalShape()) n *= d;
                split += n;
            }
        }
        return new TensorParallelShare(split, whole, config.layout().tp());
    }

    /** What tp rank 0 of pipeline stage {@code stage} declares (all tp ranks hold the same number of elements). */
    private static ParameterSet.Builder declare(TrainConfig config, int stage) {
        ParallelLayout l = config.layout();
        if (l.pp() == 1 && l.tp() == 1) return Gpt.declare(config.model());
        return Gpt.declare(config.model(), Trainer.stageSpans(config, stage), l.pp() > 1, TensorParallelRank.of(l.tp(), 0));
    }

    /**
     * One line: the ranks, how they split (dp·tp·pp), vpp, ZeRO stage, recompute and the pipeline schedule and cut,
     * e.g. {@code layout: 4 ranks = dp 2 × tp 1 × pp 2, vpp 1, zero 1, recompute none, schedule 1f1b, pipelineCut auto}.
     */
    public static String layout(TrainConfig c) {
        ParallelLayout l = c.layout();
        return String.format(Locale.ROOT, "layout: %d rank(s) = dp %d × tp %d × pp %d, vpp %d, zero %d, recompute %s%s, "
                        + "schedule %s, pipelineCut %s%n", l.worldSize(), l.dp(), l.tp(), l.pp(), l.vpp(), l.zeroStage(),
                l.recompute(), c.recomputeEvery() > 1 ? " (every " + c.recomputeEvery() + " blocks)" : "", c.schedule(),
                c.pipelineCut() == null ? "auto" : c.pipelineCut());
    }

    /** The {@link #layout} line, then a table, one line per category and the total, ending with a newline. */
    public static String table(TrainConfig c) {
        int stage = c.zero();
        boolean offload = c.offloadOptimizer() != null;
        ZeroMemory allocated = allocated(c, 0), formula = formula(c, 0);
        StringBuilder sb = new StringBuilder(layout(c));
        int pp = c.layout().pp();
        if (pp > 1) {
            sb.append("pipeline stages (parts: embedding, blocks, head), model state per rank:\n");
            for (int s = 0; s < pp; s++) {
                sb.append(String.format(Locale.ROOT, "  stage %d: %s; Ψ=%,d; %s allocated%n", s, Trainer.stageSpans(c, s),
                        stageParameters(c, s), MemoryPool.formatBytes(allocated(c, s).total())));
            }
        }
        int tp = c.layout().tp();
        if (tp > 1) {
            TensorParallelShare share = share(c, 0);
            sb.append(String.format(Locale.ROOT, "tensor parallelism over tp=%d rank(s)%s: Ψ_split=%,d (attention and MLP "
                            + "matrices, wte) split, Ψ_whole=%,d (norms, row-parallel biases, wpe) on every tp rank: "
                            + "Ψ = Ψ_split/tp + Ψ_whole = %,d per rank%s%n", tp, pp > 1 ? ", stage 0" : "", share.split(),
                    share.whole(), share.perRank(), c.model().vocabSize() % tp != 0 ? " (+ the vocabulary's padding rows, "
                            + "⌈V/tp⌉·tp - V = " + (Math.ceilDiv(c.model().vocabSize(), tp) * tp - c.model().vocabSize()) + ")" : ""));
        }
        sb.append(String.format(Locale.ROOT, "per-rank model state%s, ZeRO stage %d over N=dp=%d rank(s), Ψ=%,d parameters "
                + "(fp32 weights, AdamW)%s:%n", pp > 1 ? " of stage 0" : "", stage, c.layout().dp(), stageParameters(c, 0),
                offload ? ", optimizer state offloaded to " + c.offloadOptimizer() : ""));
        String row = "  %-16s %12s   %-12s %12s%n";
        sb.append(String.format(Locale.ROOT, row, "category", "allocated", "ZeRO formula", "= bytes"));
        for (MemoryCategory cat : MODEL_STATE) {
            sb.append(String.format(Locale.ROOT, row, cat.label(), MemoryPool.formatBytes(allocated.bytes(cat)),
                    ZeroMemory.formula(stage, cat, offload), MemoryPool.formatBytes(formula.bytes(cat))));
        }
        sb.append(String.format(Locale.ROOT, row, "total", MemoryPool.formatBytes(allocated.total()),
                ZeroMemory.totalFormula(stage, offload), MemoryPool.formatBytes(formula.total())));
        sb.append(String.format(Locale.ROOT, "  (not counted: activations, and buffers%s)%n",
                stage >= 2 ? " such as the transient unit gradients" + (stage == 3 ? " and gathered unit parameters" : "")
                        : offload ? " such as the optimizer's staging buffer" : ""));
        if (stage >= 2 && c.layout().dp() == 1) {
            sb.append("  note: ZeRO ").append(stage).append(" over one rank shards nothing; it only adds gathers and copies\n");
        }
        return sb.toString();
    }
}
