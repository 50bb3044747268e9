package dev.shardwise.parallel.expert;

import dev.shardwise.comm.Communicator;
import dev.shardwise.core.tensor.Tensor;
import dev.shardwise.model.ExpertParallel;

import java.util.Objects;

/**
 * The model's {@link ExpertParallel} all-to-all (GShard's dispatch and combine) over an expert-parallel group's
 * {@link Communicator}, the one {@code ProcessGroups.ep()} built from the layout (ep consecutive data-parallel ranks
 * of one stage). The communicator belongs to the caller; calls block until the group's other ranks make them.
 */
public final class CommunicatorExpertParallel implements ExpertParallel {
    private final Communicator expert;

    /** Over {@code expert}, this rank's expert-parallel group. */
    public CommunicatorExpertParallel(Communicator expert) {
        this.expert = Objects.requireNonNull(expert, "expert");
    }

    @Override
    public int size() {
        return expert.size();
    }

    @Override
    public int epRank() {
        return expert.rank();
    }

    @Override
    public void allToAll(Tensor output, int[] receiveCounts, Tensor input, int[] sendCounts) {
        expert.allToAll(output, receiveCounts, input, sendCounts);
    }

    @Override
    public String toString() {
        return "expert parallel over " + expert.name() + " (ep rank " + expert.rank() + " of " + expert.size() + ")";
    }
}
