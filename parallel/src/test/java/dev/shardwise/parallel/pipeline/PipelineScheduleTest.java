package dev.shardwise.parallel.pipeline;

import dev.shardwise.parallel.pipeline.Instruction.Backward;
import dev.shardwise.parallel.pipeline.Instruction.BackwardInput;
import dev.shardwise.parallel.pipeline.Instruction.BackwardWeight;
import dev.shardwise.parallel.pipeline.Instruction.Forward;
import dev.shardwise.parallel.pipeline.Instruction.OptimizerStep;
import dev.shardwise.parallel.pipeline.Instruction.ReduceGradients;
import org.junit.jupiter.api.Test;

import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Set;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class PipelineScheduleTest {

    /** Every (kind, p, v, m) the builders accept, p in 1..8, m in 1..16, v in 1..3 for interleaved. */
    private static List<PipelineSchedule> allAccepted() {
        List<PipelineSchedule> all = new ArrayList<>();
        for (ScheduleKind kind : ScheduleKind.values()) {
            int maxV = kind == ScheduleKind.INTERLEAVED ? 3 : 1;
            for (int p = 1; p <= 8; p++) {
                for (int v = 1; v <= maxV; v++) {
                    for (int m = 1; m <= 16; m++) {
                        if (kind == ScheduleKind.INTERLEAVED && v > 1 && (p < 2 || m % p != 0)) continue;
                        all.add(PipelineSchedule.build(kind, p, v, m));
                    }
                }
            }
        }
        return all;
    }

    @Test
    void everyBuilderValidatesForP1To8M1To16AndV1To3() {
        List<PipelineSchedule> all = allAccepted();
        for (PipelineSchedule s : all) {
            try {
                ScheduleValidator.validate(s);
            } catch (IllegalArgumentException e) {
                throw new AssertionError(s.kind() + " p=" + s.stages() + " v=" + s.chunks() + " m=" + s.microBatches() + ": " + e.getMessage(), e);
            }
        }
        assertTrue(all.size() > 4 * 8 * 16, "only " + all.size() + " schedules were built");
    }

    @Test
    void everyMicroBatchRunsForwardThenBackwardThroughEveryChunkOnce() {
        for (PipelineSchedule s : allAccepted()) {
            for (int stage = 0; stage < s.stages(); stage++) {
                List<String> seen = new ArrayList<>();
                for (Instruction i : s.program(stage)) {
                    switch (i) {
                        case Forward f -> seen.add("F" + f.mb() + "." + f.chunk());
                        case Backward b -> seen.add("B" + b.mb() + "." + b.chunk());
                        case BackwardInput b -> seen.add("B" + b.mb() + "." + b.chunk());
                        default -> { }
                    }
                }
                String where = s.kind() + " p=" + s.stages() + " v=" + s.chunks() + " m=" + s.microBatches() + " stage " + stage;
                assertEquals(2 * s.microBatches() * s.chunks(), seen.size(), where);
                assertEquals(seen.size(), new HashSet<>(seen).size(), where + ": a compute runs twice");
                for (int mb = 0; mb < s.microBatches(); mb++) {
                    for (int c = 0; c < s.chunks(); c++) {
                        assertTrue(seen.indexOf("F" + mb + "." + c) < seen.indexOf("B" + mb + "." + c), where + " mb " + mb + " chunk " + c);
                    }
                }
                List<Instruction> program = s.program(stage);
                assertEquals(new ReduceGradients(), program.get(program.size() - 2), where);
                assertEquals(new OptimizerStep(), program.getLast(), where);
            }
        }
    }

    @Test
    void oneStageIsTodaysSingleRankStep() {
        for (int m = 1; m <= 5; m++) {
            List<Instruction> expected = new ArrayList<>();
            for (int mb = 0; mb < m; mb++) {
                expected.add(new Forward(mb, 0));
                expected.add(new Backward(mb, 0));
            }
            expected.add(new ReduceGradients());
            expected.add(new OptimizerStep());
            assertEquals(expected, PipelineSchedule.build(ScheduleKind.ONE_F_ONE_B, 1, 1, m).program(0), "1f1b m=" + m);
            assertEquals(expected, PipelineSchedule.build(ScheduleKind.INTERLEAVED, 1, 1, m).program(0), "interleaved v=1 m=" + m);
        }
    }

    @Test
    void buildersMatchTheTablesInTheirJavadoc() {
        assertEquals("""
                stage 0:  F0  F1  F2  F3   .   .   .   .   .   .  B0  B1  B2  B3
                stage 1:   .  F0  F1  F2  F3   .   .   .   .  B0  B1  B2  B3   .
                stage 2:   .   .  F0  F1  F2  F3   .   .  B0  B1  B2  B3   .   .
                stage 3:   .   .   .  F0  F1  F2  F3  B0  B1  B2  B3   .   .   .
                """, ScheduleTable.of(PipelineSchedule.build(ScheduleKind.GPIPE, 4, 1, 4)));
        assertEquals("""
                stage 0:  F0  F1  F2  F3   .   .   .  B0  F4  B1  F5  B2  F6  B3  F7  B4   .  B5   .  B6   .  B7
                stage 1:   .  F0  F1  F2   .   .  B0  F3  B1  F4  B2  F5  B3  F6  B4  F7  B5   .  B6   .  B7   .
                stage 2:   .   .  F0  F1   .  B0  F2  B1  F3  B2  F4  B3  F5  B4  F6  B5  F7  B6   .  B7   .   .
                stage 3:   .   .   .  F0  B0  F1  B1  F2  B2  F3  B3  F4  B4  F5  B5  F6  B6  F7  B7   .   .   .
                """, ScheduleTable.of(PipelineSchedule.build(ScheduleKind.ONE_F_ONE_B, 4, 1, 8)));
        assertEquals("""
                stage 0: F0.0 F1.0 F0.1 F1.1 F2.0 B0.1 F3.0 B1.1 F2.1 B0.0 F3.1 B1.0    . B2.1    . B3.1 B2.0 B3.0
                stage 1:    . F0.0 F1.0 F0.1 B0.1 F1.1 B1.1 F2.0 B0.0 F3.0 B1.0 F2.1 B2.1 F3.1 B3.1 B2.0 B3.0    .
                """, ScheduleTable.of(PipelineSchedule.build(ScheduleKind.INTERLEAVED, 2, 2, 4)));
        assertEquals("""
                stage 0:  F0  F1  F2  F3   .   .   .  B0  W0  F4  B1  W1  F5  B2  W2  F6  B3  W3  F7  B4  W4  B5  W5  B6  W6  B7  W7
                stage 1:   .  F0  F1  F2   .   .  B0  F3  B1  W0  F4  B2  W1  F5  B3  W2  F6  B4  W3  F7  B5  W4  B6  W5  B7  W6  W7
                stage 2:   .   .  F0  F1   .  B0  F2  B1  F3  B2  W0  F4  B3  W1  F5  B4  W2  F6  B5  W3  F7  B6  W4  B7  W5  W6  W7
                stage 3:   .   .   .  F0  B0  F1  B1  F2  B2  F3  B3  W0  F4  B4  W1  F5  B5  W2  F6  B6  W3  F7  B7  W4  W5  W6  W7
                """, ScheduleTable.of(PipelineSchedule.build(ScheduleKind.ZB_H1, 4, 1, 8)));
    }

    @Test
    void interleavedLookupMatchesItsJavadocForP2V2M4() {
        StringBuilder forward = new StringBuilder();
        StringBuilder backward = new StringBuilder();
        for (int k = 0; k < 8; k++) {
            int mb = Interleaved1F1BSchedule.microBatch(2, 2, k);
            forward.append(' ').append(mb).append('.').append(Interleaved1F1BSchedule.forwardChunk(2, 2, k));
            backward.append(' ').append(mb).append('.').append(Interleaved1F1BSchedule.backwardChunk(2, 2, k));
        }
        assertEquals(" 0.0 1.0 0.1 1.1 2.0 3.0 2.1 3.1", forward.toString());
        assertEquals(" 0.1 1.1 0.0 1.0 2.1 3.1 2.0 3.0", backward.toString());
    }

    @Test
    void oneFOneBWarmsUpWithPMinusSMinusOneForwardsAndHoldsAtMostPMinusS() {
        for (int p = 1; p <= 8; p++) {
            for (int m = 1; m <= 16; m++) {
                PipelineSchedule s = PipelineSchedule.build(ScheduleKind.ONE_F_ONE_B, p, 1, m);
                for (int stage = 0; stage < p; stage++) {
                    String where = "p=" + p + " m=" + m + " stage " + stage;
                    int warmup = Math.min(p - stage - 1, m);
                    assertEquals(warmup, OneFOneBSchedule.warmup(p, m, stage), where);
                    assertEquals(Math.min(warmup + 1, m), forwardsBeforeFirstBackward(s.program(stage)), where);
                    assertEquals(Math.min(p - stage, m), peakInFlight(s.program(stage)), where);
                }
            }
        }
    }

    @Test
    void gpipeHoldsAllMicroBatches() {
        PipelineSchedule s = PipelineSchedule.build(ScheduleKind.GPIPE, 4, 1, 8);
        for (int stage = 0; stage < 4; stage++) assertEquals(8, peakInFlight(s.program(stage)), "stage " + stage);
    }

    @Test
    void zbH1KeepsOneFOneBsWarmupAndPeakInFlight() {
        for (int p = 1; p <= 8; p++) {
            for (int m = 1; m <= 16; m++) {
                PipelineSchedule zb = PipelineSchedule.build(ScheduleKind.ZB_H1, p, 1, m);
                PipelineSchedule oneF = PipelineSchedule.build(ScheduleKind.ONE_F_ONE_B, p, 1, m);
                int zbPeak = 0;
                int oneFPeak = 0;
                for (int stage = 0; stage < p; stage++) {
                    String where = "p=" + p + " m=" + m + " stage " + stage;
                    assertEquals(forwardsBeforeFirstBackward(oneF.program(stage)), forwardsBeforeFirstBackward(zb.program(stage)), where);
                    zbPeak = Math.max(zbPeak, peakInFlight(zb.program(stage)));
                    oneFPeak = Math.max(oneFPeak, peakInFlight(oneF.program(stage)));
                }
                assertEquals(oneFPeak, zbPeak, "p=" + p + " m=" + m + ": peak micro-batches in flight over stages");
            }
        }
    }

    @Test
    void interleavedRefusesMicroBatchesNotAMultipleOfStagesNamingMPAndFix() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> PipelineSchedule.build(ScheduleKind.INTERLEAVED, 4, 2, 6));
        assertTrue(e.getMessage().contains("m=6") && e.getMessage().contains("p=4") && e.getMessage().contains("use m=4 or m=8"),
                e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> PipelineSchedule.build(ScheduleKind.INTERLEAVED, 1, 2, 4));
        assertTrue(e.getMessage().contains("p=1") && e.getMessage().contains("v=1"), e.getMessage());
    }

    @Test
    void oneChunkSchedulesRefuseSeveralChunksNamingInterleaved() {
        for (ScheduleKind kind : List.of(ScheduleKind.GPIPE, ScheduleKind.ONE_F_ONE_B, ScheduleKind.ZB_H1)) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> PipelineSchedule.build(kind, 4, 2, 8));
            assertTrue(e.getMessage().contains("v=2") && e.getMessage().contains("interleaved"), e.getMessage());
        }
    }

    @Test
    void tagsAreUniquePerKindMicroBatchAndReceivingChunkAndFitMpi() {
        PipelineSchedule s = PipelineSchedule.build(ScheduleKind.INTERLEAVED, 4, 3, 8);
        Set<String> sends = new HashSet<>();
        Set<String> receives = new HashSet<>();
        for (int stage = 0; stage < 4; stage++) {
            for (Instruction i : s.program(stage)) {
                Transfer t = Transfer.of(4, stage, i);
                if (t == null) continue;
                int tag = t.tag(3);
                assertTrue(tag >= 0 && tag < 2 * 8 * 3, "tag " + tag + " of " + i);
                boolean isSend = i instanceof Instruction.SendActivation || i instanceof Instruction.SendGradient;
                String key = t.fromStage() + ">" + t.toStage() + "#" + tag;
                assertTrue((isSend ? sends : receives).add(key), "tag used twice between the same stages: " + key + " " + i);
            }
        }
        assertEquals(sends, receives);
        assertThrows(IllegalArgumentException.class, () -> PipelineSchedule.build(ScheduleKind.INTERLEAVED, 2, 2, 8192));
    }

    private static int forwardsBeforeFirstBackward(List<Instruction> program) {
        int n = 0;
        for (Instruction i : program) {
            if (i instanceof Backward || i instanceof BackwardInput) return n;
            if (i instanceof Forward) n++;
        }
        return n;
    }

    /** Most micro-batch chunks between their Forward and the end of their backward (Backward, or BackwardWeight). */
    private static int peakInFlight(List<Instruction> program) {
        int alive = 0;
        int peak = 0;
        for (Instruction i : program) {
            if (i instanceof Forward) peak = Math.max(peak, ++alive);
            if (i instanceof Backward || i instanceof BackwardWeight) alive--;
        }
        return peak;
    }
}
