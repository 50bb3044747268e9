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

import java.util.Arrays;
import java.util.List;

/**
 * Checks a {@link PipelineSchedule} before its first step, so that a wrong list fails with a message instead of
 * hanging or training on the wrong data. Callable from any thread; pure (it simulates, it never blocks).
 *
 * <p>First each stage's list on its own: every micro-batch runs forward, then backward (BackwardInput before
 * BackwardWeight), through each chunk exactly once; a non-first part receives its activation before its forward,
 * a non-last part receives its output gradient before its backward; sends come after the compute that produces
 * them and go to the stage the chunk convention names; the list ends with ReduceGradients then OptimizerStep.
 * Then all stages together with the executor's semantics (sends never block, a receive blocks until its send
 * has run): every receive is matched by a send and the other way round, and no receives wait on each other in a
 * cycle.
 */
public final class ScheduleValidator {
    private ScheduleValidator() { }

    /**
     * Returns normally when every stage's list is runnable and complete.
     *
     * @throws IllegalArgumentException naming the stage, the instruction index, the instruction and its
     *                                  micro-batch, with what is wrong and what to do (for a deadlock, every stage
     *                                  of the cycle)
     */
    public static void validate(PipelineSchedule schedule) {
        for (int stage = 0; stage < schedule.stages(); stage++) new StageCheck(schedule, stage).run();
        try {
            ScheduleSimulation.run(schedule, instruction -> 1.0);
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException(describe(schedule) + ": " + e.getMessage(), e);
        }
    }

    /** How errors name a schedule: {@code 1f1b schedule (p=4, v=1, m=8)}. */
    static String describe(PipelineSchedule schedule) {
        return schedule.kind() + " schedule (p=" + schedule.stages() + ", v=" + schedule.chunks() + ", m="
                + schedule.microBatches() + ")";
    }

    /** How errors name an instruction: {@code stage 1, instruction 4 (Forward[mb=2, chunk=0]), micro-batch 2}. */
    static String where(int stage, int index, Instruction instruction) {
        int mb = microBatch(instruction);
        return "stage " + stage + ", instruction " + index + " (" + instruction + ")" + (mb >= 0 ? ", micro-batch " + mb : "");
    }

    /** The micro-batch an instruction works on, or −1 for ReduceGradients and OptimizerStep. */
    static int microBatch(Instruction instruction) {
        return switch (instruction) {
            case Forward f -> f.mb();
            case Backward b -> b.mb();
            case BackwardInput b -> b.mb();
            case BackwardWeight w -> w.mb();
            case SendActivation s -> s.mb();
            case ReceiveActivation r -> r.mb();
            case SendGradient s -> s.mb();
            case ReceiveGradient r -> r.mb();
            case ReduceGradients r -> -1;
            case OptimizerStep o -> -1;
        };
    }

    /** One stage's list on its own; each table holds, per (mb, chunk), the index of the instruction that did it, or −1. */
    private static final class StageCheck {
        private final PipelineSchedule schedule;
        private final int stage;
        private final int p;
        private final int v;
        private final int m;
        private final List<Instruction> program;
        private final int[][] forward;
        private final int[][] backwardInput;   // Backward or BackwardInput
        private final int[][] backwardWeight;  // Backward or BackwardWeight
        private final boolean[][] split;       // backward ran as BackwardInput
        private final int[][] activationIn;
        private final int[][] gradientIn;
        private final int[][] activationOut;
        private final int[][] gradientOut;
        private int reduce = -1;
        private int optimizer = -1;

        StageCheck(PipelineSchedule schedule, int stage) {
            this.schedule = schedule;
            this.stage = stage;
            this.p = schedule.stages();
            this.v = schedule.chunks();
            this.m = schedule.microBatches();
            this.program = schedule.program(stage);
            this.forward = table();
            this.backwardInput = table();
            this.backwardWeight = table();
            this.split = new boolean[m][v];
            this.activationIn = table();
            this.gradientIn = table();
            this.activationOut = table();
            this.gradientOut = table();
        }

        private int[][] table() {
            int[][] t = new int[m][v];
            for (int[] row : t) Arrays.fill(row, -1);
            return t;
        }

        void run() {
            if (program.isEmpty()) {
                throw new IllegalArgumentException("stage " + stage + ": the instruction list is empty; it must run every micro-batch"
                        + " forward and backward and end with ReduceGradients, OptimizerStep");
            }
            for (int i = 0; i < program.size(); i++) check(i, program.get(i));
            int last = program.size() - 1;
            if (reduce < 0 || optimizer < 0) {
                throw fail(last, program.get(last), "the list ends without " + (reduce < 0 ? "ReduceGradients" : "OptimizerStep")
                        + "; end every stage's list with ReduceGradients, OptimizerStep");
            }
        }

        private void check(int i, Instruction instruction) {
            if (optimizer >= 0) throw fail(i, instruction, "comes after OptimizerStep (instruction " + optimizer + "), which ends the step");
            if (reduce >= 0 && !(instruction instanceof OptimizerStep)) {
                throw fail(i, instruction, "comes after ReduceGradients (instruction " + reduce + "); only OptimizerStep may follow it");
            }
            switch (instruction) {
                case Forward f -> {
                    inRange(i, f, f.mb(), f.chunk());
                    once(i, f, forward[f.mb()][f.chunk()], "Forward");
                    if (!Parts.isFirst(stage, f.chunk()) && activationIn[f.mb()][f.chunk()] < 0) {
                        throw fail(i, f, "forward of part " + Parts.part(p, stage, f.chunk()) + " reads the activation of stage "
                                + Parts.previousStage(p, stage) + ", but no ReceiveActivation of (mb " + f.mb() + ", chunk "
                                + f.chunk() + ") comes before it; receive it before the forward");
                    }
                    forward[f.mb()][f.chunk()] = i;
                }
                case Backward b -> {
                    backwardInput(i, b, b.mb(), b.chunk());
                    backwardWeight[b.mb()][b.chunk()] = i;
                }
                case BackwardInput b -> {
                    backwardInput(i, b, b.mb(), b.chunk());
                    split[b.mb()][b.chunk()] = true;
                }
                case BackwardWeight w -> {
                    inRange(i, w, w.mb(), w.chunk());
                    once(i, w, backwardWeight[w.mb()][w.chunk()], "weight-gradient backward");
                    if (backwardInput[w.mb()][w.chunk()] < 0) {
                        throw fail(i, w, "BackwardWeight before BackwardInput of (mb " + w.mb() + ", chunk " + w.chunk()
                                + "); run BackwardInput first");
                    }
                    backwardWeight[w.mb()][w.chunk()] = i;
                }
                case SendActivation s -> {
                    inRange(i, s, s.mb(), s.chunk());
                    if (Parts.isLast(p, v, stage, s.chunk())) throw fail(i, s, "the last part sends no activation; its output goes to the loss");
                    peer(i, s, s.peerStage(), Parts.nextStage(p, stage), "the next part");
                    once(i, s, activationOut[s.mb()][s.chunk()], "SendActivation");
                    if (forward[s.mb()][s.chunk()] < 0) throw fail(i, s, "sends the activation before the Forward that computes it");
                    activationOut[s.mb()][s.chunk()] = i;
                }
                case ReceiveActivation r -> {
                    inRange(i, r, r.mb(), r.chunk());
                    if (Parts.isFirst(stage, r.chunk())) throw fail(i, r, "part 0 reads the batch; it receives no activation");
                    peer(i, r, r.peerStage(), Parts.previousStage(p, stage), "the previous part");
                    once(i, r, activationIn[r.mb()][r.chunk()], "ReceiveActivation");
                    activationIn[r.mb()][r.chunk()] = i;
                }
                case SendGradient s -> {
                    inRange(i, s, s.mb(), s.chunk());
                    if (Parts.isFirst(stage, s.chunk())) throw fail(i, s, "part 0 sends no gradient; nothing comes before it");
                    peer(i, s, s.peerStage(), Parts.previousStage(p, stage), "the previous part");
                    once(i, s, gradientOut[s.mb()][s.chunk()], "SendGradient");
                    if (backwardInput[s.mb()][s.chunk()] < 0) throw fail(i, s, "sends the input gradient before the backward that computes it");
                    gradientOut[s.mb()][s.chunk()] = i;
                }
                case ReceiveGradient r -> {
                    inRange(i, r, r.mb(), r.chunk());
                    if (Parts.isLast(p, v, stage, r.chunk())) throw fail(i, r, "the last part's output gradient comes from the loss; it receives none");
                    peer(i, r, r.peerStage(), Parts.nextStage(p, stage), "the next part");
                    once(i, r, gradientIn[r.mb()][r.chunk()], "ReceiveGradient");
                    gradientIn[r.mb()][r.chunk()] = i;
                }
                case ReduceGradients r -> {
                    complete(i, r);
                    reduce = i;
                }
                case OptimizerStep o -> {
                    if (reduce < 0) throw fail(i, o, "OptimizerStep before ReduceGradients; reduce the gradients first");
                    optimizer = i;
                }
            }
        }

        private void backwardInput(int i, Instruction b, int mb, int chunk) {
            inRange(i, b, mb, chunk);
            once(i, b, backwardInput[mb][chunk], "backward");
            if (forward[mb][chunk] < 0) throw fail(i, b, "backward before forward of (mb " + mb + ", chunk " + chunk + "); run Forward first");
            if (!Parts.isLast(p, v, stage, chunk) && gradientIn[mb][chunk] < 0) {
                throw fail(i, b, "backward of part " + Parts.part(p, stage, chunk) + " reads the output gradient of stage "
                        + Parts.nextStage(p, stage) + ", but no ReceiveGradient of (mb " + mb + ", chunk " + chunk
                        + ") comes before it; receive it before the backward");
            }
            backwardInput[mb][chunk] = i;
        }

        /** At ReduceGradients: every (mb, chunk) has run forward and all of backward, and sent what it owes. */
        private void complete(int i, Instruction reduceGradients) {
            for (int mb = 0; mb < m; mb++) {
                for (int chunk = 0; chunk < v; chunk++) {
                    String what = null;
                    String skipped = " (a micro-batch skipped); every micro-batch runs forward and backward through every chunk once";
                    if (forward[mb][chunk] < 0) what = "never ran Forward" + skipped;
                    else if (backwardInput[mb][chunk] < 0) what = "never ran backward" + skipped;
                    else if (backwardWeight[mb][chunk] < 0) what = "ran BackwardInput but never BackwardWeight; run it before ReduceGradients";
                    else if (!Parts.isLast(p, v, stage, chunk) && activationOut[mb][chunk] < 0) {
                        what = "never sent its activation to stage " + Parts.nextStage(p, stage) + "; add SendActivation after its Forward";
                    } else if (!Parts.isFirst(stage, chunk) && gradientOut[mb][chunk] < 0) {
                        what = "never sent its input gradient to stage " + Parts.previousStage(p, stage) + "; add SendGradient after its backward";
                    }
                    if (what != null) throw fail(i, reduceGradients, "micro-batch " + mb + " on chunk " + chunk + " " + what);
                }
            }
        }

        private void once(int i, Instruction instruction, int earlier, String what) {
            if (earlier >= 0) {
                throw fail(i, instruction, "runs " + what + " of this (micro-batch, chunk) a second time (first at instruction "
                        + earlier + "); each runs exactly once per step");
            }
        }

        private void peer(int i, Instruction instruction, int peer, int expected, String whose) {
            if (peer != expected) {
                throw fail(i, instruction, "talks to stage " + peer + ", but " + whose + " of this chunk lives on stage "
                        + expected + " (chunk c of stage s is part c·p + s, p=" + p + ")");
            }
        }

        private void inRange(int i, Instruction instruction, int mb, int chunk) {
            if (mb < 0 || mb >= m) throw fail(i, instruction, "micro-batch " + mb + " is outside [0, m=" + m + ")");
            if (chunk < 0 || chunk >= v) throw fail(i, instruction, "chunk " + chunk + " is outside [0, v=" + v + ")");
        }

        private IllegalArgumentException fail(int i, Instruction instruction, String what) {
            return new IllegalArgumentException(describe(schedule) + ": " + where(stage, i, instruction) + ": " + what);
        }
    }
}
