package dev.shardwise.parallel.pipeline;

import dev.shardwise.parallel.pipeline.Instruction.Backward;
import dev.shardwise.parallel.pipeline.Instruction.BackwardInput;
import dev.shardwise.parallel.pipeline.Instruction.BackwardWeight;
import dev.shardwise.parallel.pipeline.Instruction.Forward;
import dev.shardwise.parallel.pipeline.Instruction.OptimizerStep;
import dev.shardwise.parallel.pipeline.Instruction.ReceiveActivation;
import dev.shardwise.parallel.pipeline.Instruction.ReceiveGradient;
import dev.shardwise.parallel.pipeline.Instruction.ReduceGradients;
import dev.shardwise.parallel.pipeline.Instruction.SendActivation;
import dev.shardwise.parallel.pipeline.Instruction.SendGradient;

import java.util.ArrayList;
import java.util.List;

/**
 * Turns one stage's order of computation into its full program, the same way for every schedule: each receive
 * goes right before the compute that reads it, each send right after the compute that produced it, and
 * ReduceGradients then OptimizerStep close the list. Builders decide only the order of computation.
 *
 * <p>Receiving as late as possible blocks exactly when the data is not there yet, so a stage's time in receives is
 * the bubble the schedule leaves it; sending at once is free because sends never block.
 */
final class StageProgram {
    private StageProgram() { }

    /**
     * The program of {@code stage} that computes {@code computeOrder} (Forward, Backward, BackwardInput and
     * BackwardWeight only) with the transfers of the chunk convention ({@link Parts}).
     */
    static List<Instruction> of(int p, int v, int stage, List<Instruction> computeOrder) {
        List<Instruction> program = new ArrayList<>(computeOrder.size() * 3 + 2);
        int previous = Parts.previousStage(p, stage);
        int next = Parts.nextStage(p, stage);
        for (Instruction compute : computeOrder) {
            switch (compute) {
                case Forward f -> {
                    if (!Parts.isFirst(stage, f.chunk())) program.add(new ReceiveActivation(f.mb(), f.chunk(), previous));
                    program.add(f);
                    if (!Parts.isLast(p, v, stage, f.chunk())) program.add(new SendActivation(f.mb(), f.chunk(), next));
                }
                case Backward b -> backward(program, p, v, stage, b, b.mb(), b.chunk());
                case BackwardInput b -> backward(program, p, v, stage, b, b.mb(), b.chunk());
                case BackwardWeight w -> program.add(w);
                case SendActivation s -> throw notCompute(s);
                case ReceiveActivation r -> throw notCompute(r);
                case SendGradient s -> throw notCompute(s);
                case ReceiveGradient r -> throw notCompute(r);
                case ReduceGradients r -> throw notCompute(r);
                case OptimizerStep o -> throw notCompute(o);
            }
        }
        program.add(new ReduceGradients());
        program.add(new OptimizerStep());
        return program;
    }

    private static void backward(List<Instruction> program, int p, int v, int stage, Instruction b, int mb, int chunk) {
        if (!Parts.isLast(p, v, stage, chunk)) program.add(new ReceiveGradient(mb, chunk, Parts.nextStage(p, stage)));
        program.add(b);
        if (!Parts.isFirst(stage, chunk)) program.add(new SendGradient(mb, chunk, Parts.previousStage(p, stage)));
    }

    private static IllegalArgumentException notCompute(Instruction i) {
        return new IllegalArgumentException("a compute order holds Forward, Backward, BackwardInput and BackwardWeight only, got " + i);
    }
}
