package dev.shardwise.parallel;

import dev.shardwise.comm.Communicator;
import dev.shardwise.comm.ReduceOp;
import dev.shardwise.core.kernels.Vectors;
import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.tensor.Tensor;
import dev.shardwise.model.ParameterSet;
import dev.shardwise.parallel.tensor.TensorParallelGradients;

/**
 * What a pipeline stage's update shares with the other stages of its pipeline (Megatron's finalize-model-grads):
 * the tied embedding, whose gradient is split between the first stage (the embedding's use) and the last (the
 * head's copy), and the global gradient norm, which is a sum over every stage's gradients with the tied matrix
 * counted once.
 *
 * <p>Tied sum: the first and the last stage swap their wte gradients over the pipeline group (send, then receive;
 * sends never block) and each adds the other's: e + h on one end and h + e on the other are the same bits, so the
 * two copies stay equal after the update. Both ends keep wte alone in its unit ({@code embeddings} first,
 * {@code head} last), so under ZeRO 2 and 3 rank r of each end holds the same piece of it. Bytes per step: 4·V·C
 * sent and received by each end (4·V·C/N under ZeRO 2 and 3).
 *
 * <p>Norm: each rank's Σg² (without the head's copy of wte) is summed over its data-parallel group by the update
 * and then over the pipeline group here, in stage order, so every rank clips with the same global norm.
 *
 * <p>Tensor parallelism (Shoeybi et al. 2019): with a tensor-parallel group of tp > 1 ranks, the sharded parameters'
 * Σg² is summed over the tp group too, while the parameters every tp rank holds whole
 * ({@link dev.shardwise.model.Parameter#replicatedOverTensorParallel}: norms, row-parallel biases, wpe; their
 * gradients are equal on every tp rank) are counted on tp rank 0 only, so each is counted once. One more all-reduce
 * of one float64 per step over the tp group. Before the norm, the gradients tp ranks compute only a part of are
 * summed over the ranks that share them ({@link TensorParallelGradients}: sequence-parallel norms, replicated kv
 * heads), with the replicated kv pieces counted on the first rank of their group only.
 *
 * <p>One per rank, used by the rank's thread from the update's {@code apply}.
 */
public final class StageGradients implements AutoCloseable {
    /** The model is not cut over stages: nothing is shared, the norm is the data-parallel one. */
    public static final StageGradients NONE = new StageGradients();

    private static final int TIED_TAG = 9_001;

    private final Communicator pipeline;       // null for NONE
    private final ParameterSet.Unit tiedUnit;   // wte's unit on the first or last stage, or null
    private final int tiedPeer;                 // the other end's stage
    private final boolean countsTied;           // false on the last stage: its wte is the copy
    // The other end's wte gradient (or its ZeRO piece), received every step: allocated once, reused, charged to BUFFERS.
    private Tensor theirs;
    private final ScalarReduction scalar;       // over the pipeline group, or null
    private final ScalarReduction tensorScalar; // over the tensor-parallel group when tp > 1, or null
    private final long[] uncounted;             // flat [from, to) pairs, sorted, left out of this rank's Σg² (tp > 1)
    private final TensorParallelGradients partials;   // tp > 1, or null

    private StageGradients() {
        this.pipeline = null;
        this.tiedUnit = null;
        this.tiedPeer = -1;
        this.countsTied = true;
        this.scalar = null;
        this.tensorScalar = null;
        this.uncounted = new long[0];
        this.partials = null;
    }

    /**
     * The stage {@code pipeline.rank()} of {@code pipeline.size()} over {@code params}: the first stage's unit
     * {@code embeddings} and the last stage's unit {@code head} must each hold wte alone (Gpt.declare with
     * splitEmbedding).
     *
     * @throws IllegalArgumentException if an end stage lacks its wte unit or holds more than wte in it
     */
    public StageGradients(Communicator pipeline, ParameterSet params, MemoryPool pool) {
        this(pipeline, null, params, pool);
    }

    /**
     * As {@link #StageGradients(Communicator, ParameterSet, MemoryPool)}, with {@code tensor}, the rank's
     * tensor-parallel group (null or of size 1: no tensor parallelism); {@code pipeline} may be null when the model
     * is not cut over stages.
     *
     * @throws IllegalArgumentException if an end stage lacks its wte unit or holds more than wte in it
     */
    public StageGradients(Communicator pipeline, Communicator tensor, ParameterSet params, MemoryPool pool) {
        this.pipeline = pipeline;
        int stage = pipeline == null ? 0 : pipeline.rank(), last = pipeline == null ? 0 : pipeline.size() - 1;
        String unitName = stage == 0 ? "embeddings" : stage == last ? "head" : null;
        ParameterSet.Unit found = null;
        if (unitName != null && last > 0) {
            for (ParameterSet.Unit u : params.units()) if (u.name().equals(unitName)) found = u;
            if (found == null || found.parameters().size() != 1 || !found.parameters().getFirst().name().equals("wte")) {
                throw new IllegalArgumentException("pipeline stage " + stage + " must hold wte alone in unit '" + unitName
                        + "' to tie it across stages; declare the stage with Gpt.declare(config, spans, true)");
            }
        }
        this.tiedUnit = found;
        this.tiedPeer = stage == 0 ? last : 0;
        this.countsTied = stage != last || last == 0;
        this.scalar = pipeline == null ? null : new ScalarReduction(pipeline, pool);
        boolean tensorParallel = tensor != null && tensor.size() > 1;
        this.tensorScalar = tensorParallel ? new ScalarReduction(tensor, pool) : null;
        this.partials = tensorParallel ? new TensorParallelGradients(tensor, params, pool) : null;
        java.util.List<long[]> ranges = new java.util.ArrayList<>();
        if (tensorParallel) {
            ranges.addAll(partials.uncountedReplicas(params));
            if (!countsTied && tiedUnit != null) ranges.add(new long[]{tiedUnit.offset(), tiedUnit.offset() + (long) tiedUnit.size()});
            if (tensor.rank() != 0) {
                for (dev.shardwise.model.Parameter p : params.parameters()) {
                    if (p.replicatedOverTensorParallel()) ranges.add(new long[]{params.offsetOf(p), params.offsetOf(p) + p.numel()});
                }
            }
        }
        ranges.sort(java.util.Comparator.comparingLong(r -> r[0]));
        this.uncounted = new long[2 * ranges.size()];
        for (int i = 0; i < ranges.size(); i++) {
            uncounted[2 * i] = ranges.get(i)[0];
            uncounted[2 * i + 1] = ranges.get(i)[1];
        }
    }

    /** Whether the model is split over a tensor-parallel group of more than one rank. */
    boolean tensorParallel() {
        return tensorScalar != null;
    }

    /**
     * Under tensor parallelism: this rank's share of Σg² over a gradient shard made of {@code lengths.length}
     * segments, segment i holding flat elements [flatStarts[i], flatStarts[i] + lengths[i]) at shard offset
     * shardOffsets[i], without the elements counted elsewhere (the tied copy on the last stage; on tp ranks other
     * than 0, every parameter replicated over tp). Sums in segment order, each piece by {@link Vectors#sumOfSquares}.
     */
    double countedSumOfSquares(Tensor shard, long[] flatStarts, int[] shardOffsets, int[] lengths) {
        double sum = 0;
        for (int i = 0; i < lengths.length; i++) {
            long from = flatStarts[i], end = from + lengths[i];
            for (int u = 0; u < uncounted.length && from < end; u += 2) {
                long a = Math.max(from, uncounted[u]), b = Math.min(end, uncounted[u + 1]);
                if (a >= b) continue;
                if (a > from) sum += Vectors.sumOfSquares(shard.slice(0, Math.toIntExact(shardOffsets[i] + from - flatStarts[i]), Math.toIntExact(a - from)));
                from = b;
            }
            if (from < end) sum += Vectors.sumOfSquares(shard.slice(0, Math.toIntExact(shardOffsets[i] + from - flatStarts[i]), Math.toIntExact(end - from)));
        }
        return sum;
    }

    /**
     * Under tensor parallelism: sums over the tp ranks sharing them the gradients each computes only a part of
     * (sequence-parallel parameters, replicated kv pieces), in a gradient shard laid out as for
     * {@link #countedSumOfSquares}; call after the data-parallel reduction and before the norm. Collective over the
     * tp group. Nothing without tensor parallelism.
     */
    void sumPartialGradients(Tensor shard, long[] flatStarts, int[] shardOffsets, int[] lengths) {
        if (partials != null) partials.sum(shard, flatStarts, shardOffsets, lengths);
    }

    /**
     * Adds the other end's wte gradient to this end's, on the flat gradients [P'] (ZeRO 0 and 1; call before
     * the optimizer reads them). Nothing on a middle stage.
     */
    void sumTiedFlat(Tensor flatGrads, MemoryPool pool) {
        if (tiedUnit == null) return;
        sumTied(flatGrads.slice(0, tiedUnit.offset(), tiedUnit.size()), pool);
    }

    /** As {@link #sumTiedFlat} on a ZeRO 2/3 gradient shard, whose piece of wte's unit is {@code piece}. */
    void sumTied(Tensor piece, MemoryPool pool) {
        if (tiedUnit == null) return;
        if (theirs == null) theirs = Tensor.allocate(pool, MemoryCategory.BUFFERS, piece.dtype(), piece.shape());
        pipeline.send(piece, tiedPeer, TIED_TAG);
        pipeline.receive(theirs, tiedPeer, TIED_TAG);
        Vectors.accumulate(piece, theirs);
    }

    /** wte's unit on this stage when it holds the tied copy (the last stage), else null: not counted in the norm. */
    ParameterSet.Unit uncountedUnit() {
        return countsTied ? null : tiedUnit;
    }

    /** wte's unit on an end stage, or null. */
    ParameterSet.Unit tiedUnit() {
        return tiedUnit;
    }

    /**
     * Σ over the tensor-parallel group (when tp > 1), then over the pipeline's stages, of each rank's
     * {@code sumOfSquares} (the value itself when neither).
     */
    double sumOverStages(double sumOfSquares) {
        double sum = tensorScalar == null ? sumOfSquares : tensorScalar.reduce(sumOfSquares, ReduceOp.SUM);
        return scalar == null ? sum : scalar.reduce(sum, ReduceOp.SUM);
    }

    /** Σg² of {@code grads} without elements [skipFrom, skipFrom + skipLength). */
    static double sumOfSquaresWithout(Tensor grads, int skipFrom, int skipLength) {
        int n = Math.toIntExact(grads.numel());
        if (skipLength == 0 || skipFrom >= n || skipFrom + skipLength <= 0) return Vectors.sumOfSquares(grads);
        int a = Math.max(0, skipFrom), b = Math.min(n, skipFrom + skipLength);
        double sum = a > 0 ? Vectors.sumOfSquares(grads.slice(0, 0, a)) : 0;
        return b < n ? sum + Vectors.sumOfSquares(grads.slice(0, b, n - b)) : sum;
    }

    @Override
    public void close() {
        if (theirs != null) theirs.close();
        if (scalar != null) scalar.close();
        if (tensorScalar != null) tensorScalar.close();
        if (partials != null) partials.close();
    }
}
