package dev.shardwise.parallel.pipeline;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.function.ToDoubleFunction;

/**
 * Runs all stages of a schedule together, in one thread, with the semantics of the executor: a send never
 * blocks, a receive waits until its matching send has run, every other instruction takes its given duration.
 * The validator runs it to find unmatched transfers and deadlocks; tests and the planner run it with costs to get
 * each stage's busy and finish times. Pure: it never blocks and never hangs (each round advances a stage or ends).
 *
 * <p>Times of a stage: instruction i starts at max(end of i − 1, arrival of its message) and ends after its
 * duration; a message arrives when its send ends.
 */
final class ScheduleSimulation {
    private ScheduleSimulation() { }

    /**
     * What the simulation found.
     *
     * @param start  per stage, per instruction: its start time
     * @param end    per stage, per instruction: its end time
     * @param busy   per stage: total duration of its instructions
     * @param finish per stage: end of its last instruction
     */
    record Result(double[][] start, double[][] end, double[] busy, double[] finish) {
        /** Latest finish over the stages: the step time. */
        double makespan() {
            double max = 0;
            for (double f : finish) max = Math.max(max, f);
            return max;
        }
    }

    /** A send that has run: who sent it, at which instruction, and when it arrives. */
    private record Sent(int stage, int index, double arrival) { }

    /**
     * Simulates {@code schedule} with {@code duration} per instruction.
     *
     * @throws IllegalArgumentException naming stage, instruction and micro-batch: a receive no stage ever sends
     *                                  (the sender finished), receives that wait on each other in a cycle
     *                                  (deadlock), a transfer sent twice before it is received, or a send nobody
     *                                  receives
     */
    static Result run(PipelineSchedule schedule, ToDoubleFunction<Instruction> duration) {
        return run(schedule, (stage, instruction) -> duration.applyAsDouble(instruction));
    }

    /** As {@link #run(PipelineSchedule, ToDoubleFunction)}, with a duration that may depend on the stage. */
    static Result run(PipelineSchedule schedule, PipelineSchedule.StageCost duration) {
        int p = schedule.stages();
        double[][] start = new double[p][];
        double[][] end = new double[p][];
        for (int s = 0; s < p; s++) {
            start[s] = new double[schedule.program(s).size()];
            end[s] = new double[schedule.program(s).size()];
        }
        double[] clock = new double[p];
        double[] busy = new double[p];
        int[] next = new int[p];
        Map<Transfer, Sent> inFlight = new LinkedHashMap<>();
        boolean progressed = true;
        while (progressed) {
            progressed = false;
            for (int s = 0; s < p; s++) {
                List<Instruction> program = schedule.program(s);
                while (next[s] < program.size()) {
                    int i = next[s];
                    Instruction instruction = program.get(i);
                    Transfer transfer = Transfer.of(p, s, instruction);
                    double begin = clock[s];
                    if (transfer != null && transfer.toStage() == s && isReceive(instruction)) {
                        Sent sent = inFlight.remove(transfer);
                        if (sent == null) break;   // blocked until the sender gets there
                        begin = Math.max(begin, sent.arrival);
                    }
                    double d = duration.duration(s, instruction);
                    start[s][i] = begin;
                    end[s][i] = begin + d;
                    clock[s] = begin + d;
                    busy[s] += d;
                    if (transfer != null && !isReceive(instruction)) {
                        Sent earlier = inFlight.put(transfer, new Sent(s, i, clock[s]));
                        if (earlier != null) {
                            throw new IllegalArgumentException(ScheduleValidator.where(s, i, instruction) + ": sends the "
                                    + transfer.describe() + " again before it is received (first sent at instruction "
                                    + earlier.index + "); send each transfer once");
                        }
                    }
                    next[s]++;
                    progressed = true;
                }
            }
        }
        for (int s = 0; s < p; s++) {
            if (next[s] < schedule.program(s).size()) throw stalled(schedule, next);
        }
        if (!inFlight.isEmpty()) {
            Map.Entry<Transfer, Sent> e = inFlight.entrySet().iterator().next();
            Sent sent = e.getValue();
            throw new IllegalArgumentException(ScheduleValidator.where(sent.stage, sent.index,
                    schedule.program(sent.stage).get(sent.index)) + ": sends the " + e.getKey().describe()
                    + " but stage " + e.getKey().toStage() + " never receives it; add the matching receive there");
        }
        double[] finish = new double[p];
        for (int s = 0; s < p; s++) finish[s] = clock[s];
        return new Result(start, end, busy, finish);
    }

    private static boolean isReceive(Instruction instruction) {
        return instruction instanceof Instruction.ReceiveActivation || instruction instanceof Instruction.ReceiveGradient;
    }

    /**
     * Why no stage can move: every unfinished stage waits in a receive. Following "waits for" from the first such
     * stage ends either at a stage that finished without sending (a receive with no send) or in a cycle (a
     * deadlock), which is reported whole.
     */
    private static IllegalArgumentException stalled(PipelineSchedule schedule, int[] next) {
        int p = schedule.stages();
        int first = 0;
        while (next[first] >= schedule.program(first).size()) first++;
        Map<Integer, Integer> seenAt = new HashMap<>();
        List<Integer> chain = new ArrayList<>();
        int s = first;
        while (!seenAt.containsKey(s)) {
            seenAt.put(s, chain.size());
            chain.add(s);
            Transfer waited = Transfer.of(p, s, schedule.program(s).get(next[s]));
            int sender = waited.fromStage();
            if (next[sender] >= schedule.program(sender).size()) {
                return new IllegalArgumentException(ScheduleValidator.where(s, next[s], schedule.program(s).get(next[s]))
                        + ": receives the " + waited.describe() + ", but stage " + sender
                        + " finished its list without sending it; add the matching send on stage " + sender);
            }
            s = sender;
        }
        List<Integer> cycle = chain.subList(seenAt.get(s), chain.size());
        StringBuilder message = new StringBuilder("deadlock, receives wait on each other in a cycle: ");
        for (int k = 0; k < cycle.size(); k++) {
            int stage = cycle.get(k);
            Instruction waiting = schedule.program(stage).get(next[stage]);
            if (k > 0) message.append("; ");
            message.append(ScheduleValidator.where(stage, next[stage], waiting)).append(" waits for stage ")
                    .append(Transfer.of(p, stage, waiting).fromStage());
        }
        message.append(". Each of these stages must send what the next one waits for before it receives; move a send"
                + " earlier or a receive later");
        return new IllegalArgumentException(message.toString());
    }
}
