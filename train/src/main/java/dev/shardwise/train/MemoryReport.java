package dev.shardwise.train;

import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.model.ExpertParallelRank;
import dev.shardwise.model.Gpt;
import dev.shardwise.model.MoeConfig;
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
     * bytes of parameters, gradients and optimizer state for the Ψ parameters the stage holds. Under expert parallelism
     * a rank holds Ψ = Ψ_dense + Ψ_expert/ep (Ψ_expert: all experts), and ZeRO shards what it shards of the dense
     * parameters over dp and of the experts over the N/ep ranks holding the same experts, so Ψ/N becomes
     * Ψ_dense/N + Ψ_expert/N: ZeRO 1 8Ψ_dense/N + 8Ψ_expert/N of AdamW state, ZeRO 2 gradients too, ZeRO 3 parameters too.
     */
    public static ZeroMemory formula(TrainConfig config, int stage) {
        if (config.layout().ep() > 1) {
            ExpertShare e = expertShare(config, stage);
            long psi = e.dense() + e.experts(), n = config.layout().dp(), expertDp = config.layout().expertDp();
            long sharded = e.dense() / n + e.experts() / expertDp;   // Ψ_dense/N + Ψ_expert/N, per rank
            int zero = config.zero();
            return new ZeroMemory(zero == 3 ? 4 * sharded : 4 * psi, zero >= 2 ? 4 * sharded : 4 * psi,
                    config.offloadOptimizer() != null ? 0 : zero == 0 ? 8 * psi : 8 * sharded);
        }
        return ZeroMemory.of(config.zero(), config.layout().dp(), stageParameters(config, stage), config.offloadOptimizer() != null);
    }

    /**
     * The bytes a rank of {@code stage} will allocate for model state (exact: the padded flat layout's shards; under
     * expert parallelism, rank 0's ⌈run/n⌉ chunk of each run of dense parameters and of experts at ZeRO 0 and 1, and at
     * ZeRO 2 and 3 the padded runs' pieces: dense ones over dp, experts over the expert-data-parallel group).
     */
    public static ZeroMemory allocated(TrainConfig config, int stage) {
        int dp = config.layout().dp();
        boolean offload = config.offloadOptimizer() != null;
        if (config.layout().ep() > 1 && config.zero() >= 2) {
            ParameterSet.Builder declared = declare(config, stage).segmentedBy(MoeConfig::isExpertParameter);
            long dense = declared.paddedCount(dp, false), experts = declared.paddedCount(dp, true);
            long shard = dense / dp + experts / config.layout().expertDp(), all = dense + experts;
            return new ZeroMemory(4 * (config.zero() == 3 ? shard : all), 4 * shard, offload ? 0 : 8 * shard);
        }
        if (config.layout().ep() > 1) {
            List<ParameterSet.Spec> specs = declare(config, stage).specs();   // padding 1: the flat layout is declaration order
            long psi = specs.stream().mapToLong(ParameterSet.Spec::numel).sum();
            long state = ZeroMemory.expertParallelStateElements(specs, MoeConfig::isExpertParameter, config.zero(), dp,
                    config.layout().expertDp());
            return new ZeroMemory(4 * psi, 4 * psi, offload ? 0 : 8 * state);
        }
        long padded = declare(config, stage).paddedCount(ZeroStage.of(config.zero()).paddingMultiple(dp));
        return ZeroMemory.of(config.zero(), dp, padded, config.offloadOptimizer() != null);
    }

    /**
     * Ψ of a rank of a stage: the parameters its parts hold (the last stage's copy of the tied wte included); under
     * tensor parallelism its share, Ψ_split/tp + Ψ_whole ({@link TensorParallelShare}); under expert parallelism
     * Ψ_dense + Ψ_expert/ep ({@link ExpertShare}).
     */
    static long stageParameters(TrainConfig config, int stage) {
        if (config.layout().ep() > 1) {
            ExpertShare e = expertShare(config, stage);
            return e.dense() + e.experts();
        }
        if (config.layout().pp() == 1 && config.layout().tp() == 1) return config.model().parameterCount();
        return share(config, stage).perRank();
    }

    /**
     * How expert parallelism splits a stage's parameters on a rank (GShard): {@code dense} every rank holds (attention,
     * norms, routers, shared experts, embeddings), {@code experts} the routed experts of its E/ep (Ψ_expert/ep).
     */
    record ExpertShare(long dense, long experts) { }

    /** The expert-parallel split of pipeline stage {@code stage}'s parameters on ep rank 0 (every ep rank holds as many). */
    static ExpertShare expertShare(TrainConfig config, int stage) {
        long dense = 0, experts = 0;
        for (ParameterSet.Spec spec : declare(config, stage).specs()) {
            if (MoeConfig.isExpertParameter(spec.name())) experts += spec.numel();
            else dense += spec.numel();
        }
        return new ExpertShare(dense, experts);
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

    /**
     * What tp rank 0 and ep rank 0 of pipeline stage {@code stage} declare (all tp ranks hold the same number of
     * elements, and so do all ep ranks).
     */
    private static ParameterSet.Builder declare(TrainConfig config, int stage) {
        ParallelLayout l = config.layout();
        if (l.pp() == 1 && l.tp() == 1 && l.ep() == 1) return Gpt.declare(config.model());
        return Gpt.declare(config.model(), Trainer.stageSpans(config, stage), l.pp() > 1, TensorParallelRank.of(l.tp(), 0),
                ExpertParallelRank.of(l.ep(), 0));
    }

    /**
     * One line: the ranks, how they split (dp·tp·pp), vpp, ZeRO stage, recompute and the pipeline schedule and cut,
     * e.g. {@code layout: 4 ranks = dp 2 × tp 1 × pp 2, vpp 1, zero 1, recompute none, schedule 1f1b, pipelineCut auto}.
     */
    public static String layout(TrainConfig c) {
        ParallelLayout l = c.layout();
        return String.format(Locale.ROOT, "layout: %d rank(s) = dp %d × tp %d × pp %d, vpp %d,%s zero %d, recompute %s%s, "
                        + "schedule %s, pipelineCut %s%n", l.worldSize(), l.dp(), l.tp(), l.pp(), l.vpp(),
                l.ep() > 1 ? " ep " + l.ep() + " (expert dp " + l.expertDp() + ")," : "", l.zeroStage(),
                l.recompute(), c.recomputeEvery() > 1 ? " (every " + c.recomputeEvery() + " blocks)" : "", c.schedule(),
                c.pipelineCut() == null ? "auto" : c.pipelineCut());
    }

    /** What ZeRO {@code stage} (1-3) shards: the AdamW state, gradients too, parameters too. */
    private static String sharded(int stage) {
        return switch (stage) {
            case 1 -> "AdamW state";
            case 2 -> "gradients and AdamW state";
            default -> "parameters, gradients and AdamW state";
        };
    }

    /** ZeRO's formula under expert parallelism: each kΨ/N split into kΨd/N + kΨe/N (4Ψ + 12Ψ/N -> 4Ψ+12Ψd/N+12Ψe/N). */
    static String expertFormula(String formula) {
        return formula.replaceAll("(\\d+)Ψ/N", "$1Ψd/N+$1Ψe/N").replace(" + ", "+");
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
        int ep = c.layout().ep();
        if (ep > 1) {
            ExpertShare e = expertShare(c, 0);
            String per = tp > 1 ? "/(ep·tp)" : "/ep", dense = tp > 1 ? "this tp rank's share of " : "";
            sb.append(String.format(Locale.ROOT, "expert parallelism over ep=%d rank(s)%s: each holds %d of the %d experts of every "
                            + "MoE block: Ψ_dense=%,d (%sattention, norms, routers, embeddings) on every ep rank, Ψ_expert%s=%,d; "
                            + "Ψ = Ψ_dense + Ψ_expert%s = %,d per rank%s%n", ep, pp > 1 ? ", stage 0" : "",
                    c.model().moe().experts() / ep, c.model().moe().experts(), e.dense(), dense, per, e.experts(), per,
                    e.dense() + e.experts(),
                    stage >= 1 ? "; ZeRO " + stage + " shards the dense " + sharded(stage) + " over dp=" + c.layout().dp()
                            + " and the experts' over the " + c.layout().expertDp() + " rank(s) holding the same experts "
                            + "(Ψ/N becomes Ψd/N + Ψe/N, Ψe counting all experts)" : ""));
        }
        sb.append(String.format(Locale.ROOT, "per-rank model state%s, ZeRO stage %d over N=dp=%d rank(s), Ψ=%,d parameters "
                + "(fp32 weights, AdamW)%s:%n", pp > 1 ? " of stage 0" : "", stage, c.layout().dp(), stageParameters(c, 0),
                offload ? ", optimizer state offloaded to " + c.offloadOptimizer() : ""));
        boolean experts = ep > 1 && stage >= 1;
        String row = experts ? "  %-16s %12s   %-17s %12s%n" : "  %-16s %12s   %-12s %12s%n";
        sb.append(String.format(Locale.ROOT, row, "category", "allocated", "ZeRO formula", "= bytes"));
        for (MemoryCategory cat : MODEL_STATE) {
            String f = ZeroMemory.formula(stage, cat, offload);
            sb.append(String.format(Locale.ROOT, row, cat.label(), MemoryPool.formatBytes(allocated.bytes(cat)),
                    experts ? expertFormula(f) : f, MemoryPool.formatBytes(formula.bytes(cat))));
        }
        String total = ZeroMemory.totalFormula(stage, offload);
        sb.append(String.format(Locale.ROOT, row, "total", MemoryPool.formatBytes(allocated.total()),
                experts ? expertFormula(total) : total, MemoryPool.formatBytes(formula.total())));
        sb.append(String.format(Locale.ROOT, "  (not counted: activations, and buffers%s)%n",
                stage >= 2 ? " such as the transient unit gradients" + (stage == 3 ? " and gathered unit parameters" : "")
                        : offload ? " such as the optimizer's staging buffer" : ""));
        if (stage >= 2 && c.layout().dp() == 1) {
            sb.append("  note: ZeRO ").append(stage).append(" over one rank shards nothing; it only adds gathers and copies\n");
        }
        return sb.toString();
    }
}
