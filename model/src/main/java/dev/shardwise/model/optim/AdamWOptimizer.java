package dev.shardwise.model.optim;

import dev.shardwise.core.kernels.AdamW;
import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.tensor.Tensor;
import dev.shardwise.model.Parameter;
import dev.shardwise.model.ParameterSet;

/**
 * AdamW (Loshchilov and Hutter 2019) over a whole {@link ParameterSet}: moments m and v live in two flat
 * buffers laid out like the parameters (charged as OPTIMIZER_STATE), and weight decay applies only to the
 * parameters marked for it (matrices; not norms, biases or embeddings, as in GPT-2 training recipes).
 *
 * <p>Owns its moment buffers: {@link #close()} frees them. Not thread-safe.
 */
public final class AdamWOptimizer implements AutoCloseable {

    /**
     * AdamW's constants.
     *
     * @param beta1       decay of the first moment (0.9)
     * @param beta2       decay of the second moment (0.95 for GPT pre-training, 0.999 in PyTorch's default)
     * @param eps         added to sqrt(v̂) (1e-8)
     * @param weightDecay decoupled decay per unit of learning rate (0.1 for GPT)
     */
    public record Settings(double beta1, double beta2, double eps, double weightDecay) {
        public Settings {
            if (!(beta1 >= 0 && beta1 < 1)) throw new IllegalArgumentException("optimizer.beta1 must be in [0, 1), got " + beta1);
            if (!(beta2 >= 0 && beta2 < 1)) throw new IllegalArgumentException("optimizer.beta2 must be in [0, 1), got " + beta2);
            if (!(eps > 0)) throw new IllegalArgumentException("optimizer.eps must be positive, got " + eps);
            if (!(weightDecay >= 0)) throw new IllegalArgumentException("optimizer.weightDecay must be >= 0, got " + weightDecay);
        }

        /** GPT-style defaults: β = (0.9, 0.95), eps 1e-8, weight decay 0.1. */
        public static Settings gpt() {
            return new Settings(0.9, 0.95, 1e-8, 0.1);
        }
    }

    private final ParameterSet params;
    private final Settings settings;
    private final Tensor m;   // [P], first moments
    private final Tensor v;   // [P], second moments
    private long steps;

    public AdamWOptimizer(ParameterSet params, MemoryPool pool, Settings settings) {
        this.params = params;
        this.settings = settings;
        int count = Math.toIntExact(params.count());
        this.m = Tensor.allocate(pool, MemoryCategory.OPTIMIZER_STATE, params.dtype(), count);
        try {
            this.v = Tensor.allocate(pool, MemoryCategory.OPTIMIZER_STATE, params.dtype(), count);
        } catch (RuntimeException e) {
            m.close();
            throw e;
        }
    }

    /** Applies one update with learning rate {@code lr} from the current gradients. */
    public void step(double lr) {
        step(lr, 1.0);
    }

    /**
     * Applies one update with learning rate {@code lr} from the current gradients times {@code gradScale}
     * (a clipping factor from {@link GradientClipping#scaleFor}), leaving the gradients themselves unscaled:
     * the same update as scaling them first, without that pass over them.
     */
    public void step(double lr, double gradScale) {
        steps++;
        for (Parameter p : params.parameters()) {
            AdamW.step(p.value(), p.grad(), firstMomentOf(p), secondMomentOf(p), lr, settings.beta1, settings.beta2,
                    settings.eps, p.weightDecay() ? settings.weightDecay : 0, steps, gradScale);
        }
    }

    /** The first moment of parameter {@code p}, a view with its shape. */
    public Tensor firstMomentOf(Parameter p) {
        return momentOf(m, p);
    }

    /** The second moment of parameter {@code p}, a view with its shape. */
    public Tensor secondMomentOf(Parameter p) {
        return momentOf(v, p);
    }

    private Tensor momentOf(Tensor flat, Parameter p) {
        int offset = Math.toIntExact(params.offsetOf(p));
        return flat.slice(0, offset, Math.toIntExact(p.value().numel())).view(p.value().shape());
    }

    /** Updates applied so far (t of the bias correction of the last one). */
    public long steps() { return steps; }

    /** Restores the update count from a checkpoint. */
    public void setSteps(long steps) {
        if (steps < 0) throw new IllegalArgumentException("optimizer step count must be >= 0, got " + steps);
        this.steps = steps;
    }

    public Settings settings() { return settings; }
    /** First moments, flat [P], in parameter order. */
    public Tensor firstMoments() { return m; }
    /** Second moments, flat [P], in parameter order. */
    public Tensor secondMoments() { return v; }

    @Override
    public void close() {
        m.close();
        v.close();
    }
}
