package dev.shardwise.parallel.pipeline;

import dev.shardwise.comm.Communicator;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * Runs one pipeline stage's instruction list (ARCHITECTURE.md idea 3): every schedule, the single-rank step
 * included, goes through this loop; the schedule decides the order, {@link StageWork} does the computing.
 * Activations and gradients travel over the pipeline group (rank = stage) with eager sends and blocking
 * receives; a message's tag names its kind, micro-batch and receiving chunk, so messages never pair up wrongly.
 *
 * <p>Timers follow Megatron's names: forward-compute, backward-compute (input and weight halves), pipeline-wait
 * (blocked in receives), grads-reduce and optimizer. Each executed instruction is recorded as an {@link Event}
 * for the timeline. Called from the rank's thread only.
 */
public final class PipelineExecutor {
    private final Communicator pipeline;   // null for a single stage
    private final PipelineSchedule schedule;
    private final int stage;
    private final List<Instruction> program;
    private final int[] releaseAfter;      // per instruction index: the (mb, chunk) key released after it, or -1

    /** One executed instruction, in ns since the step's start. */
    public record Event(Instruction instruction, long startNs, long endNs) { }

    /**
     * What one step did on this stage.
     *
     * @param forwardNs   forward-compute
     * @param backwardNs  backward-compute (whole, input and weight halves)
     * @param waitNs      pipeline-wait: blocked receiving, plus the sends' copies
     * @param reduceNs    grads-reduce
     * @param optimizerNs optimizer
     * @param wallNs      the whole step
     * @param events      every instruction with its start and end
     */
    public record Step(long forwardNs, long backwardNs, long waitNs, long reduceNs, long optimizerNs, long wallNs,
                       List<Event> events) {
        /** The bubble this stage saw: the fraction of the pipelined part (up to the gradient reduction) it spent not computing. */
        public double bubble() {
            long pipelined = forwardNs + backwardNs + waitNs;
            return pipelined == 0 ? 0 : (double) waitNs / pipelined;
        }
    }

    /**
     * @param pipeline the pipeline group, rank = stage; null only for a one-stage schedule
     * @throws IllegalArgumentException if the group's size is not the schedule's stage count or stage is out of range
     */
    public PipelineExecutor(Communicator pipeline, PipelineSchedule schedule, int stage) {
        int p = schedule.stages();
        if (pipeline == null ? p != 1 : pipeline.size() != p || pipeline.rank() != stage) {
            throw new IllegalArgumentException("a " + p + "-stage schedule needs a pipeline group of " + p + " ranks with this "
                    + "rank at stage " + stage + ", got " + (pipeline == null ? "none" : pipeline.name() + " of " + pipeline.size()
                    + " (rank " + pipeline.rank() + ")"));
        }
        this.pipeline = pipeline;
        this.schedule = schedule;
        this.stage = stage;
        this.program = schedule.program(stage);
        this.releaseAfter = new int[program.size()];
        Map<Integer, Integer> last = new HashMap<>();
        for (int i = 0; i < program.size(); i++) {
            int key = key(program.get(i));
            if (key >= 0) last.put(key, i);
        }
        java.util.Arrays.fill(releaseAfter, -1);
        last.forEach((key, index) -> releaseAfter[index] = key);
    }

    /** (mb, chunk) of an instruction as mb·v + chunk, or -1 for the step-wide ones. */
    private int key(Instruction in) {
        int v = schedule.chunks();
        return switch (in) {
            case Instruction.Forward f -> f.mb() * v + f.chunk();
            case Instruction.Backward b -> b.mb() * v + b.chunk();
            case Instruction.BackwardInput b -> b.mb() * v + b.chunk();
            case Instruction.BackwardWeight w -> w.mb() * v + w.chunk();
            case Instruction.SendActivation s -> s.mb() * v + s.chunk();
            case Instruction.ReceiveActivation r -> r.mb() * v + r.chunk();
            case Instruction.SendGradient s -> s.mb() * v + s.chunk();
            case Instruction.ReceiveGradient r -> r.mb() * v + r.chunk();
            case Instruction.ReduceGradients r -> -1;
            case Instruction.OptimizerStep o -> -1;
        };
    }

    /** Runs the stage's list once (one optimizer step) on {@code work}. */
    public Step run(StageWork work) {
        long forward = 0, backward = 0, wait = 0, reduce = 0, optimizer = 0;
        List<Event> events = new ArrayList<>(program.size());
        long origin = System.nanoTime();
        int v = schedule.chunks(), p = schedule.stages();
        for (int i = 0; i < program.size(); i++) {
            Instruction in = program.get(i);
            long start = System.nanoTime();
            switch (in) {
                case Instruction.Forward f -> work.forward(f.mb(), f.chunk());
                case Instruction.Backward b -> work.backward(b.mb(), b.chunk());
                case Instruction.BackwardInput b -> work.backwardInput(b.mb(), b.chunk());
                case Instruction.BackwardWeight w -> work.backwardWeight(w.mb(), w.chunk());
                case Instruction.SendActivation s -> pipeline.send(work.output(s.mb(), s.chunk()), s.peerStage(),
                        tag(0, s.mb(), stage == p - 1 ? s.chunk() + 1 : s.chunk()));
                case Instruction.ReceiveActivation r -> pipeline.receive(work.inputBuffer(r.mb(), r.chunk()), r.peerStage(),
                        tag(0, r.mb(), r.chunk()));
                case Instruction.SendGradient s -> pipeline.send(work.inputGradient(s.mb(), s.chunk()), s.peerStage(),
                        tag(1, s.mb(), stage == 0 ? s.chunk() - 1 : s.chunk()));
                case Instruction.ReceiveGradient r -> pipeline.receive(work.outputGradientBuffer(r.mb(), r.chunk()),
                        r.peerStage(), tag(1, r.mb(), r.chunk()));
                case Instruction.ReduceGradients r -> work.reduceGradients();
                case Instruction.OptimizerStep o -> work.optimizerStep();
            }
            long end = System.nanoTime();
            long ns = end - start;
            switch (in) {
                case Instruction.Forward f -> forward += ns;
                case Instruction.Backward b -> backward += ns;
                case Instruction.BackwardInput b -> backward += ns;
                case Instruction.BackwardWeight w -> backward += ns;
                case Instruction.SendActivation s -> wait += ns;
                case Instruction.ReceiveActivation r -> wait += ns;
                case Instruction.SendGradient s -> wait += ns;
                case Instruction.ReceiveGradient r -> wait += ns;
                case Instruction.ReduceGradients r -> reduce += ns;
                case Instruction.OptimizerStep o -> optimizer += ns;
            }
            events.add(new Event(in, start - origin, end - origin));
            if (releaseAfter[i] >= 0) work.release(releaseAfter[i] / v, releaseAfter[i] % v);
        }
        return new Step(forward, backward, wait, reduce, optimizer, System.nanoTime() - origin, List.copyOf(events));
    }

    /** The tag of a message: kind 0 activation, 1 gradient; the receiving chunk's micro-batch and index. */
    private int tag(int kind, int mb, int receivingChunk) {
        return (kind * schedule.chunks() + receivingChunk) * schedule.microBatches() + mb;
    }

    /** The stage this executor runs. */
    public int stage() {
        return stage;
    }

    /** The schedule it runs. */
    public PipelineSchedule schedule() {
        return schedule;
    }
}
