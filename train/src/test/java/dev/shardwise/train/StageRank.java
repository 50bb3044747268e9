package dev.shardwise.train;

import dev.shardwise.comm.Communicator;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.tensor.Tensor;
import dev.shardwise.model.Parameter;
import dev.shardwise.model.ParameterSet;
import dev.shardwise.model.optim.AdamWOptimizer;
import dev.shardwise.parallel.StageGradients;
import dev.shardwise.parallel.ZeroStage;

import java.util.HashMap;
import java.util.Map;

/**
 * What a parity test's rank builds around its stage's parameters, through the trainer's one place for ZeRO
 * ({@link ZeroStage}): the update of the layout's stage over the dp group, initialised with seed 7, and afterwards
 * the whole values by global name (gathered from the shards under ZeRO 3).
 */
final class StageRank {
    /** Gradient elements per overlapped all-reduce bucket: small, so the test models have several buckets. */
    private static final int BUCKET_ELEMENTS = 1 << 12;

    private StageRank() { }

    /** The update {@code zero} runs over {@code dp}, sharing the tied embedding and norm by {@code stages}; the caller closes it. */
    static OptimizerState optimizer(ZeroStage zero, ParameterSet params, Communicator dp, MemoryPool pool, StageGradients stages) {
        ZeroStage.Update built = zero.build(params, dp, pool, AdamWOptimizer.Settings.gpt(),
                ZeroStage.Options.defaults().withBucketElements(BUCKET_ELEMENTS).withStages(stages));
        built.initialize(7);
        return OptimizerState.of(built, params, pool);
    }

    /** Every parameter's values by global name (collective under ZeRO 3: every rank of the dp group calls it). */
    static Map<String, double[]> valuesByName(OptimizerState optimizer) {
        ParameterSet params = optimizer.parameters();
        Tensor full = optimizer.valuesToSave();
        try {
            Map<String, double[]> values = new HashMap<>();
            for (Parameter p : params.parameters()) {
                values.put(p.name(), full.slice(0, Math.toIntExact(params.offsetOf(p)), Math.toIntExact(p.numel())).toDoubleArray());
            }
            return values;
        } finally {
            optimizer.saved();
        }
    }
}
