package dev.shardwise.plan.local;

import dev.shardwise.model.ModelConfig;
import dev.shardwise.model.Recompute;
import dev.shardwise.parallel.ParallelLayout;

import java.util.ArrayList;
import java.util.EnumMap;
import java.util.List;
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
 * <p>Under tensor parallelism (Shoeybi et al. 2019) the pieces are profiled split: the ranks run as tp groups, each
 * rank its slice of every piece with the group's collectives inside the timed passes, so a tensor-parallel piece's
 * seconds include its all-reduces (or sequence parallelism's all-gathers and reduce-scatters) as the runtime runs them.
 * Under expert parallelism (GShard) the ranks also form ep groups and each MoE block runs its E/ep experts with the
 * dispatch and combine all-to-alls inside its timed passes.
 *
 * @param ranks          ranks that ran at once, each with {@code threadsPerRank} kernel threads
 * @param threadsPerRank kernel threads per rank
 * @param microBatch     sequences per micro-batch
 * @param seq            tokens per sequence
 * @param pieces         the embedding, block and head, by tensor-parallel split profiled (tp 1 always)
 * @param optimizerSecondsPerParameter AdamW's update time per parameter a rank updates, from cold caches
 * @param gradientSecondsPerElement    zeroing a gradient before the step's first micro-batch and reading it for the
 *                                     clipping norm, per gradient element a rank holds, from cold caches
 * @param allReduceSecondsPerByte      ring all-reduce over all {@code ranks}, per byte reduced (0 for one rank)
 * @param allGatherSecondsPerByte      ZeRO 3's gather of a unit over all ranks into a reused unit buffer, per byte of
 *                                     the whole unit (0 for one rank)
 * @param reduceScatterSecondsPerByte  ZeRO 2's and 3's reduce-scatter of a unit's gradients from a reused buffer, zeroed
 *                                     and then written, per byte of the whole unit (0 for one rank)
 * @param collectiveLatencySeconds     one small collective over all ranks
 * @param sendSecondsPerByte           one point-to-point message, per byte
 */
public record LocalProfile(int ranks, int threadsPerRank, int microBatch, int seq, Map<Split, Pieces> pieces,
                           double optimizerSecondsPerParameter, double gradientSecondsPerElement, double allReduceSecondsPerByte,
                           double allGatherSecondsPerByte, double reduceScatterSecondsPerByte, double collectiveLatencySeconds, double sendSecondsPerByte) {

    /** @throws IllegalArgumentException if the pieces lack tp 1 */
    public LocalProfile {
        pieces = Map.copyOf(pieces);
        if (!pieces.containsKey(Split.NONE)) throw new IllegalArgumentException("a profile needs the unsplit pieces (tp=1)");
    }

    /**
     * The pieces as {@code layout} splits them.
     *
     * @throws IllegalArgumentException naming the splits profiled, if this one was not
     */
    public Pieces pieces(ParallelLayout layout) {
        Split split = Split.of(layout);
        Pieces p = pieces.get(split);
        if (p == null) {
            throw new IllegalArgumentException("this profile has no pieces for " + split + " (it has " + pieces.keySet().stream().sorted()
                    .map(Split::toString).toList() + "); profile the layout's split too");
        }
        return p;
    }

    /**
     * How tensor and expert parallelism split the pieces.
     *
     * @param tp               ranks in a tensor-parallel group
     * @param sequenceParallel whether the replicated regions are split along the sequence too
     * @param ep               ranks in an expert-parallel group (each holds E/ep experts of every MoE block; 1 for a dense model)
     */
    public record Split(int tp, boolean sequenceParallel, int ep) implements Comparable<Split> {
        /** One rank holds every piece whole. */
        public static final Split NONE = new Split(1, false, 1);

        /** @throws IllegalArgumentException if tp or ep is below 1, or sequence parallelism is asked for at tp 1 */
        public Split {
            if (tp < 1 || ep < 1 || (tp == 1 && sequenceParallel)) {
                throw new IllegalArgumentException("split tp=" + tp + ", sp=" + sequenceParallel + ", ep=" + ep + ": tp and ep must be "
                        + "positive and sequence parallelism needs tp > 1");
            }
        }

        /** The tensor-parallel split {@code tp}, {@code sequenceParallel} of a dense model (ep 1). */
        public Split(int tp, boolean sequenceParallel) {
            this(tp, sequenceParallel, 1);
        }

        /** The split of {@code layout}. */
        public static Split of(ParallelLayout layout) {
            return new Split(layout.tp(), layout.sequenceParallel(), layout.ep());
        }

        /**
         * Every split of {@code config} over groups of {@code ranks} at sequence length {@code seq}: tp dividing the
         * ranks, the heads and the MLP's hidden size, and dividing or a multiple of the kv heads; with and without
         * sequence parallelism where tp divides seq; for a mixture of experts also each ep > 1 dividing ranks/tp and
         * the experts, with and without sequence parallelism alike.
         */
        public static List<Split> possible(ModelConfig config, int ranks, int seq) {
            List<Split> splits = new ArrayList<>();
            for (int tp = 1; tp <= ranks; tp++) {
                if (ranks % tp != 0 || config.heads() % tp != 0 || config.ffnHidden() % tp != 0) continue;
                if (config.kvHeads() % tp != 0 && tp % config.kvHeads() != 0) continue;
                for (boolean sp : tp > 1 && seq % tp == 0 ? List.of(false, true) : List.of(false)) {
                    splits.add(new Split(tp, sp));
                    for (int ep = 2; config.moe() != null && ep <= ranks / tp; ep++) {
                        if (ranks / tp % ep == 0 && config.moe().experts() % ep == 0) splits.add(new Split(tp, sp, ep));
                    }
                }
            }
            return splits;
        }

        @Override
        public int compareTo(Split o) {
            if (tp != o.tp) return Integer.compare(tp, o.tp);
            return sequenceParallel != o.sequenceParallel ? Boolean.compare(sequenceParallel, o.sequenceParallel) : Integer.compare(ep, o.ep);
        }

        @Override
        public String toString() {
            return "tp=" + tp + (sequenceParallel ? ",sp=true" : "") + (ep > 1 ? ",ep=" + ep : "");
        }
    }

    /**
     * One tensor- and expert-parallel rank's pieces (a whole model's at tp 1 and ep 1), per micro-batch.
     *
     * @param embedding the embedding part
     * @param block     one block, by recompute policy
     * @param head      the final layers, tied head and loss
     */
    public record Pieces(Part embedding, Map<Recompute, Part> block, Part head) {
        public Pieces {
            block = Map.copyOf(block);
        }

        /** The ranks' pieces as one, each part by {@link Part#acrossRanks}. */
        static Pieces acrossRanks(List<Pieces> ranks) {
            Map<Recompute, Part> blocks = new EnumMap<>(Recompute.class);
            for (Recompute policy : Recompute.values()) blocks.put(policy, Part.acrossRanks(ranks.stream().map(p -> p.block.get(policy)).toList()));
            return new Pieces(Part.acrossRanks(ranks.stream().map(Pieces::embedding).toList()), blocks,
                    Part.acrossRanks(ranks.stream().map(Pieces::head).toList()));
        }
    }

    /**
     * One part's cost for one micro-batch.
     *
     * @param forwardSeconds        forward
     * @param backwardSeconds       the whole backward (recompute included)
     * @param backwardInputSeconds  ZB-H1's B: the input gradient alone (the whole backward where B and W do not split)
     * @param backwardWeightSeconds ZB-H1's W: the deferred weight gradients (0 where they do not split)
     * @param passBytes             activation bytes a forward and whole backward allocate in a fresh arena (for a block: what
     *                              each further block adds)
     * @param splitPassBytes        the same for a forward, B and W (ZB-H1); {@code passBytes} where they do not split
     * @param scratchBytes          how far above {@code passBytes} the pass peaked: scratch its layers freed before it ended
     * @param sharedPassBytes       bytes a pass of any number of blocks holds once on top of {@code passBytes} per block: the
     *                              arena's stack that each block's backward temporaries rewind (0 for the embedding and head)
     * @param sharedSplitPassBytes  the same for a split pass
     */
    public record Part(double forwardSeconds, double backwardSeconds, double backwardInputSeconds, double backwardWeightSeconds,
                       long passBytes, long splitPassBytes, long scratchBytes, long sharedPassBytes, long sharedSplitPassBytes) {
        /** Each figure the larger of this part's and {@code other}'s. */
        public Part max(Part other) {
            return new Part(Math.max(forwardSeconds, other.forwardSeconds), Math.max(backwardSeconds, other.backwardSeconds),
                    Math.max(backwardInputSeconds, other.backwardInputSeconds), Math.max(backwardWeightSeconds, other.backwardWeightSeconds),
                    Math.max(passBytes, other.passBytes), Math.max(splitPassBytes, other.splitPassBytes),
                    Math.max(scratchBytes, other.scratchBytes), Math.max(sharedPassBytes, other.sharedPassBytes),
                    Math.max(sharedSplitPassBytes, other.sharedSplitPassBytes));
        }

        /**
         * The ranks' measurements of one part as one: each time the slowest rank's (it sets a synchronous step's pace);
         * the bytes each block of a pass adds the mean over the ranks, the high-water figures (the scratch, the stack a
         * pass holds once) the largest. The bytes are the same on every rank except under expert parallelism, where they
         * follow the rows the routing sent each rank: every assignment lands on one rank of the group, so over a pass's
         * blocks a rank's rows add up toward the balanced share, the ranks' mean (the largest would be one random
         * routing's worst rank: on moe-tiny at micro-batch 4 the two ranks' per-block bytes differed by 19%, and the
         * larger over-predicted training's peak by 7%), while the stack that each block's backward rewinds keeps the
         * largest block's temporaries, and an arena keeps its high-water mark over the run.
         *
         * @throws IllegalArgumentException if {@code ranks} is empty
         */
        static Part acrossRanks(List<Part> ranks) {
            if (ranks.isEmpty()) throw new IllegalArgumentException("no ranks' measurements to combine");
            Part largest = ranks.getFirst();
            for (Part p : ranks) largest = largest.max(p);
            int n = ranks.size();
            return new Part(largest.forwardSeconds, largest.backwardSeconds, largest.backwardInputSeconds, largest.backwardWeightSeconds,
                    ranks.stream().mapToLong(Part::passBytes).sum() / n, ranks.stream().mapToLong(Part::splitPassBytes).sum() / n,
                    largest.scratchBytes, largest.sharedPassBytes, largest.sharedSplitPassBytes);
        }

        /** The activation bytes a pass of {@code blocks} such blocks (or of this embedding or head: 1) holds, split or whole. */
        public long bytesOf(int blocks, boolean split) {
            if (blocks == 0) return 0;
            return split ? blocks * splitPassBytes + sharedSplitPassBytes : blocks * passBytes + sharedPassBytes;
        }
    }
}
