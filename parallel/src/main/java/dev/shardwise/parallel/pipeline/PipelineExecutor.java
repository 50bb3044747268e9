package dev.shardwise.parallel.pipeline;

import dev.shardwise.comm.Communicator;
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
import java.util.Arrays;
import java.util.Collections;
import java.util.List;

/**
 * Runs one stage's instruction list of a {@link PipelineSchedule} for one training step: the pipeline runtime of
 * ARCHITECTURE.md idea 3, the same lists the validator and the simulation read (schedules from Huang et al. 2019,
 * Narayanan et al. 2021, Qi et al. 2023). Each instruction calls the {@link StageWork} or the pipeline group in list
 * order, on the calling thread; every rank of the group runs its own executor at the same time.
 *
 * <p>Communication: point to point on the pipeline group, whose rank is the stage. A send copies the buffer and
 * never blocks; a receive blocks until its message has arrived (that time is the stage's pipeline-wait). Messages
 * go to the peer stage the instruction names, tagged {@code 2·(mb·v + receiving chunk) + (0 activation, 1
 * gradient)}: unique per (kind, mb, receiving chunk) within a step, below 2·m·v. Activations and gradients are
 * sent with the {@link StageWork#output}/{@link StageWork#inputGradient} tensors and received into
 * {@link StageWork#inputBuffer}/{@link StageWork#outputGradientBuffer}, so both ends must use the same shape.
 *
 * <p>Memory: right after the last instruction of the step that touches (mb, chunk), the executor calls
 * {@link StageWork#release}; what to free is the work's business. The executor holds no tensors.
 *
 * <p>One executor is built per stage and schedule and may run any number of steps, one at a time.
 */
public final class PipelineExecutor {
    private final Communicator pipelineGroup;
    private final PipelineSchedule schedule;
    private final int stage;
    private final List<Instruction> program;
    /** Per instruction: the tag of its message (sends and receives only). */
    private final int[] tags;
    /** Per instruction: the (mb, chunk) pairs, flattened, whose last touch it is. */
    private final int[][] releases;
    private long lastOriginNs;   // System.nanoTime() as the last run began

    /**
     * @param pipelineGroup the group of the schedule's p stages, rank = stage; may be null when p = 1
     * @param schedule      the schedule to run; validated here, before the first step
     * @param stage         this rank's stage, in [0, p)
     * @throws IllegalArgumentException if the schedule fails {@link ScheduleValidator#validate}, the stage is outside
     *                                  [0, p), or the group is missing (p > 1) or does not have p ranks with this
     *                                  stage as its rank
     */
    public PipelineExecutor(Communicator pipelineGroup, PipelineSchedule schedule, int stage) {
        int p = schedule.stages();
        if (stage < 0 || stage >= p) {
            throw new IllegalArgumentException("pipeline executor: stage=" + stage + " is outside [0, p=" + p + ")");
        }
        if (pipelineGroup == null && p > 1) {
            throw new IllegalArgumentException("pipeline executor: p=" + p + " stages need a pipeline group; only p=1 runs without one");
        }
        if (pipelineGroup != null && (pipelineGroup.size() != p || pipelineGroup.rank() != stage)) {
            throw new IllegalArgumentException("pipeline executor: group " + pipelineGroup.name() + " has " + pipelineGroup.size()
                    + " ranks and this is rank " + pipelineGroup.rank() + ", but the schedule has p=" + p
                    + " stages and this is stage " + stage + "; pass the pipeline group, whose rank is the stage");
        }
        ScheduleValidator.validate(schedule);
        this.pipelineGroup = pipelineGroup;
        this.schedule = schedule;
        this.stage = stage;
        this.program = schedule.program(stage);
        this.tags = new int[program.size()];
        for (int i = 0; i < program.size(); i++) {
            Transfer t = Transfer.of(p, stage, program.get(i));
            if (t != null) tags[i] = t.tag(schedule.chunks());
        }
        this.releases = lastTouches(program, schedule.microBatches(), schedule.chunks());
    }

    /** Per instruction, the (mb, chunk) pairs (flattened) that no later instruction touches. */
    private static int[][] lastTouches(List<Instruction> program, int m, int v) {
        int[][] last = new int[m][v];
        for (int[] row : last) Arrays.fill(row, -1);
        for (int i = 0; i < program.size(); i++) {
            Instruction instruction = program.get(i);
            int mb = ScheduleValidator.microBatch(instruction);
            if (mb >= 0) last[mb][chunk(instruction)] = i;
        }
        List<List<Integer>> perInstruction = new ArrayList<>(program.size());
        for (int i = 0; i < program.size(); i++) perInstruction.add(new ArrayList<>());
        for (int mb = 0; mb < m; mb++) {
            for (int c = 0; c < v; c++) {
                perInstruction.get(last[mb][c]).add(mb);
                perInstruction.get(last[mb][c]).add(c);
            }
        }
        int[][] releases = new int[program.size()][];
        for (int i = 0; i < program.size(); i++) releases[i] = perInstruction.get(i).stream().mapToInt(Integer::intValue).toArray();
        return releases;
    }

    /** The chunk an instruction with a micro-batch works on. */
    private static int chunk(Instruction instruction) {
        return switch (instruction) {
            case Forward f -> f.chunk();
            case Backward b -> b.chunk();
            case BackwardInput b -> b.chunk();
            case BackwardWeight w -> w.chunk();
            case SendActivation s -> s.chunk();
            case ReceiveActivation r -> r.chunk();
            case SendGradient s -> s.chunk();
            case ReceiveGradient r -> r.chunk();
            case ReduceGradients r -> throw new IllegalArgumentException("ReduceGradients has no chunk");
            case OptimizerStep o -> throw new IllegalArgumentException("OptimizerStep has no chunk");
        };
    }

    /** The schedule this executor runs. */
    public PipelineSchedule schedule() {
        return schedule;
    }

    /** The stage this executor runs. */
    public int stage() {
        return stage;
    }

    /**
     * Runs this stage's list once: one training step. Blocks in receives until the peers' sends arrive; returns
     * when OptimizerStep has run.
     *
     * @return the step's phase times and timed events
     * @throws RuntimeException whatever the work or the communicator throws (a peer failed, a receive timed out);
     *                          the step is then abandoned part-way
     */
    public Step run(StageWork work) {
        long[] phase = new long[Phase.values().length];
        List<Event> events = new ArrayList<>(program.size());
        long origin = System.nanoTime();
        lastOriginNs = origin;
        for (int i = 0; i < program.size(); i++) {
            Instruction instruction = program.get(i);
            long start = System.nanoTime();
            Phase ran = execute(instruction, tags[i], work);
            long end = System.nanoTime();
            phase[ran.ordinal()] += end - start;
            events.add(new Event(instruction, start - origin, end - origin));
            int[] done = releases[i];
            for (int k = 0; k < done.length; k += 2) work.release(done[k], done[k + 1]);
        }
        long wall = System.nanoTime() - origin;
        return new Step(stage, wall, phase[Phase.FORWARD.ordinal()], phase[Phase.BACKWARD.ordinal()],
                phase[Phase.SEND.ordinal()], phase[Phase.WAIT.ordinal()], phase[Phase.REDUCE.ordinal()],
                phase[Phase.OPTIMIZER.ordinal()], Collections.unmodifiableList(events));
    }

    /**
     * {@link System#nanoTime} when the last {@link #run} began: the origin of its events' times, for spans timed
     * inside them (such as expert-parallel all-to-alls) to be drawn beside them.
     */
    public long lastOriginNs() {
        return lastOriginNs;
    }

    /** Where an instruction's time is counted. */
    private enum Phase { FORWARD, BACKWARD, SEND, WAIT, REDUCE, OPTIMIZER }

    private Phase execute(Instruction instruction, int tag, StageWork work) {
        return switch (instruction) {
            case Forward f -> {
                work.forward(f.mb(), f.chunk());
                yield Phase.FORWARD;
            }
            case Backward b -> {
                work.backward(b.mb(), b.chunk());
                yield Phase.BACKWARD;
            }
            case BackwardInput b -> {
                work.backwardInput(b.mb(), b.chunk());
                yield Phase.BACKWARD;
            }
            case BackwardWeight w -> {
                work.backwardWeight(w.mb(), w.chunk());
                yield Phase.BACKWARD;
            }
            case SendActivation s -> {
                pipelineGroup.send(work.output(s.mb(), s.chunk()), s.peerStage(), tag);
                yield Phase.SEND;
            }
            case ReceiveActivation r -> {
                pipelineGroup.receive(work.inputBuffer(r.mb(), r.chunk()), r.peerStage(), tag);
                yield Phase.WAIT;
            }
            case SendGradient s -> {
                pipelineGroup.send(work.inputGradient(s.mb(), s.chunk()), s.peerStage(), tag);
                yield Phase.SEND;
            }
            case ReceiveGradient r -> {
                pipelineGroup.receive(work.outputGradientBuffer(r.mb(), r.chunk()), r.peerStage(), tag);
                yield Phase.WAIT;
            }
            case ReduceGradients r -> {
                work.reduceGradients();
                yield Phase.REDUCE;
            }
            case OptimizerStep o -> {
                work.optimizerStep();
                yield Phase.OPTIMIZER;
            }
        };
    }

    /**
     * One executed instruction.
     *
     * @param instruction what ran
     * @param startNs     when it started, in nanoseconds since the step began on this stage
     * @param endNs       when it ended, same origin
     */
    public record Event(Instruction instruction, long startNs, long endNs) { }

    /**
     * One step on one stage: wall time and where it went, in nanoseconds, as Megatron's timers split a step, plus
     * every instruction's event in list order.
     *
     * @param stage       the stage that ran it
     * @param wallNs      from the first instruction's start to the last one's end
     * @param forwardNs   forward-compute: Forward
     * @param backwardNs  backward-compute: Backward, BackwardInput and BackwardWeight
     * @param sendNs      pipeline-send: copying sends out (they never block)
     * @param waitNs      pipeline-wait: receives, blocked until the peer's data arrived
     * @param reduceNs    grads-reduce: ReduceGradients
     * @param optimizerNs optimizer: OptimizerStep
     * @param events      every instruction with its start and end, in list order
     */
    public record Step(int stage, long wallNs, long forwardNs, long backwardNs, long sendNs, long waitNs,
                       long reduceNs, long optimizerNs, List<Event> events) {

        /** forward-compute + backward-compute. */
        public long computeNs() {
            return forwardNs + backwardNs;
        }

        /**
         * The measured bubble of this stage: 1 − compute / wall, the fraction of the step it did not compute (0 for
         * an empty step). Across stages that start together, 1 − mean compute / longest wall is the pipeline's.
         */
        public double bubble() {
            return wallNs == 0 ? 0 : 1 - (double) computeNs() / wallNs;
        }
    }
}
