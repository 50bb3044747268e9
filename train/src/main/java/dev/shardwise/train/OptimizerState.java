package dev.shardwise.train;

import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.tensor.Tensor;
import dev.shardwise.model.ParameterSet;
import dev.shardwise.model.optim.AdamWOptimizer;
import dev.shardwise.model.optim.ParameterUpdate;
import dev.shardwise.parallel.GradientReduction;
import dev.shardwise.parallel.ReplicatedUpdate;
import dev.shardwise.parallel.ZeroStage1Update;

/**
 * A rank's optimizer as the trainer sees it: the update it runs each step and its AdamW moments as full flat
 * [P'] tensors for layout-independent checkpoints, however they are held (replicated, or sharded by ZeRO and
 * gathered for a checkpoint). Every rank calls {@link #momentsToSave} at the same step (it is collective under ZeRO).
 */
interface OptimizerState extends AutoCloseable {

    ParameterUpdate update();

    /** First and second moments, flat [P'], to be saved (valid until the next call). */
    Tensor[] momentsToSave();

    /** The checkpoint is written: buffers made for {@link #momentsToSave} may go. */
    void saved();

    /** Flat [P'] buffers a checkpoint's moments are read into; then call {@link #loaded}. */
    Tensor[] momentsToLoad();

    /** The moments of {@link #momentsToLoad} are in place; {@code steps} updates were applied before. */
    void loaded(long steps);

    @Override
    void close();

    /** ZeRO stage 0: every rank holds the whole AdamW state. */
    static OptimizerState replicated(ParameterSet params, MemoryPool pool, AdamWOptimizer.Settings settings,
                                     GradientReduction reduction) {
        AdamWOptimizer optimizer = new AdamWOptimizer(params, pool, settings);
        ParameterUpdate update = new ReplicatedUpdate(params, optimizer, reduction);
        return new OptimizerState() {
            public ParameterUpdate update() { return update; }
            public Tensor[] momentsToSave() { return new Tensor[]{optimizer.firstMoments(), optimizer.secondMoments()}; }
            public void saved() { }
            public Tensor[] momentsToLoad() { return momentsToSave(); }
            public void loaded(long steps) { optimizer.setSteps(steps); }
            public void close() { optimizer.close(); }
        };
    }

    /** ZeRO stage 1: this rank holds the moments of its shard; full moments exist only around checkpoints. */
    static OptimizerState zeroStage1(ZeroStage1Update update, ParameterSet params, MemoryPool pool) {
        int padded = Math.toIntExact(params.values().numel());
        return new OptimizerState() {
            private Tensor fullM, fullV;   // BUFFERS, allocated for checkpoints only

            public ParameterUpdate update() { return update; }

            public Tensor[] momentsToSave() {
                Tensor[] full = buffers();
                update.gatherMoments(full[0], full[1]);
                return full;
            }

            public void saved() { release(); }

            public Tensor[] momentsToLoad() { return buffers(); }

            public void loaded(long steps) {
                update.loadMoments(fullM, fullV, steps);
                release();
            }

            private Tensor[] buffers() {
                if (fullM == null) {
                    fullM = Tensor.allocate(pool, MemoryCategory.BUFFERS, params.dtype(), padded);
                    fullV = Tensor.allocate(pool, MemoryCategory.BUFFERS, params.dtype(), padded);
                }
                return new Tensor[]{fullM, fullV};
            }

            private void release() {
                if (fullM != null) {
                    fullM.close();
                    fullV.close();
                    fullM = fullV = null;
                }
            }

            public void close() {
                release();
                update.close();
            }
        };
    }
}
