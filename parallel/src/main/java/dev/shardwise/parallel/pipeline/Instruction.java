package dev.shardwise.parallel.pipeline;

/**
 * One step of a pipeline stage's program (ARCHITECTURE.md idea 3: schedules are data). A schedule is a list of
 * instructions per stage; the executor runs it, the planner simulates it, the timeline prints it. Consumers switch
 * over it exhaustively, with no default, so a new instruction breaks every consumer at compile time.
 *
 * <p>Indices: {@code mb} in [0, m) is the micro-batch; {@code chunk} in [0, v) is the model chunk on this stage
 * (virtual pipeline); chunk c of stage s is model part c·p + s, so part k's successor lives on stage (s + 1) mod p,
 * as chunk c + 1 when s = p − 1. {@code peerStage} is the other end of a transfer.
 *
 * <p>Sends never block (both communication backends copy and send eagerly); a receive blocks until its message
 * has arrived. Every (mb, chunk) names the instruction's own stage's chunk: a send names the part that produced the
 * data, its receive the part that reads it (chunk c + 1 after stage p − 1 for activations, c − 1 before stage 0 for
 * gradients). They match on (kind, mb, receiving chunk), which is also the message tag
 * {@code 2·(mb·v + receiving chunk) + (0 activation, 1 gradient)}.
 */
public sealed interface Instruction {

    /** Runs forward of chunk {@code chunk} for micro-batch {@code mb}; its input is the batch or a received activation. */
    record Forward(int mb, int chunk) implements Instruction { }

    /** Runs the whole backward of (mb, chunk): input gradient and weight gradients. */
    record Backward(int mb, int chunk) implements Instruction { }

    /** The input-gradient half of backward (ZB-H1's B): d input, keeping what the weight half needs. */
    record BackwardInput(int mb, int chunk) implements Instruction { }

    /** The weight-gradient half of backward (ZB-H1's W): accumulates the parameter gradients of (mb, chunk). */
    record BackwardWeight(int mb, int chunk) implements Instruction { }

    /** Sends the forward output of (mb, chunk) to {@code peerStage}, where it is the next part's input. */
    record SendActivation(int mb, int chunk, int peerStage) implements Instruction { }

    /** Receives the input of (mb, chunk) from {@code peerStage} (the previous part's output). */
    record ReceiveActivation(int mb, int chunk, int peerStage) implements Instruction { }

    /** Sends the input gradient of (mb, chunk) to {@code peerStage}, where it is the previous part's output gradient. */
    record SendGradient(int mb, int chunk, int peerStage) implements Instruction { }

    /** Receives the output gradient of (mb, chunk) from {@code peerStage}. */
    record ReceiveGradient(int mb, int chunk, int peerStage) implements Instruction { }

    /** Reduces the step's gradients over the data-parallel group (and sums tied embeddings over stages). */
    record ReduceGradients() implements Instruction { }

    /** Clips and applies the optimizer. */
    record OptimizerStep() implements Instruction { }
}
