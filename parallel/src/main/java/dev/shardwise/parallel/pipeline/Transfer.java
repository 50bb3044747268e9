package dev.shardwise.parallel.pipeline;

/**
 * One point-to-point message of a step, as both of its ends see it: what it carries (an activation forward or a
 * gradient backward), for which micro-batch, into which chunk of the receiving stage, from which stage to which.
 * A send and a receive match when their transfers are equal.
 *
 * <p>Its MPI tag is {@code 2·(mb·v + receivingChunk) + kind}: unique per (kind, mb, receiving chunk) within a
 * step, small and non-negative. The (sender, receiver) pair tells apart the rest.
 *
 * @param gradient       false for an activation (part k → k + 1), true for a gradient (part k → k − 1)
 * @param mb             micro-batch, in [0, m)
 * @param receivingChunk chunk of the receiving part on {@code toStage}, in [0, v)
 * @param fromStage      sending stage
 * @param toStage        receiving stage
 */
record Transfer(boolean gradient, int mb, int receivingChunk, int fromStage, int toStage) {

    /**
     * Largest tag the mpi backend lets users send: MPI guarantees tags up to 32767 and
     * {@code MpiCommunicator.MAX_USER_TAG} keeps the top two for itself.
     */
    static final int MAX_TAG = 32765;

    /** The message tag, in [0, 2·m·v); see the class comment. */
    int tag(int v) {
        return 2 * (mb * v + receivingChunk) + (gradient ? 1 : 0);
    }

    /**
     * The transfer {@code instruction} of {@code stage} takes part in, or null for an instruction that sends and
     * receives nothing. Follows the chunk convention of {@link Parts}; for a send whose part has no successor
     * (activation of the last part) or predecessor (gradient of part 0) it still answers, with a chunk outside
     * [0, v), so that the validator can name the mistake.
     */
    static Transfer of(int p, int stage, Instruction instruction) {
        return switch (instruction) {
            case Instruction.SendActivation s ->
                    new Transfer(false, s.mb(), Parts.nextChunk(p, stage, s.chunk()), stage, s.peerStage());
            case Instruction.ReceiveActivation r -> new Transfer(false, r.mb(), r.chunk(), r.peerStage(), stage);
            case Instruction.SendGradient s ->
                    new Transfer(true, s.mb(), Parts.previousChunk(stage, s.chunk()), stage, s.peerStage());
            case Instruction.ReceiveGradient r -> new Transfer(true, r.mb(), r.chunk(), r.peerStage(), stage);
            case Instruction.Forward f -> null;
            case Instruction.Backward b -> null;
            case Instruction.BackwardInput b -> null;
            case Instruction.BackwardWeight w -> null;
            case Instruction.ReduceGradients r -> null;
            case Instruction.OptimizerStep o -> null;
        };
    }

    /** How errors name it, e.g. {@code activation of micro-batch 3 into chunk 1, stage 0 -> stage 1}. */
    String describe() {
        return (gradient ? "gradient" : "activation") + " of micro-batch " + mb + " into chunk " + receivingChunk
                + ", stage " + fromStage + " -> stage " + toStage;
    }
}
