package dev.shardwise.parallel.expert;

import dev.shardwise.comm.Communicator;
import dev.shardwise.comm.ReduceOp;
import dev.shardwise.core.kernels.Vectors;
import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;
import dev.shardwise.model.MoeConfig;
import dev.shardwise.model.Parameter;
import dev.shardwise.model.ParameterSet;
import dev.shardwise.model.optim.AdamWOptimizer;
import dev.shardwise.model.optim.GradientClipping;
import dev.shardwise.model.optim.ParameterUpdate;

import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;

/**
 * The update of an expert-parallel rank (GShard; Megatron-Core's expert-data-parallel reduction), replicated AdamW:
 * the flat gradients split into runs of non-expert parameters, averaged over the data-parallel group (every rank
 * holds them), and runs of this rank's experts, averaged over the expert-data-parallel group (the dp/ep ranks that
 * hold the same experts) and scaled by 1/ep, since each already sums the contributions of the ep ranks whose tokens
 * it served: so every gradient is the mean over all dp ranks' micro-batches, as without expert parallelism. The
 * global norm adds the non-expert squares once and the expert squares summed over the expert-parallel group (each
 * expert once). Per step: an all-reduce of the non-expert gradients over dp, one of the experts' over the
 * expert-data-parallel group, two scalars.
 *
 * <p>ZeRO is not applied to either part (refused above stage 0 by the caller). One rank's training thread; the
 * communicators and the optimizer belong to the caller.
 */
public final class ExpertParallelUpdate implements ParameterUpdate {
    /** A run [offset, offset + length) of the flat buffers, of expert parameters or not. */
    private record Run(int offset, int length, boolean expert) { }

    private final AdamWOptimizer optimizer;
    private final Communicator dp, ep, expertDp;
    private final Tensor scalar;   // [1] f64
    private final Tensor grads;
    private final List<Run> runs = new ArrayList<>();

    /**
     * @param params   this rank's parameters: the non-expert ones and its E/ep experts of each MoE block
     * @param dp       the data-parallel group (every rank of a stage's replicas)
     * @param ep       the expert-parallel group
     * @param expertDp the expert-data-parallel group (ranks holding the same experts)
     */
    public ExpertParallelUpdate(ParameterSet params, AdamWOptimizer optimizer, Communicator dp, Communicator ep,
                                Communicator expertDp, MemoryPool pool) {
        this.optimizer = optimizer;
        this.dp = dp;
        this.ep = ep;
        this.expertDp = expertDp;
        this.grads = params.grads();
        this.scalar = Tensor.allocate(pool, MemoryCategory.BUFFERS, DType.F64, 1);
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
    }

    private void add(int offset, int length, boolean expert) {
        if (!runs.isEmpty() && runs.getLast().expert() == expert && runs.getLast().offset() + runs.getLast().length() == offset) {
            Run last = runs.removeLast();
            runs.add(new Run(last.offset(), last.length() + length, expert));
        } else {
            runs.add(new Run(offset, length, expert));
        }
    }

    @Override
    public Applied apply(double lr, double maxNorm) {
        long start = System.nanoTime();
        double dense = 0, experts = 0;
        for (Run r : runs) {
            Tensor g = grads.slice(0, r.offset(), r.length());
            if (r.expert()) {
                if (expertDp.size() > 1) expertDp.allReduce(g, ReduceOp.AVG);
                Vectors.scale(g, 1.0 / ep.size());
                experts += Vectors.sumOfSquares(g);
            } else {
                if (dp.size() > 1) dp.allReduce(g, ReduceOp.AVG);
                dense += Vectors.sumOfSquares(g);
            }
        }
        double norm = Math.sqrt(dense + reduce(ep, experts, ReduceOp.SUM));
        long communication = System.nanoTime() - start;
        if (!Double.isFinite(norm)) throw new IllegalStateException("gradient norm " + norm);
        optimizer.step(lr, GradientClipping.scaleFor(norm, maxNorm));
        return new Applied(norm, communication);
    }

    private double reduce(Communicator group, double value, ReduceOp op) {
        if (group.size() == 1) return value;
        scalar.set(value, 0);
        group.allReduce(scalar, op);
        return scalar.getDouble(0);
    }

    @Override
    public double mean(double value) {
        return reduce(dp, value, ReduceOp.AVG);
    }

    @Override
    public long steps() {
        return optimizer.steps();
    }

    /** Frees the scalar buffer; the optimizer and communicators belong to the caller. */
    @Override
    public void close() {
        scalar.close();
    }
}
