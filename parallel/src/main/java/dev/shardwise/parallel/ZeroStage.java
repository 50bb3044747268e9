package dev.shardwise.parallel;

import dev.shardwise.comm.Communicator;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.model.MoeConfig;
import dev.shardwise.model.ParameterSet;
import dev.shardwise.model.optim.AdamWOptimizer;
import dev.shardwise.model.optim.ParameterUpdate;

import java.nio.file.Path;

/**
 * The stages of ZeRO (Rajbhandari et al. 2020) over a data-parallel group of N ranks, and the one place that turns
 * a stage into code: how a rank allocates its parameters ({@link #residency}, {@link #paddingMultiple},
 * {@link #allocate}) and which update runs ({@link #build}).
 * <pre>
 *   stage  constant          a rank holds                                        update
 *   0      REPLICATED        all values, gradients, AdamW state (16Ψ)            ReplicatedUpdate (+ DataParallel)
 *   1      OPTIMIZER_STATE   all values and gradients, 1/N of the AdamW state    ZeroStage1Update
 *   2      GRADIENTS         all values, 1/N of gradients and AdamW state        ZeroShardedUpdate(2)
 *   3      PARAMETERS        1/N of values, gradients and AdamW state            ZeroShardedUpdate(3)
 * </pre>
 * Stage 0 over one rank reduces nothing; with a group of N &gt; 1 it averages gradients with {@link DataParallel}
 * (all-reduce). Stages 1-3 need a group (a single rank's world will do) and a flat layout padded to a multiple of
 * N; their communication is ZeroStage1Update's and ZeroShardedUpdate's (reduce-scatter + all-gather of P' per
 * step).
 */
public enum ZeroStage {
    /** Stage 0: everything replicated. */
    REPLICATED(ParameterSet.Residency.VALUES_AND_GRADS),
    /** Stage 1 ("P_os"): the AdamW state is sharded. */
    OPTIMIZER_STATE(ParameterSet.Residency.VALUES_AND_GRADS),
    /** Stage 2 ("P_os+g"): gradients sharded too, reduce-scattered unit by unit during backward. */
    GRADIENTS(ParameterSet.Residency.VALUES),
    /** Stage 3 ("P_os+g+p"): parameters sharded too, all-gathered unit by unit around forward and backward. */
    PARAMETERS(ParameterSet.Residency.NONE);

    /** Elements per moment an offloaded optimizer streams through memory at a time by default (4 MiB each in fp32). */
    public static final int DEFAULT_OFFLOAD_CHUNK_ELEMENTS = 1 << 20;

    private final ParameterSet.Residency residency;

    ZeroStage(ParameterSet.Residency residency) {
        this.residency = residency;
    }

    /**
     * The stage numbered {@code stage}, as {@code zero:} and {@code --zero} spell it.
     *
     * @throws IllegalArgumentException naming the value and the valid stages, if it is not 0..3
     */
    public static ZeroStage of(int stage) {
        if (stage < 0 || stage > 3) {
            throw new IllegalArgumentException("zero=" + stage + " is not a ZeRO stage; use 0 (everything replicated), "
                    + "1 (optimizer state sharded), 2 (gradients too) or 3 (parameters too)");
        }
        return values()[stage];
    }

    /** The stage's number, 0..3. */
    public int number() {
        return ordinal();
    }

    /** Which flat buffers a rank allocates: whole values and gradients up to stage 1, values only at 2, none at 3. */
    public ParameterSet.Residency residency() {
        return residency;
    }

    /** The multiple every unit of the flat layout is padded to: 1 at stage 0, the dp size N when sharding. */
    public int paddingMultiple(int dpSize) {
        if (dpSize < 1) throw new IllegalArgumentException("dpSize=" + dpSize + " must be at least 1");
        return this == REPLICATED ? 1 : dpSize;
    }

    /**
     * Allocates the declared parameters as this stage holds them over a dp group of {@code dpSize} ranks (uninitialised;
     * see {@link Update#initialize}).
     *
     * @throws IllegalArgumentException if dpSize &lt; 1
     */
    public ParameterSet allocate(ParameterSet.Builder declared, MemoryPool pool, DType dtype, int dpSize) {
        return declared.allocate(pool, dtype, paddingMultiple(dpSize), residency);
    }

    /**
     * As {@link #allocate(ParameterSet.Builder, MemoryPool, DType, int)} for an expert-parallel rank at stage 2 or 3:
     * each unit's runs of experts and of dense parameters padded apart ({@link ParameterSet.Builder#segmentedBy}), so
     * the update can shard the experts over their expert-data-parallel group ({@link Options#withExperts}).
     */
    public ParameterSet allocateSegmented(ParameterSet.Builder declared, MemoryPool pool, DType dtype, int dpSize) {
        return allocate(declared.segmentedBy(MoeConfig::isExpertParameter), pool, dtype, dpSize);
    }

    /**
     * The update this stage runs over {@code dp}, with the state it owns; the parameters are not initialised yet
     * ({@link Update#initialize}). The caller closes the result.
     *
     * @param params   allocated by {@link #allocate} with dp's size
     * @param dp       the data-parallel group; may be null (or of size 1) only at stage 0, which then reduces nothing
     * @param pool     charged for the optimizer state and buffers
     * @param settings AdamW's hyper-parameters
     * @param options  bucket size and overlap of the reduction, optimizer offload
     * @throws IllegalArgumentException if a sharding stage has no group, the offload is asked at stage 0, or the
     *                                  parameters were not allocated for this stage and group
     */
    public Update build(ParameterSet params, Communicator dp, MemoryPool pool, AdamWOptimizer.Settings settings,
                        Options options) {
        if (this != REPLICATED && dp == null) {
            throw new IllegalArgumentException("ZeRO stage " + number() + " shards over a data-parallel group, but none was "
                    + "given; pass the dp group (a world of one rank will do)");
        }
        if (options.experts().sharded() && (this == REPLICATED || this == OPTIMIZER_STATE)) {
            throw new IllegalArgumentException("ZeRO stage " + number() + " does not shard experts over their own group; "
                    + "expert parallelism at stages 0 and 1 runs ExpertParallelUpdate");
        }
        if (this == REPLICATED && options.offload() != null) {
            throw new IllegalArgumentException("offloading the optimizer state to " + options.offload() + " needs ZeRO "
                    + "stage >= 1 (the offloaded optimizer is the sharded one); use zero 1 (it works on one rank too) or "
                    + "drop the offload");
        }
        return switch (this) {
            case REPLICATED -> Update.Replicated.create(params, dp == null || dp.size() == 1 ? null : dp, pool, settings, options);
            case OPTIMIZER_STATE -> new Update.Stage1(params,
                    new ZeroStage1Update(params, dp, pool, settings, options.moments(), options.stages()));
            case GRADIENTS, PARAMETERS -> new Update.Sharded(
                    new ZeroShardedUpdate(number(), params, dp, pool, settings, options.moments(), options.overlap(),
                            options.stages(), options.experts()));
        };
    }

    /**
     * How {@link #build} sets up the update beyond the stage.
     *
     * @param bucketElements       stage 0 over several ranks: gradient elements per all-reduce bucket
     * @param overlap              overlap communication with the passes: stage 0 starts each bucket's all-reduce
     *                             during backward, stages 2 and 3 run each pass on a helper thread while the rank's
     *                             thread gathers and reduce-scatters; false runs them after (or between) the computation
     * @param offload              directory for a memory-mapped file per rank holding its AdamW moments (ZeRO-Infinity's
     *                             optimizer offload, stages 1-3), or null to keep them in memory
     * @param offloadChunkElements elements per moment the offloaded optimizer streams through memory at a time
     * @param stages               what a pipeline stage's update shares with the other stages (tied embedding, norm);
     *                             {@link StageGradients#NONE} when the model is not cut
     * @param experts              stages 2 and 3 under expert parallelism: the group the experts are sharded over
     *                             (the parameters allocated segmented, see {@link #allocate}); else
     *                             {@link ZeroShardedUpdate.Experts#NONE}
     */
    public record Options(int bucketElements, boolean overlap, Path offload, int offloadChunkElements, StageGradients stages,
                          ZeroShardedUpdate.Experts experts) {
        /** @throws IllegalArgumentException if bucketElements or offloadChunkElements is below 1 */
        public Options {
            if (bucketElements < 1) throw new IllegalArgumentException("bucketElements must be >= 1, got " + bucketElements);
            if (offloadChunkElements < 1) {
                throw new IllegalArgumentException("offloadChunkElements must be >= 1, got " + offloadChunkElements);
            }
        }

        /** PyTorch DDP's 25 MiB buckets, overlapped, moments in memory. */
        public static Options defaults() {
            return new Options(DataParallel.DEFAULT_BUCKET_ELEMENTS, true, null, DEFAULT_OFFLOAD_CHUNK_ELEMENTS,
                    StageGradients.NONE, ZeroShardedUpdate.Experts.NONE);
        }

        public Options withBucketElements(int elements) {
            return new Options(elements, overlap, offload, offloadChunkElements, stages, experts);
        }

        public Options withOverlap(boolean on) {
            return new Options(bucketElements, on, offload, offloadChunkElements, stages, experts);
        }

        /** Moments offloaded to {@code directory} (null: in memory), streamed {@code chunkElements} at a time. */
        public Options withOffload(Path directory, int chunkElements) {
            return new Options(bucketElements, overlap, directory, chunkElements, stages, experts);
        }

        /** A pipeline stage's update: the tied embedding and the norm shared with the other stages. */
        public Options withStages(StageGradients shared) {
            return new Options(bucketElements, overlap, offload, offloadChunkElements, shared, experts);
        }

        /** Stages 2 and 3 under expert parallelism: the experts sharded over {@code sharding}'s group. */
        public Options withExperts(ZeroShardedUpdate.Experts sharding) {
            return new Options(bucketElements, overlap, offload, offloadChunkElements, stages, sharding);
        }

        ShardMoments.Factory moments() {
            return offload == null ? ShardMoments.resident() : ShardMoments.onDisk(offload, offloadChunkElements);
        }
    }

    /**
     * The update a stage runs and the state it owns, one record per implementation, so a consumer that needs the
     * concrete kind (checkpoints gather sharded moments) switches over it exhaustively. Closing it frees that state.
     */
    public sealed interface Update extends AutoCloseable permits Update.Replicated, Update.Stage1, Update.Sharded {

        /** The update a train step runs. */
        ParameterUpdate update();

        /**
         * Fills the parameters with a whole-model {@link ParameterSet#initialize} of {@code seed}; at stage 3 only
         * this rank's shard, unit by unit, so no rank holds all parameters.
         */
        void initialize(long seed);

        @Override
        void close();

        /**
         * Stage 0: AdamW over every parameter, gradients averaged by {@code dataParallel} (null: one rank, nothing
         * reduced).
         */
        record Replicated(ParameterSet params, AdamWOptimizer optimizer, DataParallel dataParallel,
                          ReplicatedUpdate update) implements Update {

            static Replicated create(ParameterSet params, Communicator dp, MemoryPool pool, AdamWOptimizer.Settings settings,
                                     Options options) {
                AdamWOptimizer optimizer = new AdamWOptimizer(params, pool, settings);
                try {
                    DataParallel reduction = dp == null ? null : new DataParallel(dp, options.bucketElements(), pool,
                            options.overlap() ? params : null);
                    return new Replicated(params, optimizer, reduction, new ReplicatedUpdate(params, optimizer,
                            reduction == null ? GradientReduction.NONE : reduction, options.stages(), pool));
                } catch (RuntimeException e) {
                    optimizer.close();
                    throw e;
                }
            }

            @Override
            public void initialize(long seed) {
                params.initialize(seed);
            }

            @Override
            public void close() {
                try {
                    if (dataParallel != null) dataParallel.close();
                } finally {
                    optimizer.close();
                }
            }
        }

        /** Stage 1: whole values and gradients, this rank's shard of the AdamW state. */
        record Stage1(ParameterSet params, ZeroStage1Update update) implements Update {
            @Override
            public void initialize(long seed) {
                params.initialize(seed);
            }

            @Override
            public void close() {
                update.close();
            }
        }

        /** Stages 2 and 3 ({@link ZeroShardedUpdate#stage}): gradients, and at stage 3 values, sharded unit by unit. */
        record Sharded(ZeroShardedUpdate update) implements Update {
            @Override
            public void initialize(long seed) {
                update.initialize(seed);
            }

            @Override
            public void close() {
                update.close();
            }
        }
    }
}
