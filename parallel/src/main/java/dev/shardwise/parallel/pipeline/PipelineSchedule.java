package dev.shardwise.parallel.pipeline;

import java.util.List;

/**
 * A pipeline schedule as data (ARCHITECTURE.md idea 3): one instruction list per stage, built once from
 * (kind, p, v, m) by {@link #build}, then run by {@link PipelineExecutor}, checked by {@link ScheduleValidator}
 * and drawn by {@link Timeline}. Schedules are GPipe (Huang et al. 2019), 1F1B (PipeDream-Flush, Narayanan et al.
 * 2021), interleaved 1F1B (Narayanan et al. 2021) and ZB-H1 (Qi et al. 2023).
 *
 * <p>Every list computes each micro-batch forward then backward through each of the stage's chunks exactly once,
 * with the transfers of the chunk convention ({@link Instruction}): a receive right before the compute that reads
 * it, a send right after the compute that produced it (part 0 receives no activation, the last part sends none and
 * starts its backward from the loss); it ends with one ReduceGradients and one OptimizerStep.
 *
 * @param kind         the schedule the lists follow
 * @param stages       p, pipeline stages (ranks of the pipeline group), at least 1
 * @param chunks       v, model chunks per stage (virtual pipeline size), at least 1
 * @param microBatches m, micro-batches per step, at least 1
 * @param programs     the instruction list of each stage, index = stage; copied and unmodifiable
 */
public record PipelineSchedule(ScheduleKind kind, int stages, int chunks, int microBatches, List<List<Instruction>> programs) {

    /**
     * Checks the sizes only; {@link ScheduleValidator} checks the lists.
     *
     * @throws IllegalArgumentException if p, v or m is below 1, the lists are not one per stage, or m·v
     *                                  micro-batch chunks need message tags past what MPI allows
     */
    public PipelineSchedule {
        if (kind == null) throw new IllegalArgumentException("pipeline schedule: kind must be given");
        atLeastOne("stages p", stages);
        atLeastOne("chunks v", chunks);
        atLeastOne("micro-batches m", microBatches);
        if (programs == null || programs.size() != stages) {
            throw new IllegalArgumentException("pipeline schedule: " + (programs == null ? "no" : programs.size())
                    + " instruction lists for p=" + stages + " stages; give one list per stage");
        }
        if (2L * microBatches * chunks - 1 > Transfer.MAX_TAG) {
            throw new IllegalArgumentException("pipeline schedule: m=" + microBatches + " micro-batches x v=" + chunks
                    + " chunks need message tags up to " + (2L * microBatches * chunks - 1) + ", past MPI's user tags [0, "
                    + Transfer.MAX_TAG + "]; use fewer micro-batches per step (larger micro-batches)");
        }
        programs = programs.stream().map(List::copyOf).toList();
    }

    /**
     * Builds the schedule of {@code kind} for p stages, v chunks per stage and m micro-batches: a pure function.
     *
     * @throws IllegalArgumentException if a size is below 1, or the kind cannot run the combination: GPipe, 1F1B
     *                                  and ZB-H1 need v = 1; interleaved with v > 1 needs p >= 2 and m a multiple
     *                                  of p (each message names the values and the fix)
     */
    public static PipelineSchedule build(ScheduleKind kind, int p, int v, int m) {
        atLeastOne("stages p", p);
        atLeastOne("chunks v", v);
        atLeastOne("micro-batches m", m);
        List<List<Instruction>> programs = switch (kind) {
            case GPIPE -> GPipeSchedule.programs(p, oneChunk(kind, v), m);
            case ONE_F_ONE_B -> OneFOneBSchedule.programs(p, oneChunk(kind, v), m);
            case INTERLEAVED -> Interleaved1F1BSchedule.programs(p, v, m);
            case ZB_H1 -> ZbH1Schedule.programs(p, oneChunk(kind, v), m);
        };
        return new PipelineSchedule(kind, p, v, m, programs);
    }

    /** The instruction list of {@code stage}, in [0, p). */
    public List<Instruction> program(int stage) {
        if (stage < 0 || stage >= stages) {
            throw new IndexOutOfBoundsException("stage=" + stage + " is outside [0, " + stages + ") of this " + kind + " schedule");
        }
        return programs.get(stage);
    }

    /**
     * The bubble this schedule leaves by its formula, as a fraction of the step: idle time over step time of a
     * stage, when a forward of one chunk takes {@code forward}, its input-gradient backward {@code backwardInput}
     * and its weight-gradient backward {@code backwardWeight} (any one unit; a combined Backward takes their sum),
     * and transfers take no time. GPipe and 1F1B: (p−1)/(m+p−1); interleaved: (p−1)/(v·m+p−1); ZB-H1 (m ≥ p):
     * idle / (m(tF+tB+tW) + idle) with idle = (p−1)(tB + max(0, tF−tW)), which is the paper's (p−1)(tF+tB−tW) when
     * tW ≤ tF. The builders' Javadoc derives each; a test checks each against the simulated schedule.
     *
     * @throws IllegalArgumentException if a duration is negative, or forward + backwardInput is 0
     */
    public double idealBubble(double forward, double backwardInput, double backwardWeight) {
        return BubbleFormula.of(this, forward, backwardInput, backwardWeight);
    }

    /** The duration of one instruction on one stage, for {@link #simulate}: any unit, the same for every call. */
    @FunctionalInterface
    public interface StageCost {
        /** How long {@code instruction} takes on {@code stage} (in [0, p)); never negative. */
        double duration(int stage, Instruction instruction);
    }

    /**
     * Simulates this schedule with {@code cost} per instruction and returns the step time: the latest finish over
     * the stages, in the cost's unit. Semantics are the executor's (a send never blocks, a receive waits for its
     * send); the planner prices each instruction and simulates the very lists the runtime executes.
     *
     * @throws IllegalArgumentException if the lists deadlock or leave a transfer unmatched (never for lists
     *                                  {@link #build} made)
     */
    public double simulate(StageCost cost) {
        return ScheduleSimulation.run(this, cost).makespan();
    }

    private static int oneChunk(ScheduleKind kind, int v) {
        if (v != 1) {
            throw new IllegalArgumentException("schedule " + kind + " runs one model chunk per stage, got v=" + v
                    + "; use schedule " + ScheduleKind.INTERLEAVED + " for v > 1, or v=1");
        }
        return v;
    }

    private static void atLeastOne(String what, int value) {
        if (value < 1) throw new IllegalArgumentException("pipeline schedule: " + what + "=" + value + " must be at least 1");
    }
}
