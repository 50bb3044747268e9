package dev.shardwise.train;

import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.model.Gpt;
import dev.shardwise.parallel.ZeroMemory;

import java.util.List;
import java.util.Locale;

/**
 * A run's per-rank model-state bytes by category, what Shardwise allocates (every unit padded to a multiple of the
 * rank count) next to ZeRO's formula for Ψ parameters; printed by {@code train --dry-run} and at the start of a run.
 */
public final class MemoryReport {
    /** The categories ZeRO's formulas cover. */
    static final List<MemoryCategory> MODEL_STATE =
            List.of(MemoryCategory.PARAMETERS, MemoryCategory.GRADIENTS, MemoryCategory.OPTIMIZER_STATE);

    private MemoryReport() { }

    /** ZeRO's formula for {@code config}: per-rank bytes of parameters, gradients and optimizer state. */
    public static ZeroMemory formula(TrainConfig config) {
        return ZeroMemory.of(config.zero(), config.ranks(), config.model().parameterCount(), config.offloadOptimizer() != null);
    }

    /** The bytes each rank will allocate for model state (exact: the padded flat layout's shards). */
    public static ZeroMemory allocated(TrainConfig config) {
        long padded = Gpt.declare(config.model()).paddedCount(config.zero() > 0 ? config.ranks() : 1);
        return ZeroMemory.of(config.zero(), config.ranks(), padded, config.offloadOptimizer() != null);
    }

    /** A table, one line per category and the total, ending with a newline. */
    public static String table(TrainConfig c) {
        int stage = c.zero();
        boolean offload = c.offloadOptimizer() != null;
        ZeroMemory allocated = allocated(c), formula = formula(c);
        StringBuilder sb = new StringBuilder();
        sb.append(String.format(Locale.ROOT, "per-rank model state, ZeRO stage %d over N=%d rank(s), Ψ=%,d parameters "
                + "(fp32 weights, AdamW)%s:%n", stage, c.ranks(), c.model().parameterCount(),
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
        if (stage >= 2 && c.ranks() == 1) {
            sb.append("  note: ZeRO ").append(stage).append(" over one rank shards nothing; it only adds gathers and copies\n");
        }
        return sb.toString();
    }
}
