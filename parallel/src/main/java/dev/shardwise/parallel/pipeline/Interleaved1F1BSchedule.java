package dev.shardwise.parallel.pipeline;

import java.util.ArrayList;
import java.util.List;

/**
 * Interleaved 1F1B (Narayanan et al. 2021; Megatron's interleaved schedule): each stage holds v model chunks
 * (chunk c of stage s is part c·p + s) and runs 1F1B over v·m "virtual" micro-batches k, taken in groups of p
 * micro-batches per chunk: forward k is micro-batch (k / (p·v))·p + k mod p on chunk (k mod p·v) / p; backward k
 * is the same micro-batch on chunk v − 1 − (k mod p·v) / p. Stage s warms up with min((p − s − 1)·2 + (v − 1)·p,
 * v·m) forwards (Megatron's count), then alternates forward warm-up + i and backward i, then cools down. Needs m a
 * multiple of p (the groups) and p ≥ 2; with v = 1 there is nothing to interleave and it is 1F1B.
 *
 * <p>Lookup for p = 2, v = 2, m = 4 (micro-batch.chunk of the k-th forward and backward):
 * <pre>
 * k         0   1   2   3   4   5   6   7
 * forward  0.0 1.0 0.1 1.1 2.0 3.0 2.1 3.1
 * backward 0.1 1.1 0.0 1.0 2.1 3.1 2.0 3.0
 * </pre>
 * and its schedule, one slot per chunk forward and per chunk backward ({@code .} idle):
 * <pre>
 * stage 0: F0.0 F1.0 F0.1 F1.1 F2.0 B0.1 F3.0 B1.1 F2.1 B0.0 F3.1 B1.0    . B2.1    . B3.1 B2.0 B3.0
 * stage 1:    . F0.0 F1.0 F0.1 B0.1 F1.1 B1.1 F2.0 B0.0 F3.0 B1.0 F2.1 B2.1 F3.1 B3.1 B2.0 B3.0    .
 * </pre>
 *
 * <p>Bubble (p−1)/(v·m+p−1). A chunk's forward takes tF/v and its backward tB/v, so a stage still computes
 * m(tF + tB) per step, but the pipeline now fills and drains through p−1 chunk-sized steps instead of p−1
 * stage-sized ones: as in 1F1B the idle per stage is (p−1) slots of one forward and one backward, now
 * (p−1)(tF + tB)/v, and the idle fraction is ((p−1)(tF + tB)/v) / (m(tF + tB) + (p−1)(tF + tB)/v) =
 * (p−1)/(v·m+p−1). The price: more micro-batch chunks alive on stage 0 (warm-up + 1 chunks of 1/v the size,
 * (2p − 1 + (v−1)·p)/v stage-equivalents against 1F1B's p) and v times more transfers.
 */
final class Interleaved1F1BSchedule {
    private Interleaved1F1BSchedule() { }

    /** Forwards stage {@code stage} runs before its first backward: min((p − s − 1)·2 + (v − 1)·p, v·m). */
    static int warmup(int p, int v, int m, int stage) {
        return Math.min((p - stage - 1) * 2 + (v - 1) * p, v * m);
    }

    /** Chunk of the k-th forward: k runs through groups of p micro-batches per chunk, chunks 0..v−1. */
    static int forwardChunk(int p, int v, int k) {
        return (k % (p * v)) / p;
    }

    /** Chunk of the k-th backward: the same groups as forward, chunks v−1..0. */
    static int backwardChunk(int p, int v, int k) {
        return v - 1 - forwardChunk(p, v, k);
    }

    /** Micro-batch of the k-th forward or backward: group k / (p·v) covers micro-batches [group·p, group·p + p). */
    static int microBatch(int p, int v, int k) {
        return (k / (p * v)) * p + k % p;
    }

    static List<List<Instruction>> programs(int p, int v, int m) {
        if (v == 1) return OneFOneBSchedule.programs(p, 1, m);
        if (p < 2) {
            throw new IllegalArgumentException("schedule interleaved with v=" + v + " chunks needs p >= 2 stages, got p="
                    + p + "; use v=1 (one stage holds the whole model)");
        }
        if (m % p != 0) {
            int lower = m / p * p;
            throw new IllegalArgumentException("schedule interleaved needs micro-batches m=" + m + " to be a multiple of stages p="
                    + p + " (it runs groups of p micro-batches through each chunk); use m="
                    + (lower > 0 ? lower + " or m=" : "") + (lower + p) + ", or schedule 1f1b");
        }
        int total = v * m;
        List<List<Instruction>> programs = new ArrayList<>(p);
        for (int stage = 0; stage < p; stage++) {
            int warmup = warmup(p, v, m, stage);
            int steady = total - warmup;
            List<Instruction> order = new ArrayList<>(2 * total);
            // Warm-up: forwards k = 0 .. warmup-1.
            for (int k = 0; k < warmup; k++) order.add(forward(p, v, k));
            // Steady state: forward k = warmup + i, then backward i.
            for (int i = 0; i < steady; i++) {
                order.add(forward(p, v, warmup + i));
                order.add(backward(p, v, i));
            }
            // Cool-down: the backwards still owed.
            for (int k = steady; k < total; k++) order.add(backward(p, v, k));
            programs.add(StageProgram.of(p, v, stage, order));
        }
        return programs;
    }

    private static Instruction forward(int p, int v, int k) {
        return new Instruction.Forward(microBatch(p, v, k), forwardChunk(p, v, k));
    }

    private static Instruction backward(int p, int v, int k) {
        return new Instruction.Backward(microBatch(p, v, k), backwardChunk(p, v, k));
    }
}
