package dev.shardwise.parallel.tensor;

import dev.shardwise.comm.Communicator;
import dev.shardwise.comm.ReduceOp;
import dev.shardwise.core.tensor.Tensor;
import dev.shardwise.model.TensorParallel;

import java.util.Objects;

/**
 * The model's {@link TensorParallel} collectives (Shoeybi et al. 2019's f and g, and the vocabulary-parallel
 * cross-entropy's reductions) over a tensor-parallel group's {@link Communicator}, the one
 * {@code ProcessGroups.tp()} built from the layout. Sums and maxima are all-reduces of the whole buffer, which the
 * communicator reduces in rank order, so every rank receives the same bits and a run repeats bit for bit.
 *
 * <p>Used by one rank's training thread; every call blocks until the group's other ranks make it. The communicator
 * belongs to the caller.
 */
public final class CommunicatorTensorParallel implements TensorParallel {
    private final Communicator tensor;

    /** Over {@code tensor}, this rank's tensor-parallel group (tp ranks, adjacent in the layout). */
    public CommunicatorTensorParallel(Communicator tensor) {
        this.tensor = Objects.requireNonNull(tensor, "tensor");
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
    public String toString() {
        return "tensor parallel over " + tensor.name() + " (tp rank " + tensor.rank() + " of " + tensor.size() + ")";
    }
}
