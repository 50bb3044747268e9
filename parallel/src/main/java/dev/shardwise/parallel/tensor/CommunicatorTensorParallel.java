package dev.shardwise.parallel.tensor;

import dev.shardwise.comm.Communicator;
import dev.shardwise.comm.ReduceOp;
import dev.shardwise.core.tensor.Tensor;
import dev.shardwise.model.TensorParallel;

import java.util.Objects;

/**
 * The model's {@link TensorParallel} collectives (Shoeybi et al. 2019's f and g, and the vocabulary-parallel
 * cross-entropy's reductions) over a tensor-parallel group's {@link Communicator}, the one
 * {@code ProcessGroups.tp()} built from the layout, and sequence parallelism's all-gathers and reduce-scatters
 * (Korthikanti et al. 2022) when the layout asks for it. Sums and maxima are all-reduces (or reduce-scatters) of the
 * whole buffer, which the communicator reduces in rank order, so every rank receives the same bits and a run repeats
 * bit for bit.
 *
 * <p>Used by one rank's training thread; every call blocks until the group's other ranks make it. The communicator
 * belongs to the caller.
 */
public final class CommunicatorTensorParallel implements TensorParallel {
    private final Communicator tensor;
    private final boolean sequenceParallel;

    /** Over {@code tensor}, this rank's tensor-parallel group (tp ranks, adjacent in the layout); no sequence parallelism. */
    public CommunicatorTensorParallel(Communicator tensor) {
        this(tensor, false);
    }

    /**
     * Over {@code tensor}; with {@code sequenceParallel} (the layout's {@code sequenceParallel()}) the layers split
     * the replicated regions along the sequence (Korthikanti et al. 2022).
     *
     * @throws IllegalArgumentException if sequence parallelism is asked for over a group of one rank
     */
    public CommunicatorTensorParallel(Communicator tensor, boolean sequenceParallel) {
        this.tensor = Objects.requireNonNull(tensor, "tensor");
        if (sequenceParallel && tensor.size() < 2) {
            throw new IllegalArgumentException("sequence parallelism needs a tensor-parallel group of tp >= 2 ranks, got "
                    + tensor.name() + " of " + tensor.size() + "; use tp >= 2 or sequenceParallel=false");
        }
        this.sequenceParallel = sequenceParallel;
    }

    @Override
    public int size() {
        return tensor.size();
    }

    @Override
    public int tpRank() {
        return tensor.rank();
    }

    @Override
    public void allReduceSum(Tensor buffer) {
        tensor.allReduce(buffer, ReduceOp.SUM);
    }

    @Override
    public void allReduceMax(Tensor buffer) {
        tensor.allReduce(buffer, ReduceOp.MAX);
    }

    @Override
    public void allGather(Tensor output, Tensor input) {
        tensor.allGather(output, input);
    }

    @Override
    public void reduceScatterSum(Tensor output, Tensor input) {
        tensor.reduceScatter(output, input, ReduceOp.SUM);
    }

    @Override
    public boolean sequenceParallel() {
        return sequenceParallel;
    }

    @Override
    public String toString() {
        return "tensor parallel over " + tensor.name() + " (tp rank " + tensor.rank() + " of " + tensor.size() + ")"
                + (sequenceParallel ? ", sequence parallel" : "");
    }
}
