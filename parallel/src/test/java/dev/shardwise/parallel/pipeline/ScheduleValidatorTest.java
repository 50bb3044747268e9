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
import org.junit.jupiter.api.Test;

import java.util.ArrayList;
import java.util.List;
import java.util.function.Consumer;

import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** Broken lists, each refused with a message that names the stage, the instruction (index and record) and the micro-batch. */
class ScheduleValidatorTest {

    /** The 1F1B schedule of (p, m) with {@code edit} applied to the lists, one mutable list per stage. */
    private static PipelineSchedule edited(ScheduleKind kind, int p, int m, Consumer<List<List<Instruction>>> edit) {
        PipelineSchedule built = PipelineSchedule.build(kind, p, 1, m);
        List<List<Instruction>> lists = new ArrayList<>();
        for (List<Instruction> program : built.programs()) lists.add(new ArrayList<>(program));
        edit.accept(lists);
        return new PipelineSchedule(kind, p, 1, m, lists);
    }

    /** Asserts refusal and that the message names stage, index, instruction and micro-batch as {@code where} writes them. */
    private static String assertRefused(PipelineSchedule s, int stage, Instruction instruction, String... more) {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> ScheduleValidator.validate(s));
        String message = e.getMessage();
        int index = s.program(stage).indexOf(instruction);
        assertTrue(index >= 0, instruction + " is not on stage " + stage);
        assertTrue(message.contains(ScheduleValidator.where(stage, index, instruction)),
                "expected '" + ScheduleValidator.where(stage, index, instruction) + "' in: " + message);
        int mb = ScheduleValidator.microBatch(instruction);
        if (mb >= 0) assertTrue(message.contains("micro-batch " + mb), message);
        for (String fragment : more) assertTrue(message.contains(fragment), "expected '" + fragment + "' in: " + message);
        return message;
    }

    @Test
    void refusesAForwardWhoseActivationIsNeverReceived() {
        PipelineSchedule s = edited(ScheduleKind.ONE_F_ONE_B, 2, 4, l -> l.get(1).remove(new ReceiveActivation(2, 0, 0)));
        assertRefused(s, 1, new Forward(2, 0), "no ReceiveActivation", "receive it before the forward");
    }

    @Test
    void refusesTwoStagesEachWaitingToReceiveFromTheOtherFirstAndReportsTheCycle() {
        // Stage 0 waits for micro-batch 0's gradient before it sends micro-batch 0's activation.
        PipelineSchedule s = edited(ScheduleKind.ONE_F_ONE_B, 2, 1, l -> {
            List<Instruction> stage0 = l.get(0);
            stage0.remove(new ReceiveGradient(0, 0, 1));
            stage0.add(stage0.indexOf(new SendActivation(0, 0, 1)), new ReceiveGradient(0, 0, 1));
        });
        String message = assertRefused(s, 0, new ReceiveGradient(0, 0, 1), "deadlock", "waits for stage 1");
        int index = s.program(1).indexOf(new ReceiveActivation(0, 0, 0));
        assertTrue(message.contains(ScheduleValidator.where(1, index, new ReceiveActivation(0, 0, 0)) + " waits for stage 0"), message);
    }

    @Test
    void refusesADeadlockBehindAWaitingStageNamingOnlyTheCycle() {
        // Stage 1 waits for micro-batch 0's gradient before it sends micro-batch 0's activation: stages 1 and 2 wait
        // on each other; stage 0, waiting on stage 1, is not part of the cycle.
        PipelineSchedule s = edited(ScheduleKind.GPIPE, 3, 2, l -> {
            List<Instruction> stage1 = l.get(1);
            stage1.remove(new ReceiveGradient(0, 0, 2));
            stage1.add(stage1.indexOf(new SendActivation(0, 0, 2)), new ReceiveGradient(0, 0, 2));
        });
        String message = assertRefused(s, 1, new ReceiveGradient(0, 0, 2), "deadlock");
        assertTrue(!message.contains("stage 0, instruction"), message);
        assertTrue(message.contains("stage 2, instruction 0 (ReceiveActivation[mb=0, chunk=0, peerStage=1]), micro-batch 0 waits for stage 1"), message);
    }

    @Test
    void refusesASkippedMicroBatch() {
        PipelineSchedule s = edited(ScheduleKind.ONE_F_ONE_B, 2, 4,
                l -> l.get(1).removeIf(i -> ScheduleValidator.microBatch(i) == 3));
        assertRefused(s, 1, new ReduceGradients(), "micro-batch 3 on chunk 0 never ran Forward", "skipped");
    }

    @Test
    void refusesAMicroBatchRunTwiceThroughAChunk() {
        PipelineSchedule s = edited(ScheduleKind.ONE_F_ONE_B, 1, 3, l -> l.get(0).add(4, new Forward(1, 0)));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> ScheduleValidator.validate(s));
        assertTrue(e.getMessage().contains("stage 0, instruction 4 (Forward[mb=1, chunk=0]), micro-batch 1")
                && e.getMessage().contains("a second time (first at instruction 2)"), e.getMessage());
    }

    @Test
    void refusesBackwardBeforeForward() {
        PipelineSchedule s = edited(ScheduleKind.ONE_F_ONE_B, 1, 2, l -> {
            l.get(0).remove(new Backward(1, 0));
            l.get(0).addFirst(new Backward(1, 0));
        });
        assertRefused(s, 0, new Backward(1, 0), "backward before forward");
    }

    @Test
    void refusesAGradientReceivedAfterTheBackwardThatNeedsIt() {
        PipelineSchedule s = edited(ScheduleKind.ONE_F_ONE_B, 2, 2, l -> {
            List<Instruction> stage0 = l.get(0);
            stage0.remove(new ReceiveGradient(1, 0, 1));
            stage0.add(stage0.indexOf(new Backward(1, 0)) + 1, new ReceiveGradient(1, 0, 1));
        });
        assertRefused(s, 0, new Backward(1, 0), "no ReceiveGradient");
    }

    @Test
    void refusesAMissingSendNamingTheSenderAndMicroBatch() {
        PipelineSchedule s = edited(ScheduleKind.ONE_F_ONE_B, 2, 4, l -> l.get(0).remove(new SendActivation(1, 0, 1)));
        assertRefused(s, 0, new ReduceGradients(), "micro-batch 1 on chunk 0 never sent its activation to stage 1");
    }

    @Test
    void refusesASendBeforeTheComputeThatProducesIt() {
        PipelineSchedule s = edited(ScheduleKind.ONE_F_ONE_B, 2, 2, l -> {
            List<Instruction> stage1 = l.get(1);
            stage1.remove(new SendGradient(0, 0, 0));
            stage1.add(stage1.indexOf(new Backward(0, 0)), new SendGradient(0, 0, 0));
        });
        assertRefused(s, 1, new SendGradient(0, 0, 0), "before the backward that computes it");
    }

    @Test
    void refusesASendToTheWrongStage() {
        PipelineSchedule s = edited(ScheduleKind.GPIPE, 3, 2,
                l -> l.get(0).set(l.get(0).indexOf(new SendActivation(1, 0, 1)), new SendActivation(1, 0, 2)));
        assertRefused(s, 0, new SendActivation(1, 0, 2), "talks to stage 2", "lives on stage 1");
    }

    @Test
    void refusesAnActivationReceiveOnPartZero() {
        PipelineSchedule s = edited(ScheduleKind.ONE_F_ONE_B, 2, 2, l -> l.get(0).addFirst(new ReceiveActivation(0, 0, 1)));
        assertRefused(s, 0, new ReceiveActivation(0, 0, 1), "part 0 reads the batch");
    }

    @Test
    void refusesBackwardWeightBeforeBackwardInput() {
        PipelineSchedule s = edited(ScheduleKind.ZB_H1, 1, 2, l -> {
            l.get(0).remove(new BackwardWeight(0, 0));
            l.get(0).add(l.get(0).indexOf(new BackwardInput(0, 0)), new BackwardWeight(0, 0));
        });
        assertRefused(s, 0, new BackwardWeight(0, 0), "BackwardWeight before BackwardInput");
    }

    @Test
    void refusesAMissingBackwardWeight() {
        PipelineSchedule s = edited(ScheduleKind.ZB_H1, 2, 2, l -> l.get(1).remove(new BackwardWeight(1, 0)));
        assertRefused(s, 1, new ReduceGradients(), "micro-batch 1 on chunk 0 ran BackwardInput but never BackwardWeight");
    }

    @Test
    void refusesAListWithoutReduceGradientsOrOptimizerStep() {
        PipelineSchedule noReduce = edited(ScheduleKind.ONE_F_ONE_B, 2, 2, l -> l.get(1).remove(new ReduceGradients()));
        assertRefused(noReduce, 1, new OptimizerStep(), "OptimizerStep before ReduceGradients");
        PipelineSchedule noOptimizer = edited(ScheduleKind.ONE_F_ONE_B, 2, 2, l -> l.get(0).remove(new OptimizerStep()));
        assertRefused(noOptimizer, 0, new ReduceGradients(), "ends without OptimizerStep");
    }

    @Test
    void refusesComputeAfterReduceGradients() {
        PipelineSchedule s = edited(ScheduleKind.ONE_F_ONE_B, 1, 2, l -> {
            l.get(0).remove(new Backward(1, 0));
            l.get(0).add(l.get(0).indexOf(new ReduceGradients()) + 1, new Backward(1, 0));
        });
        assertRefused(s, 0, new ReduceGradients(), "micro-batch 1 on chunk 0 never ran backward");
    }

    @Test
    void refusesAMicroBatchOutsideTheStep() {
        PipelineSchedule s = edited(ScheduleKind.ONE_F_ONE_B, 1, 2, l -> l.get(0).addFirst(new Forward(5, 0)));
        assertRefused(s, 0, new Forward(5, 0), "micro-batch 5 is outside [0, m=2)");
    }
}
