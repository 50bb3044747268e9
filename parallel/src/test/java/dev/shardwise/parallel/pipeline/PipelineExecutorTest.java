package dev.shardwise.parallel.pipeline;

import dev.shardwise.comm.LocalCluster;
import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;
import org.junit.jupiter.api.Test;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class PipelineExecutorTest {

    /**
     * Stand-in stage: forward of part k writes mb·1000 + k into its output [B·T, C] = [4, 8] and checks that its input
     * holds mb·1000 + k − 1 (what part k − 1 sent); backward writes −(mb·1000 + k) into its input gradient and checks
     * that its output gradient holds −(mb·1000 + k + 1). Logs every call in order.
     */
    static final class RecordingWork implements StageWork {
        final int p;
        final int v;
        final int stage;
        final MemoryPool memory;
        final List<String> log = new ArrayList<>();
        final Map<String, Tensor> tensors = new HashMap<>();

        RecordingWork(int p, int v, int stage, MemoryPool memory) {
            this.p = p;
            this.v = v;
            this.stage = stage;
            this.memory = memory;
        }

        private Tensor tensor(String what, int mb, int chunk) {
            return tensors.computeIfAbsent(what + mb + "." + chunk, k -> Tensor.allocate(memory, MemoryCategory.ACTIVATIONS, DType.F32, 4, 8));
        }

        private int part(int chunk) {
            return Parts.part(p, stage, chunk);
        }

        private void expect(Tensor t, double value, String what) {
            for (float x : t.toFloatArray()) {
                if (x != value) throw new AssertionError("stage " + stage + " " + what + ": holds " + x + ", expected " + value);
            }
        }

        @Override public void forward(int mb, int chunk) {
            log.add("F" + mb + "." + chunk);
            if (!Parts.isFirst(stage, chunk)) expect(tensor("in", mb, chunk), mb * 1000 + part(chunk) - 1, "input of F" + mb + "." + chunk);
            tensor("out", mb, chunk).fill(mb * 1000 + part(chunk));
        }

        private void backwardFrom(int mb, int chunk) {
            if (!Parts.isLast(p, v, stage, chunk)) {
                expect(tensor("dout", mb, chunk), -(mb * 1000 + part(chunk) + 1), "output gradient of B" + mb + "." + chunk);
            }
            tensor("din", mb, chunk).fill(-(mb * 1000 + part(chunk)));
        }

        @Override public void backward(int mb, int chunk) {
            log.add("B" + mb + "." + chunk);
            backwardFrom(mb, chunk);
        }

        @Override public void backwardInput(int mb, int chunk) {
            log.add("B" + mb + "." + chunk);
            backwardFrom(mb, chunk);
        }

        @Override public void backwardWeight(int mb, int chunk) {
            log.add("W" + mb + "." + chunk);
        }

        @Override public Tensor output(int mb, int chunk) { return tensor("out", mb, chunk); }
        @Override public Tensor inputBuffer(int mb, int chunk) { return tensor("in", mb, chunk); }
        @Override public Tensor inputGradient(int mb, int chunk) { return tensor("din", mb, chunk); }
        @Override public Tensor outputGradientBuffer(int mb, int chunk) { return tensor("dout", mb, chunk); }

        @Override public void release(int mb, int chunk) {
            log.add("release " + mb + "." + chunk);
            for (String what : List.of("in", "out", "din", "dout")) {
                Tensor t = tensors.remove(what + mb + "." + chunk);
                if (t != null) t.close();
            }
        }

        @Override public void reduceGradients() { log.add("reduce"); }
        @Override public void optimizerStep() { log.add("optimizer"); }
    }

    /** What a rank's run produced. */
    record Ran(PipelineExecutor.Step step, List<String> log, long liveBytesAfter) { }

    private static List<Ran> runOnLocalCluster(PipelineSchedule schedule) {
        return LocalCluster.run(schedule.stages(), ctx -> {
            PipelineExecutor executor = new PipelineExecutor(ctx.world(), schedule, ctx.globalRank());
            RecordingWork work = new RecordingWork(schedule.stages(), schedule.chunks(), ctx.globalRank(), ctx.memory());
            PipelineExecutor.Step step = executor.run(work);
            return new Ran(step, work.log, ctx.memory().liveBytes());
        });
    }

    /** The log the executor must produce: calls of the program in order, each release right after its last touch. */
    private static List<String> expectedLog(PipelineSchedule s, int stage) {
        List<Instruction> program = s.program(stage);
        Map<String, Integer> last = new HashMap<>();   // "mb.chunk" -> index of the last instruction touching it
        for (int i = 0; i < program.size(); i++) {
            if (ScheduleValidator.microBatch(program.get(i)) >= 0) last.put(cell(Timeline.name(program.get(i))), i);
        }
        List<String> log = new ArrayList<>();
        for (int i = 0; i < program.size(); i++) {
            Instruction instruction = program.get(i);
            String name = Timeline.name(instruction);
            if (name.matches("[FBW].*") || name.equals("reduce") || name.equals("optimizer")) log.add(name);
            for (Map.Entry<String, Integer> e : last.entrySet()) if (e.getValue() == i) log.add("release " + e.getKey());
        }
        return log;
    }

    /** "3.0" of a timeline name such as "F3.0" or "recv-act 3.0". */
    private static String cell(String name) {
        return name.substring(name.lastIndexOf(' ') + 1).replaceFirst("^[FBW]", "");
    }

    @Test
    void runsEveryScheduleInProgramOrderAndDeliversTheRightDataAtP2M4() {
        List<PipelineSchedule> schedules = List.of(
                PipelineSchedule.build(ScheduleKind.GPIPE, 2, 1, 4),
                PipelineSchedule.build(ScheduleKind.ONE_F_ONE_B, 2, 1, 4),
                PipelineSchedule.build(ScheduleKind.INTERLEAVED, 2, 2, 4),
                PipelineSchedule.build(ScheduleKind.ZB_H1, 2, 1, 4));
        for (PipelineSchedule s : schedules) {
            List<Ran> ran = runOnLocalCluster(s);
            for (int stage = 0; stage < 2; stage++) {
                String where = s.kind() + " stage " + stage;
                Ran r = ran.get(stage);
                assertEquals(s.program(stage), r.step().events().stream().map(PipelineExecutor.Event::instruction).toList(), where);
                assertEquals(expectedLog(s, stage), r.log(), where);
                assertEquals(0, r.liveBytesAfter(), where + ": every (mb, chunk) released");
                long previousEnd = 0;
                for (PipelineExecutor.Event e : r.step().events()) {
                    assertTrue(e.startNs() >= previousEnd && e.endNs() >= e.startNs(), where + ": events in time order, " + e);
                    previousEnd = e.endNs();
                }
                PipelineExecutor.Step step = r.step();
                assertTrue(step.forwardNs() + step.backwardNs() + step.sendNs() + step.waitNs() + step.reduceNs() + step.optimizerNs()
                        <= step.wallNs(), where + ": phases fit in the wall time");
            }
        }
    }

    @Test
    void runsOneStageWithoutACommunicator() {
        PipelineSchedule s = PipelineSchedule.build(ScheduleKind.ONE_F_ONE_B, 1, 1, 3);
        RecordingWork work = new RecordingWork(1, 1, 0, MemoryPool.unlimited("rank 0"));
        PipelineExecutor.Step step = new PipelineExecutor(null, s, 0).run(work);
        assertEquals(List.of("F0.0", "B0.0", "release 0.0", "F1.0", "B1.0", "release 1.0", "F2.0", "B2.0", "release 2.0",
                "reduce", "optimizer"), work.log);
        assertEquals(0, step.sendNs(), "no sends at p=1");
        assertEquals(0, step.waitNs(), "no receives at p=1");
    }

    @Test
    void refusesAMissingGroupOrAGroupWhoseRankIsNotTheStage() {
        PipelineSchedule s = PipelineSchedule.build(ScheduleKind.ONE_F_ONE_B, 2, 1, 2);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> new PipelineExecutor(null, s, 0));
        assertTrue(e.getMessage().contains("p=2"), e.getMessage());
        List<String> messages = LocalCluster.run(2, ctx -> {
            try {
                new PipelineExecutor(ctx.world(), s, 1 - ctx.globalRank());
                return "accepted";
            } catch (IllegalArgumentException refused) {
                return refused.getMessage();
            }
        });
        for (String m : messages) assertTrue(m.contains("rank") && m.contains("stage"), m);
    }

    @Test
    void bubbleIsOneMinusComputeOverWall() {
        PipelineExecutor.Step step = new PipelineExecutor.Step(0, 1000, 300, 400, 10, 200, 50, 40, List.of());
        assertEquals(700, step.computeNs());
        assertEquals(0.3, step.bubble(), 1e-12);
    }
}
