package dev.shardwise.parallel.pipeline;

import org.junit.jupiter.api.Test;

import java.util.function.ToDoubleFunction;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

class ScheduleSimulationTest {

    /** Per chunk: a forward takes tF/v, B tB/v, W tW/v, a whole backward their sum; transfers and the rest nothing. */
    private static ToDoubleFunction<Instruction> costs(double tF, double tB, double tW, int v) {
        return i -> switch (i) {
            case Instruction.Forward f -> tF / v;
            case Instruction.Backward b -> (tB + tW) / v;
            case Instruction.BackwardInput b -> tB / v;
            case Instruction.BackwardWeight w -> tW / v;
            default -> 0.0;
        };
    }

    /** 1 − (mean compute per stage) / (step time), the bubble the bench measures. */
    private static double simulatedBubble(PipelineSchedule s, double tF, double tB, double tW) {
        ScheduleSimulation.Result r = ScheduleSimulation.run(s, costs(tF, tB, tW, s.chunks()));
        double busy = 0;
        for (double b : r.busy()) busy += b;
        return 1 - busy / s.stages() / r.makespan();
    }

    @Test
    void simulatedBubbleEqualsTheFormulaOfEverySchedule() {
        double[][] durations = {{1, 1, 1}, {1, 2, 1}, {2, 1, 1}, {1, 1, 0.5}, {1, 1.5, 0.5}, {1, 1, 2}, {1, 2, 2}, {3, 1, 0.25}};
        int cases = 0;
        for (ScheduleKind kind : ScheduleKind.values()) {
            for (int p = 1; p <= 8; p++) {
                for (int v = 1; v <= (kind == ScheduleKind.INTERLEAVED ? 3 : 1); v++) {
                    // ZB-H1's formula counts on m >= p micro-batches whose W's fill the bubble; the others hold for any m.
                    for (int m = kind == ScheduleKind.ZB_H1 ? p : 1; m <= 3 * p; m++) {
                        if (kind == ScheduleKind.INTERLEAVED && v > 1 && (p < 2 || m % p != 0)) continue;
                        PipelineSchedule s = PipelineSchedule.build(kind, p, v, m);
                        for (double[] d : durations) {
                            double formula = s.idealBubble(d[0], d[1], d[2]);
                            double simulated = simulatedBubble(s, d[0], d[1], d[2]);
                            assertEquals(formula, simulated, 1e-9, kind + " p=" + p + " v=" + v + " m=" + m
                                    + " tF=" + d[0] + " tB=" + d[1] + " tW=" + d[2]);
                            cases++;
                        }
                    }
                }
            }
        }
        assertTrue(cases > 1000, "only " + cases + " cases ran");
    }

    @Test
    void zbH1LeavesAThirdOfOneFOneBsIdleAtEqualTimes() {
        PipelineSchedule zb = PipelineSchedule.build(ScheduleKind.ZB_H1, 4, 1, 8);
        PipelineSchedule oneF = PipelineSchedule.build(ScheduleKind.ONE_F_ONE_B, 4, 1, 8);
        assertEquals(27, ScheduleSimulation.run(zb, costs(1, 1, 1, 1)).makespan(), 1e-12);
        assertEquals(33, ScheduleSimulation.run(oneF, costs(1, 1, 1, 1)).makespan(), 1e-12);
        assertEquals(3.0 / 27, simulatedBubble(zb, 1, 1, 1), 1e-12);
    }

    @Test
    void publicSimulateGivesTheOneFOneBStepTimeWithASlowerLastStage() {
        // p=4, m=8, forward 1 and backward 2 per stage, the last stage 1.5x slower: 1F1B's step is the slow stage's
        // m(tF+tB) plus the (p-1) forward and backward of the stages before it on the critical path.
        PipelineSchedule s = PipelineSchedule.build(ScheduleKind.ONE_F_ONE_B, 4, 1, 8);
        double step = s.simulate((stage, i) -> {
            double scale = stage == 3 ? 1.5 : 1.0;
            return switch (i) {
                case Instruction.Forward f -> scale;
                case Instruction.Backward b -> 2 * scale;
                default -> 0.0;
            };
        });
        assertEquals(8 * 4.5 + 3 * 3.0, step, 1e-9, "1F1B p=4 m=8 with the last stage 1.5x slower");
        double uniform = s.simulate((stage, i) -> i instanceof Instruction.Forward ? 1.0 : i instanceof Instruction.Backward ? 2.0 : 0.0);
        assertEquals((8 + 3) * 3.0, uniform, 1e-9, "1F1B p=4 m=8 uniform: (m + p - 1)(tF + tB)");
    }
}
