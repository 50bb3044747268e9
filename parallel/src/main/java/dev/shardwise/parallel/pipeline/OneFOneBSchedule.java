package dev.shardwise.parallel.pipeline;

import java.util.ArrayList;
import java.util.List;

/**
 * 1F1B, one forward one backward (PipeDream-Flush, Narayanan et al. 2021; Megatron's non-interleaved schedule):
 * stage s runs a warm-up of min(p − s − 1, m) forwards, then alternates one forward and one backward, then a
 * cool-down of the remaining backwards. Needs v = 1. At most min(p − s, m) micro-batches are alive on stage s
 * (p on stage 0), against m under GPipe; the bubble is the same. With p = 1 it is the single-rank step
 * F0 B0 F1 B1 ... Fm−1 Bm−1.
 *
 * <p>p = 4, m = 8, one slot per forward and per backward ({@code .} idle):
 * <pre>
 * stage 0:  F0  F1  F2  F3   .   .   .  B0  F4  B1  F5  B2  F6  B3  F7  B4   .  B5   .  B6   .  B7
 * stage 1:   .  F0  F1  F2   .   .  B0  F3  B1  F4  B2  F5  B3  F6  B4  F7  B5   .  B6   .  B7   .
 * stage 2:   .   .  F0  F1   .  B0  F2  B1  F3  B2  F4  B3  F5  B4  F6  B5  F7  B6   .  B7   .   .
 * stage 3:   .   .   .  F0  B0  F1  B1  F2  B2  F3  B3  F4  B4  F5  B5  F6  B6  F7  B7   .   .   .
 * </pre>
 *
 * <p>Bubble (p−1)/(m+p−1), as GPipe's. The last stage (warm-up 0) starts at (p−1)·tF and then runs
 * F0 B0 F1 B1 ... without waiting: the forward it needs next left stage p−2 while it ran its previous pair. It ends
 * at (p−1)·tF + m(tF + tB); the last gradient then crosses p−1 stages back at tB each, so the step takes
 * T = (m+p−1)(tF + tB) of which each stage computes m(tF + tB). On stage 0 the idle shows as (p−1)·tB while the
 * first gradient comes back (after its p forwards) and (p−1)·tF spread over the cool-down.
 */
final class OneFOneBSchedule {
    private OneFOneBSchedule() { }

    /** Forwards stage {@code stage} runs before its first backward: min(p − s − 1, m). */
    static int warmup(int p, int m, int stage) {
        return Math.min(p - stage - 1, m);
    }

    static List<List<Instruction>> programs(int p, int v, int m) {
        List<List<Instruction>> programs = new ArrayList<>(p);
        for (int stage = 0; stage < p; stage++) {
            int warmup = warmup(p, m, stage);
            int steady = m - warmup;
            List<Instruction> order = new ArrayList<>(2 * m);
            // Warm-up: fill the pipeline with forwards.
            for (int mb = 0; mb < warmup; mb++) order.add(new Instruction.Forward(mb, 0));
            // Steady state: one forward, one backward (the backward of the oldest micro-batch in flight).
            for (int i = 0; i < steady; i++) {
                order.add(new Instruction.Forward(warmup + i, 0));
                order.add(new Instruction.Backward(i, 0));
            }
            // Cool-down: drain the backwards of the micro-batches still in flight.
            for (int mb = steady; mb < m; mb++) order.add(new Instruction.Backward(mb, 0));
            programs.add(StageProgram.of(p, v, stage, order));
        }
        return programs;
    }
}
