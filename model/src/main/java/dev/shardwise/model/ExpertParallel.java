package dev.shardwise.model;

import dev.shardwise.core.tensor.Tensor;

/**
 * The collective expert parallelism (GShard, Lepikhin et al. 2020; FastMoE) needs from its expert-parallel group, as
 * the model sees it: {@code model} owns this interface and {@code parallel} implements it over a communicator, so
 * the model never depends on {@code comm}. With ep ranks, rank r holds experts [r·E/ep, (r+1)·E/ep) of every MoE
 * block; tokens travel to the rank of their expert and back by uneven all-to-alls (dispatch, then combine).
 *
 * <p>Used by one rank's training thread; every call blocks until every rank of the group has made it, so all ranks
 * must make the same calls in the same order (a rank with no tokens for anyone still calls).
 */
public interface ExpertParallel {

    /** One rank holds every expert: nothing is exchanged. */
    ExpertParallel NONE = new ExpertParallel() {
        @Override public int size() { return 1; }
        @Override public int epRank() { return 0; }
        @Override public void allToAll(Tensor output, int[] receiveCounts, Tensor input, int[] sendCounts) {
            throw new IllegalStateException("one expert-parallel rank exchanges nothing");
        }
    };

    /** ep, ranks in the expert-parallel group. */
    int size();

    /** This rank's place in the expert-parallel group, in [0, ep). */
    int epRank();

    /**
     * Sends {@code sendCounts[r]} elements of {@code input} (consecutive chunks in rank order) to rank r and receives
     * {@code receiveCounts[r]} elements from it into consecutive chunks of {@code output}; counts may differ per rank.
     * Buffers may be larger than their counts' sum.
     */
    void allToAll(Tensor output, int[] receiveCounts, Tensor input, int[] sendCounts);

    /**
     * Which of an MoE block's all-to-alls a call is (GShard's dispatch and combine; timelines draw each as its own
     * span): the per-expert token counts; in forward the dispatch of tokens to their experts' ranks and the combine of
     * the experts' outputs back; in backward the combine's gradient (output gradients to the experts' ranks) and the
     * dispatch's gradient (input gradients back).
     */
    enum Exchange {
        COUNTS("counts"), DISPATCH("dispatch"), COMBINE("combine"), COMBINE_GRADIENT("combine-grad"),
        DISPATCH_GRADIENT("dispatch-grad");

        private final String label;

        Exchange(String label) { this.label = label; }

        /** How timelines name it: counts, dispatch, combine, combine-grad, dispatch-grad. */
        public String label() { return label; }
    }

    /** {@link #allToAll(Tensor, int[], Tensor, int[])}, saying which exchange it is; by default just that all-to-all. */
    default void allToAll(Exchange exchange, Tensor output, int[] receiveCounts, Tensor input, int[] sendCounts) {
        allToAll(output, receiveCounts, input, sendCounts);
    }

    /**
     * E / ep, the experts per rank.
     *
     * @throws IllegalArgumentException naming the fix, if ep does not divide the experts
     */
    default int localExperts(int experts) {
        if (experts % size() != 0) {
            StringBuilder ok = new StringBuilder();
            for (int d = 1; d <= experts; d++) if (experts % d == 0) ok.append(ok.isEmpty() ? "" : ", ").append(d);
            throw new IllegalArgumentException("ep=" + size() + " does not divide model.moe.experts=" + experts + "; use ep in {" + ok + "}");
        }
        return experts / size();
    }
}
