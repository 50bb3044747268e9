package dev.shardwise.parallel.pipeline;

import java.util.ArrayList;
import java.util.List;

/**
 * GPipe (Huang et al. 2019): every stage runs all m forwards, then all m backwards. Backwards run in micro-batch
 * order 0..m−1, so gradients accumulate in the same order as under 1F1B and a single rank. Needs v = 1. All m
 * micro-batches' activations are alive at once on every stage, m/p times 1F1B's peak on stage 0.
 *
 * <p>p = 4, m = 4, one slot per forward and per backward ({@code .} idle):
 * <pre>
 * stage 0:  F0  F1  F2  F3   .   .   .   .   .   .  B0  B1  B2  B3
 * stage 1:   .  F0  F1  F2  F3   .   .   .   .  B0  B1  B2  B3   .
 * stage 2:   .   .  F0  F1  F2  F3   .   .  B0  B1  B2  B3   .   .
 * stage 3:   .   .   .  F0  F1  F2  F3  B0  B1  B2  B3   .   .   .
 * </pre>
 *
 * <p>Bubble (p−1)/(m+p−1). The last stage starts at (p−1)·tF, when micro-batch 0 has crossed the others, and
 * from then on never waits: its inputs arrive one per tF, and its backwards need only its own forwards. It ends at
 * (p−1)·tF + m(tF + tB); the gradient of micro-batch m−1 then crosses p−1 stages back, each of which has finished
 * its other backwards, so stage 0 ends at T = (m+p−1)(tF + tB). Each stage computes m(tF + tB) of it: the idle
 * fraction is (p−1)(tF + tB) / T = (p−1)/(m+p−1), whatever tF and tB.
 */
final class GPipeSchedule {
    private GPipeSchedule() { }

    static List<List<Instruction>> programs(int p, int v, int m) {
        List<List<Instruction>> programs = new ArrayList<>(p);
        for (int stage = 0; stage < p; stage++) {
            List<Instruction> order = new ArrayList<>(2 * m);
            for (int mb = 0; mb < m; mb++) order.add(new Instruction.Forward(mb, 0));
            for (int mb = 0; mb < m; mb++) order.add(new Instruction.Backward(mb, 0));
            programs.add(StageProgram.of(p, v, stage, order));
        }
        return programs;
    }
}
