package dev.shardwise.parallel.pipeline;

import java.util.ArrayList;
import java.util.List;

/**
 * ZB-H1, the handcrafted schedule H1 of "Zero Bubble Pipeline Parallelism" (Qi et al. 2023): backward is split
 * into B (BackwardInput, the gradient the previous stage waits for) and W (BackwardWeight, needed by nobody until
 * the optimizer), and the W's are deferred into the slots where 1F1B waits. Needs v = 1. Stage s runs, for slot
 * x = 0 .. m+p−2, F x, then B x−(p−1−s), then W x−(p−1), each when its index is in [0, m). So the warm-up is
 * 1F1B's p − s − 1 forwards and the last stage runs B right behind its F (the gradient leaves at once). Every
 * stage holds up to min(p, m) micro-batches between their F and their W: the peak of 1F1B, which 1F1B reaches on
 * stage 0 only. With p = 1 it is F0 B0 W0 F1 B1 W1 ...
 *
 * <p>p = 4, m = 8, one slot per F, B and W ({@code .} idle):
 * <pre>
 * stage 0:  F0  F1  F2  F3   .   .   .  B0  W0  F4  B1  W1  F5  B2  W2  F6  B3  W3  F7  B4  W4  B5  W5  B6  W6  B7  W7
 * stage 1:   .  F0  F1  F2   .   .  B0  F3  B1  W0  F4  B2  W1  F5  B3  W2  F6  B4  W3  F7  B5  W4  B6  W5  B7  W6  W7
 * stage 2:   .   .  F0  F1   .  B0  F2  B1  F3  B2  W0  F4  B3  W1  F5  B4  W2  F6  B5  W3  F7  B6  W4  B7  W5  W6  W7
 * stage 3:   .   .   .  F0  B0  F1  B1  F2  B2  F3  B3  W0  F4  B4  W1  F5  B5  W2  F6  B6  W3  F7  B7  W4  W5  W6  W7
 * </pre>
 * 1F1B at the same unit times (its backward takes tB + tW = 2 slots) takes 33 slots; this takes 27.
 *
 * <p>Bubble. Stage 0 runs its p forwards (the memory cap), then waits for micro-batch 0's gradient to come back
 * through p−1 input-gradient halves: (p−1)·tB idle that no W can fill, since none of its B's has run. From then on
 * the deferred W's fill the slots where 1F1B would wait for the next gradient, except (p−1)·max(0, tF − tW) when a
 * W is shorter than the forward whose place it takes. The idle per stage is (p−1)(tB + max(0, tF − tW)) — the
 * paper's (p−1)(tF + tB − tW) when tW ≤ tF — against 1F1B's (p−1)(tF + tB + tW), each stage computes
 * m(tF + tB + tW), and the bubble is idle / (m(tF + tB + tW) + idle), for m ≥ p (with fewer micro-batches there
 * are not enough W's to defer). With tF = tB = tW: (p−1)/(3m + p − 1), a third of 1F1B's idle time.
 */
final class ZbH1Schedule {
    private ZbH1Schedule() { }

    static List<List<Instruction>> programs(int p, int v, int m) {
        List<List<Instruction>> programs = new ArrayList<>(p);
        for (int stage = 0; stage < p; stage++) {
            List<Instruction> order = new ArrayList<>(3 * m);
            // Slot x runs F x, B x-(p-1-s), W x-(p-1), each when its index is in [0, m).
            for (int x = 0; x < m + p - 1; x++) {
                if (x < m) order.add(new Instruction.Forward(x, 0));
                int b = x - (p - 1 - stage);
                if (b >= 0 && b < m) order.add(new Instruction.BackwardInput(b, 0));
                int w = x - (p - 1);
                if (w >= 0 && w < m) order.add(new Instruction.BackwardWeight(w, 0));
            }
            programs.add(StageProgram.of(p, v, stage, order));
        }
        return programs;
    }
}
