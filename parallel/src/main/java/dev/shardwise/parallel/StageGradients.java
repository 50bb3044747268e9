package dev.shardwise.parallel;

import dev.shardwise.comm.Communicator;
import dev.shardwise.comm.ReduceOp;
import dev.shardwise.core.kernels.Vectors;
import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.tensor.Tensor;
import dev.shardwise.model.ParameterSet;

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
    private final ScalarReduction scalar;

    private StageGradients() {
        this.pipeline = null;
        this.tiedUnit = null;
        this.tiedPeer = -1;
        this.countsTied = true;
        this.scalar = null;
    }

    /**
     * The stage {@code pipeline.rank()} of {@code pipeline.size()} over {@code params}: the first stage's unit
     * {@code embeddings} and the last stage's unit {@code head} must each hold wte alone (Gpt.declare with
     * splitEmbedding).
     *
     * @throws IllegalArgumentException if an end stage lacks its wte unit or holds more than wte in it
     */
    public StageGradients(Communicator pipeline, ParameterSet params, MemoryPool pool) {
        this.pipeline = pipeline;
        int stage = pipeline.rank(), last = pipeline.size() - 1;
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
        this.scalar = new ScalarReduction(pipeline, pool);
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
        try (Tensor theirs = Tensor.allocate(pool, MemoryCategory.BUFFERS, piece.dtype(), piece.shape())) {
            pipeline.send(piece, tiedPeer, TIED_TAG);
            pipeline.receive(theirs, tiedPeer, TIED_TAG);
            Vectors.accumulate(piece, theirs);
        }
    }

    /** wte's unit on this stage when it holds the tied copy (the last stage), else null: not counted in the norm. */
    ParameterSet.Unit uncountedUnit() {
        return countsTied ? null : tiedUnit;
    }

    /** wte's unit on an end stage, or null. */
    ParameterSet.Unit tiedUnit() {
        return tiedUnit;
    }

    /** Σ over the pipeline's stages of each stage's {@code sumOfSquares} (the value itself when not cut). */
    double sumOverStages(double sumOfSquares) {
        return scalar == null ? sumOfSquares : scalar.reduce(sumOfSquares, ReduceOp.SUM);
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
        if (scalar != null) scalar.close();
    }
}
