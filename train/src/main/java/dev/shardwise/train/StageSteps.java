package dev.shardwise.train;

import dev.shardwise.comm.Communicator;
import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;
import dev.shardwise.parallel.pipeline.Instruction;
import dev.shardwise.parallel.pipeline.PipelineExecutor;
import dev.shardwise.parallel.pipeline.PipelineSchedule;
import dev.shardwise.parallel.pipeline.Timeline;
import dev.shardwise.parallel.expert.TimedExpertParallel;
import dev.shardwise.model.ExpertParallel;

import java.util.ArrayList;
import java.util.List;

/**
 * Brings every stage's executed step to stage 0, for the timeline: each stage sends its phase times and its
 * events' start and end as one f64 message; the instructions themselves are its schedule's list, which stage 0
 * knows, so they are not sent. Likewise the expert-parallel all-to-alls each stage timed ({@link #gatherExchanges}).
 */
final class StageSteps {
    /** Message tag of the gather (its own tag, though no step is in flight while it runs). */
    private static final int TAG = 30_000;
    private static final int PHASES = 7;

    private StageSteps() { }

    /**
     * Collective over {@code pipeline} (null: a single stage): returns every stage's step on stage 0, in stage
     * order, and an empty list on the others.
     */
    static List<PipelineExecutor.Step> gather(Communicator pipeline, PipelineSchedule schedule, PipelineExecutor.Step mine,
                                               MemoryPool pool) {
        if (pipeline == null) return List.of(mine);
        if (pipeline.rank() != 0) {
            try (Tensor encoded = encode(mine, pool)) {
                pipeline.send(encoded, 0, TAG);
            }
            return List.of();
        }
        List<PipelineExecutor.Step> steps = new ArrayList<>(List.of(mine));
        for (int s = 1; s < pipeline.size(); s++) {
            List<Instruction> program = schedule.program(s);
            try (Tensor encoded = Tensor.allocate(pool, MemoryCategory.BUFFERS, DType.F64, PHASES + 2 * program.size())) {
                pipeline.receive(encoded, s, TAG);
                double[] v = encoded.toDoubleArray();
                List<PipelineExecutor.Event> events = new ArrayList<>(program.size());
                for (int i = 0; i < program.size(); i++) {
                    events.add(new PipelineExecutor.Event(program.get(i), (long) v[PHASES + 2 * i], (long) v[PHASES + 1 + 2 * i]));
                }
                steps.add(new PipelineExecutor.Step(s, (long) v[0], (long) v[1], (long) v[2], (long) v[3], (long) v[4],
                        (long) v[5], (long) v[6], List.copyOf(events)));
            }
        }
        return List.copyOf(steps);
    }

    /** Message tags of the all-to-all spans' gather: their count, then the spans. */
    private static final int EXCHANGE_COUNT_TAG = 30_001, EXCHANGE_TAG = 30_002;

    /**
     * Collective over {@code pipeline} (null: a single stage): every stage's expert-parallel all-to-alls of its last
     * step ({@code mine}, times since {@code originNs}, when the stage's step began), as timeline spans on stage 0 in
     * stage order, named {@code a2a dispatch}, {@code a2a combine}, ... in category {@code expert-all-to-all}; an empty
     * list on the others. Each stage sends a count, then (exchange, start, end) per span as f64.
     */
    static List<Timeline.Span> gatherExchanges(Communicator pipeline, List<TimedExpertParallel.Span> mine, long originNs,
                                               MemoryPool pool) {
        double[] v = new double[3 * mine.size()];
        for (int i = 0; i < mine.size(); i++) {
            v[3 * i] = mine.get(i).exchange().ordinal();
            v[3 * i + 1] = mine.get(i).startNs() - originNs;
            v[3 * i + 2] = mine.get(i).endNs() - originNs;
        }
        if (pipeline != null && pipeline.rank() != 0) {
            try (Tensor count = Tensor.allocate(pool, MemoryCategory.BUFFERS, DType.F64, 1).copyFrom(new double[]{mine.size()})) {
                pipeline.send(count, 0, EXCHANGE_COUNT_TAG);
            }
            if (v.length > 0) {
                try (Tensor encoded = Tensor.allocate(pool, MemoryCategory.BUFFERS, DType.F64, v.length).copyFrom(v)) {
                    pipeline.send(encoded, 0, EXCHANGE_TAG);
                }
            }
            return List.of();
        }
        List<Timeline.Span> spans = new ArrayList<>();
        decode(0, v, spans);
        for (int s = 1; pipeline != null && s < pipeline.size(); s++) {
            int n;
            try (Tensor count = Tensor.allocate(pool, MemoryCategory.BUFFERS, DType.F64, 1)) {
                pipeline.receive(count, s, EXCHANGE_COUNT_TAG);
                n = (int) count.getDouble(0);
            }
            if (n == 0) continue;
            try (Tensor encoded = Tensor.allocate(pool, MemoryCategory.BUFFERS, DType.F64, 3 * n)) {
                pipeline.receive(encoded, s, EXCHANGE_TAG);
                decode(s, encoded.toDoubleArray(), spans);
            }
        }
        return List.copyOf(spans);
    }

    private static void decode(int stage, double[] v, List<Timeline.Span> into) {
        ExpertParallel.Exchange[] kinds = ExpertParallel.Exchange.values();
        for (int i = 0; i < v.length; i += 3) {
            into.add(new Timeline.Span(stage, "a2a " + kinds[(int) v[i]].label(), "expert-all-to-all", (long) v[i + 1], (long) v[i + 2]));
        }
    }

    /** [wall, forward, backward, send, wait, reduce, optimizer, then start and end of each event], ns as f64. */
    private static Tensor encode(PipelineExecutor.Step step, MemoryPool pool) {
        List<PipelineExecutor.Event> events = step.events();
        double[] v = new double[PHASES + 2 * events.size()];
        long[] phases = {step.wallNs(), step.forwardNs(), step.backwardNs(), step.sendNs(), step.waitNs(), step.reduceNs(),
                step.optimizerNs()};
        for (int i = 0; i < PHASES; i++) v[i] = phases[i];
        for (int i = 0; i < events.size(); i++) {
            v[PHASES + 2 * i] = events.get(i).startNs();
            v[PHASES + 1 + 2 * i] = events.get(i).endNs();
        }
        return Tensor.allocate(pool, MemoryCategory.BUFFERS, DType.F64, v.length).copyFrom(v);
    }
}
