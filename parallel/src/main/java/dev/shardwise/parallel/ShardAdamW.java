package dev.shardwise.parallel;

import dev.shardwise.core.kernels.AdamW;
import dev.shardwise.core.kernels.Vectors;
import dev.shardwise.core.tensor.Tensor;
import dev.shardwise.model.Parameter;
import dev.shardwise.model.ParameterSet;
import dev.shardwise.model.optim.AdamWOptimizer;
import dev.shardwise.model.optim.GradientClipping;

import java.util.ArrayList;
import java.util.List;

/**
 * AdamW over one rank's shard of the flat parameter buffer under ZeRO (Rajbhandari et al. 2020), shared by
 * stage 1 and stages 2 and 3: the runs of each parameter that fall in the shard, with their decay flags, the
 * global-norm clipping of the gradient shard, and the update streamed through the shard's moments (in memory or
 * offloaded). The stages differ only in where a run's values and gradients live: in the flat [P'] layout, or in
 * the shard's own [S] layout.
 */
final class ShardAdamW {
    /** A run of one parameter inside the shard: its offset in the flat buffers and in the shard, its length. */
    private record Run(int flatOffset, int shardOffset, int length, boolean decay) { }

    private final AdamWOptimizer.Settings settings;
    private final List<Run> runs = new ArrayList<>();

    ShardAdamW(AdamWOptimizer.Settings settings) {
        this.settings = settings;
    }

    /**
     * Adds the runs of {@code parameters} that fall in the flat range [start, start + length), which the shard
     * holds from {@code shardOffset} on.
     */
    void addRange(ParameterSet params, List<Parameter> parameters, long start, int length, int shardOffset) {
        for (Parameter p : parameters) {
            long from = Math.max(params.offsetOf(p), start);
            long to = Math.min(params.offsetOf(p) + p.numel(), start + length);
            if (from < to) runs.add(new Run((int) from, (int) (shardOffset + from - start), (int) (to - from), p.weightDecay()));
        }
    }

    /**
     * Scales the gradient shard so the global norm is at most {@code maxNorm} (no clipping when {@code maxNorm <= 0}).
     *
     * @throws IllegalStateException if {@code norm} is not finite; nothing is changed then
     */
    static void clip(Tensor gradShard, double norm, double maxNorm) {
        if (!Double.isFinite(norm)) throw new IllegalStateException("gradient norm " + norm);
        double scale = GradientClipping.scaleFor(norm, maxNorm);
        if (scale != 1.0) Vectors.scale(gradShard, scale);
    }

    /**
     * AdamW step {@code step} with learning rate {@code lr} on every run, chunk by chunk of {@code moments}:
     * {@code values} and {@code grads} are indexed by the runs' flat offsets when {@code valuesFlat} /
     * {@code gradsFlat}, else by their shard offsets.
     */
    void step(ShardMoments moments, Tensor values, boolean valuesFlat, Tensor grads, boolean gradsFlat, double lr, long step) {
        moments.update(chunk -> {
            for (Run r : runs) {
                int from = Math.max(r.shardOffset, chunk.start()), to = Math.min(r.shardOffset + r.length, chunk.end());
                if (from >= to) continue;
                int flat = r.flatOffset + (from - r.shardOffset), n = to - from;
                AdamW.step(values.slice(0, valuesFlat ? flat : from, n), grads.slice(0, gradsFlat ? flat : from, n),
                        chunk.m(from, n), chunk.v(from, n), lr, settings.beta1(), settings.beta2(), settings.eps(),
                        r.decay ? settings.weightDecay() : 0, step);
            }
        });
    }
}
