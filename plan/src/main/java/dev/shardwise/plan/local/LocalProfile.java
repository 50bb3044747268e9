package dev.shardwise.plan.local;

import dev.shardwise.model.Recompute;

import java.util.Map;

/**
 * What one rank's pieces of a model cost on this machine, measured by {@link LocalProfiler} with as many ranks running
 * at once as the layouts it prices use (so the ranks share the cores, caches and memory bandwidth as in training):
 * seconds and bytes per micro-batch of the embedding, of one transformer block under each recompute policy, and of
 * the final norm with the tied head and loss; the optimizer's seconds per parameter; and the collectives' cost on the
 * local backend. Memory is counted as the runtime holds it: a forward and its backward allocate from one step arena,
 * which keeps every block until the pass ends and then keeps it for the next pass of the same shapes, so a part's cost
 * is the bytes its whole pass allocates (its footprint), charged once per arena the schedule keeps in flight. Galvatron (Miao et al. 2022) and Alpa price layouts from such per-layer profiles.
 *
 * @param ranks          ranks that ran at once, each with {@code threadsPerRank} kernel threads
 * @param threadsPerRank kernel threads per rank
 * @param microBatch     sequences per micro-batch
 * @param seq            tokens per sequence
 * @param embedding      the embedding part
 * @param block          one block, by recompute policy
 * @param head           the final layers, tied head and loss
 * @param optimizerSecondsPerParameter AdamW's update time per parameter a rank updates
 * @param allReduceSecondsPerByte      ring all-reduce over all {@code ranks}, per byte reduced (0 for one rank)
 * @param collectiveLatencySeconds     one small collective over all ranks
 * @param sendSecondsPerByte           one point-to-point message, per byte
 */
public record LocalProfile(int ranks, int threadsPerRank, int microBatch, int seq, Part embedding, Map<Recompute, Part> block,
                           Part head, double optimizerSecondsPerParameter, double allReduceSecondsPerByte,
                           double collectiveLatencySeconds, double sendSecondsPerByte) {

    /**
     * One part's cost for one micro-batch.
     *
     * @param forwardSeconds        forward
     * @param backwardSeconds       the whole backward (recompute included)
     * @param backwardInputSeconds  ZB-H1's B: the input gradient alone (the whole backward where B and W do not split)
     * @param backwardWeightSeconds ZB-H1's W: the deferred weight gradients (0 where they do not split)
     * @param passBytes             activation bytes a forward and whole backward allocate in a fresh arena
     * @param splitPassBytes        the same for a forward, B and W (ZB-H1); {@code passBytes} where they do not split
     * @param scratchBytes          how far above {@code passBytes} the pass peaked: scratch its layers freed before it ended
     */
    public record Part(double forwardSeconds, double backwardSeconds, double backwardInputSeconds, double backwardWeightSeconds,
                       long passBytes, long splitPassBytes, long scratchBytes) {
        /** Each figure the larger of this part's and {@code other}'s. */
        public Part max(Part other) {
            return new Part(Math.max(forwardSeconds, other.forwardSeconds), Math.max(backwardSeconds, other.backwardSeconds),
                    Math.max(backwardInputSeconds, other.backwardInputSeconds), Math.max(backwardWeightSeconds, other.backwardWeightSeconds),
                    Math.max(passBytes, other.passBytes), Math.max(splitPassBytes, other.splitPassBytes),
                    Math.max(scratchBytes, other.scratchBytes));
        }
    }
}
