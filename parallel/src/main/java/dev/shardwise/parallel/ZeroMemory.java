package dev.shardwise.parallel;

import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.model.ParameterSet;

import java.util.List;
import java.util.function.Predicate;

/**
 * The per-rank bytes of model state that ZeRO's analysis (Rajbhandari et al. 2020, Figure 1, with fp32 weights
 * and AdamW: K = 8 bytes of optimizer state per parameter) predicts for Ψ parameters over N data-parallel ranks:
 * <pre>
 *   stage   parameters   gradients   optimizer state   total
 *   0       4Ψ           4Ψ          8Ψ                16Ψ
 *   1       4Ψ           4Ψ          8Ψ/N              8Ψ + 8Ψ/N
 *   2       4Ψ           4Ψ/N        8Ψ/N              4Ψ + 12Ψ/N
 *   3       4Ψ/N         4Ψ/N        8Ψ/N              16Ψ/N
 * </pre>
 * With the optimizer state offloaded to disk its resident bytes are 0 (plus a bounded staging buffer, counted as
 * BUFFERS). Transient buffers (gathered units, unit gradients, buckets) are not model state and not counted here.
 *
 * @param parameters     bytes of PARAMETERS
 * @param gradients      bytes of GRADIENTS
 * @param optimizerState bytes of OPTIMIZER_STATE
 */
public record ZeroMemory(long parameters, long gradients, long optimizerState) {

    /**
     * The bytes for {@code psi} parameters; exact for the shards Shardwise allocates when {@code psi} is the padded
     * count P' (every unit a multiple of N).
     *
     * @throws IllegalArgumentException if the stage is not 0..3 or {@code ranks < 1}
     */
    public static ZeroMemory of(int stage, int ranks, long psi, boolean offloadOptimizer) {
        if (stage < 0 || stage > 3) throw new IllegalArgumentException("ZeRO stage must be 0..3, got " + stage);
        if (ranks < 1) throw new IllegalArgumentException("ranks must be >= 1, got " + ranks);
        long params = stage == 3 ? 4 * psi / ranks : 4 * psi;
        long grads = stage >= 2 ? 4 * psi / ranks : 4 * psi;
        long optim = offloadOptimizer ? 0 : stage >= 1 ? 8 * psi / ranks : 8 * psi;
        return new ZeroMemory(params, grads, optim);
    }

    /**
     * The parameters whose AdamW state the first rank holds under the expert-parallel update at ZeRO 0 or 1
     * ({@link ExpertParallelUpdate}): all at ZeRO 0; at ZeRO 1 ⌈run/n⌉ of each run of consecutive {@code specs} (the
     * flat layout in declaration order), n the dp size for a run of dense parameters and {@code expertDp}, the ranks
     * holding the same experts, for a run of routed experts' ({@code isExpert} by name).
     */
    public static long expertParallelStateElements(List<ParameterSet.Spec> specs, Predicate<String> isExpert, int zero, int dp,
                                                   int expertDp) {
        long state = 0, run = 0;
        boolean expert = false;
        for (ParameterSet.Spec spec : specs) {
            boolean e = isExpert.test(spec.name());
            if (run > 0 && e != expert) {
                state += zero == 0 ? run : Math.ceilDiv(run, expert ? expertDp : dp);
                run = 0;
            }
            expert = e;
            run += spec.numel();
        }
        return state + (zero == 0 ? run : Math.ceilDiv(run, expert ? expertDp : dp));
    }

    /** The formula for {@code category} at {@code stage}, e.g. {@code 4Ψ/N}; empty for categories ZeRO does not model. */
    public static String formula(int stage, MemoryCategory category, boolean offloadOptimizer) {
        return switch (category) {
            case PARAMETERS -> stage == 3 ? "4Ψ/N" : "4Ψ";
            case GRADIENTS -> stage >= 2 ? "4Ψ/N" : "4Ψ";
            case OPTIMIZER_STATE -> offloadOptimizer ? "0 (on disk)" : stage >= 1 ? "8Ψ/N" : "8Ψ";
            default -> "";
        };
    }

    /** The formula for the total, e.g. {@code 4Ψ + 12Ψ/N}. */
    public static String totalFormula(int stage, boolean offloadOptimizer) {
        if (offloadOptimizer) return stage == 3 ? "8Ψ/N" : stage == 2 ? "4Ψ + 4Ψ/N" : "8Ψ";
        return switch (stage) {
            case 0 -> "16Ψ";
            case 1 -> "8Ψ + 8Ψ/N";
            case 2 -> "4Ψ + 12Ψ/N";
            default -> "16Ψ/N";
        };
    }

    /** Bytes of {@code category}; 0 for categories ZeRO does not model. */
    public long bytes(MemoryCategory category) {
        return switch (category) {
            case PARAMETERS -> parameters;
            case GRADIENTS -> gradients;
            case OPTIMIZER_STATE -> optimizerState;
            default -> 0;
        };
    }

    public long total() {
        return parameters + gradients + optimizerState;
    }
}
