package dev.shardwise.train;

import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.tensor.Tensor;
import dev.shardwise.model.ParameterSet;
import dev.shardwise.model.optim.AdamWOptimizer;
import dev.shardwise.model.optim.ParameterUpdate;
import dev.shardwise.parallel.ExpertParallelUpdate;
import dev.shardwise.parallel.ZeroShardedUpdate;
import dev.shardwise.parallel.ZeroStage;
import dev.shardwise.parallel.ZeroStage1Update;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.util.ArrayList;
import java.util.List;

/**
 * A rank's optimizer as the trainer sees it: the update it runs each step, and the ranges of its parameter values and
 * AdamW moments at their places in the flat [P'] layout, for layout-independent checkpoints, however they are held
 * (replicated, or sharded by ZeRO or over expert-parallel groups): {@link #forSave} and {@link #forLoad}.
 * {@link #of} adapts whichever update {@link ZeroStage#build} chose, {@link #expertParallel} the expert-parallel
 * update; closing the state closes that update and what it owns.
 */
interface OptimizerState extends AutoCloseable {

    ParameterUpdate update();

    /** Whole parameter values, flat [P'] (collective under ZeRO 3, which gathers them); valid until {@link #saved}. */
    default Tensor valuesToSave() { return parameters().values(); }

    /** The parameters this state updates. */
    ParameterSet parameters();

    /** What {@link #valuesToSave} returned may go. */
    default void saved() { }

    /** Which of a parameter's tensors a held range is, and its name prefix in a checkpoint. */
    enum Kind {
        VALUES("param/"), FIRST_MOMENTS("adam_m/"), SECOND_MOMENTS("adam_v/");

        final String prefix;

        Kind(String prefix) { this.prefix = prefix; }
    }

    /** Elements [flatStart, flatStart + data.numel()) of the flat layout [P'] of {@code kind}, held in {@code data} (1-D). */
    record Holding(Kind kind, long flatStart, Tensor data) { }

    /** What runs while a rank's holdings are valid. */
    @FunctionalInterface
    interface HoldingsBody {
        void accept(List<Holding> held) throws IOException;
    }

    /**
     * Runs {@code body} with the ranges this rank saves: over the data-parallel group every flat element of values
     * and moments is saved by exactly one rank (its ZeRO shard; under ZeRO 0, share {@code dpRank} of {@code dpSize}
     * equal parts). Not collective; allocates nothing.
     */
    void forSave(int dpRank, int dpSize, HoldingsBody body) throws IOException;

    /**
     * Runs {@code body} with every range this rank holds (whole values where they are replicated, its shards where
     * sharded), for a checkpoint to be read into; then {@code steps} updates count as applied. Allocates nothing.
     */
    void forLoad(HoldingsBody body, long steps) throws IOException;

    @Override
    void close();

    /** Runs {@code body}, letting its IOException through a callback that cannot throw one. */
    private static void tunnel(HoldingsBody body, List<Holding> held) {
        try {
            body.accept(held);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    /** Unwraps what {@link #tunnel} wrapped. */
    private static void untunnel(Runnable r) throws IOException {
        try {
            r.run();
        } catch (UncheckedIOException e) {
            throw e.getCause();
        }
    }

    /** The state of {@code built}, an update of {@code params} (the parameters {@link ZeroStage#build} was given). */
    static OptimizerState of(ZeroStage.Update built, ParameterSet params, MemoryPool pool) {
        return switch (built) {
            case ZeroStage.Update.Replicated r -> replicated(r);
            case ZeroStage.Update.Stage1 s -> zeroStage1(s, params);
            case ZeroStage.Update.Sharded s -> zeroSharded(s, params, pool);
        };
    }

    /** ZeRO stage 0: every rank holds the whole AdamW state. */
    static OptimizerState replicated(ZeroStage.Update.Replicated built) {
        AdamWOptimizer optimizer = built.optimizer();
        return new OptimizerState() {
            public ParameterUpdate update() { return built.update(); }
            public ParameterSet parameters() { return built.params(); }

            public void forSave(int dpRank, int dpSize, HoldingsBody body) throws IOException {
                long padded = built.params().values().numel(), share = (padded + dpSize - 1) / dpSize;
                int from = Math.toIntExact(Math.min(padded, dpRank * share)), n = Math.toIntExact(Math.min(share, padded - from));
                body.accept(List.of(new Holding(Kind.VALUES, from, built.params().values().slice(0, from, n)),
                        new Holding(Kind.FIRST_MOMENTS, from, optimizer.firstMoments().slice(0, from, n)),
                        new Holding(Kind.SECOND_MOMENTS, from, optimizer.secondMoments().slice(0, from, n))));
            }

            public void forLoad(HoldingsBody body, long steps) throws IOException {
                body.accept(List.of(new Holding(Kind.VALUES, 0, built.params().values()),
                        new Holding(Kind.FIRST_MOMENTS, 0, optimizer.firstMoments()),
                        new Holding(Kind.SECOND_MOMENTS, 0, optimizer.secondMoments())));
                optimizer.setSteps(steps);
            }

            public void close() { built.close(); }
        };
    }

    /** ZeRO stage 1: this rank holds the moments of its shard; full moments exist only around checkpoints. */
    static OptimizerState zeroStage1(ZeroStage.Update.Stage1 built, ParameterSet params) {
        ZeroStage1Update update = built.update();
        return new OptimizerState() {
            public ParameterUpdate update() { return update; }
            public ParameterSet parameters() { return params; }

            public void forSave(int dpRank, int dpSize, HoldingsBody body) throws IOException {
                int start = update.shardStart(), n = update.shardSize();
                untunnel(() -> update.readMoments((m, v) -> tunnel(body, List.of(
                        new Holding(Kind.VALUES, start, params.values().slice(0, start, n)),
                        new Holding(Kind.FIRST_MOMENTS, start, m), new Holding(Kind.SECOND_MOMENTS, start, v)))));
            }

            public void forLoad(HoldingsBody body, long steps) throws IOException {
                int start = update.shardStart();
                untunnel(() -> update.writeMoments((m, v) -> tunnel(body, List.of(new Holding(Kind.VALUES, 0, params.values()),
                        new Holding(Kind.FIRST_MOMENTS, start, m), new Holding(Kind.SECOND_MOMENTS, start, v))), steps));
            }

            public void close() { built.close(); }
        };
    }

    /**
     * Expert parallelism (GShard) at ZeRO 0 or 1: whole values of this rank's parameters (the dense ones and its E/ep
     * experts, under their global names), the AdamW state of each run of dense parameters and of experts whole or
     * sharded over the run's group ({@link ExpertParallelUpdate}). A checkpoint takes each run's elements from one
     * rank of its group ({@link ExpertParallelUpdate#saved}).
     */
    static OptimizerState expertParallel(ExpertParallelUpdate update, ParameterSet params) {
        return new OptimizerState() {
            public ParameterUpdate update() { return update; }
            public ParameterSet parameters() { return params; }

            public void forSave(int dpRank, int dpSize, HoldingsBody body) throws IOException {
                untunnel(() -> update.readMoments((m, v) -> {
                    List<Holding> held = new ArrayList<>();
                    for (ExpertParallelUpdate.Range r : update.saved()) {
                        held.add(new Holding(Kind.VALUES, r.flatStart(), params.values().slice(0, r.flatStart(), r.length())));
                        held.add(new Holding(Kind.FIRST_MOMENTS, r.flatStart(), m.slice(0, r.momentOffset(), r.length())));
                        held.add(new Holding(Kind.SECOND_MOMENTS, r.flatStart(), v.slice(0, r.momentOffset(), r.length())));
                    }
                    tunnel(body, held);
                }));
            }

            public void forLoad(HoldingsBody body, long steps) throws IOException {
                untunnel(() -> update.writeMoments((m, v) -> {
                    List<Holding> held = new ArrayList<>();
                    held.add(new Holding(Kind.VALUES, 0, params.values()));
                    for (ExpertParallelUpdate.Range r : update.held()) {
                        held.add(new Holding(Kind.FIRST_MOMENTS, r.flatStart(), m.slice(0, r.momentOffset(), r.length())));
                        held.add(new Holding(Kind.SECOND_MOMENTS, r.flatStart(), v.slice(0, r.momentOffset(), r.length())));
                    }
                    tunnel(body, held);
                }, steps));
            }

            public void close() { update.close(); }
        };
    }

    /**
     * ZeRO stages 2 and 3: this rank holds shards of the gradients, moments and (stage 3) values; whole values exist
     * only while {@link #valuesToSave} lends them, in BUFFERS.
     */
    static OptimizerState zeroSharded(ZeroStage.Update.Sharded built, ParameterSet params, MemoryPool pool) {
        ZeroShardedUpdate update = built.update();
        int padded = Math.toIntExact(params.paddedCount());
        return new OptimizerState() {
            private Tensor fullValues;   // BUFFERS, allocated by valuesToSave only (stage 3)

            public ParameterUpdate update() { return update; }
            public ParameterSet parameters() { return params; }

            public Tensor valuesToSave() {
                if (update.stage() == 2) return params.values();
                fullValues = Tensor.allocate(pool, MemoryCategory.BUFFERS, params.dtype(), padded);
                update.gatherValues(fullValues);
                return fullValues;
            }

            public void saved() { release(); }

            public void forSave(int dpRank, int dpSize, HoldingsBody body) throws IOException {
                untunnel(() -> update.readShards((values, m, v) -> tunnel(body, pieces(values, m, v, false))));
            }

            public void forLoad(HoldingsBody body, long steps) throws IOException {
                untunnel(() -> update.writeShards((values, m, v) -> tunnel(body, pieces(values, m, v, true)), steps));
            }

            /**
             * Each piece of the shards (one per unit; under expert parallelism one per run of dense parameters or of
             * experts), at its flat place; at stage 2 the values are whole (all of them when loading).
             */
            private List<Holding> pieces(Tensor values, Tensor m, Tensor v, boolean load) {
                List<Holding> held = new ArrayList<>();
                if (values == null && load) held.add(new Holding(Kind.VALUES, 0, params.values()));
                for (ZeroShardedUpdate.Piece p : update.pieces()) {
                    int flat = p.flatStart(), at = p.shardOffset(), piece = p.length();
                    if (values != null) held.add(new Holding(Kind.VALUES, flat, values.slice(0, at, piece)));
                    else if (!load) held.add(new Holding(Kind.VALUES, flat, params.values().slice(0, flat, piece)));
                    held.add(new Holding(Kind.FIRST_MOMENTS, flat, m.slice(0, at, piece)));
                    held.add(new Holding(Kind.SECOND_MOMENTS, flat, v.slice(0, at, piece)));
                }
                return held;
            }

            private void release() {
                if (fullValues != null) fullValues.close();
                fullValues = null;
            }

            public void close() {
                release();
                built.close();
            }
        };
    }
}
