package dev.shardwise.parallel.pipeline;

import java.util.Arrays;
import java.util.List;

/**
 * Draws a schedule as the builders' Javadoc shows it: one row per stage, one column per time slot, every compute
 * instruction (Forward, Backward, BackwardInput, BackwardWeight) one slot long and transfers free, as the
 * simulation places them. A cell reads F3 (forward of micro-batch 3), B3, W3; with v > 1 chunks it reads F3.1
 * (micro-batch 3, chunk 1); a dot is idle.
 */
final class ScheduleTable {
    private ScheduleTable() { }

    static String of(PipelineSchedule schedule) {
        ScheduleSimulation.Result r = ScheduleSimulation.run(schedule, i -> isCompute(i) ? 1.0 : 0.0);
        int slots = (int) Math.round(r.makespan());
        int width = schedule.chunks() > 1 ? 4 : 3;
        StringBuilder out = new StringBuilder();
        for (int s = 0; s < schedule.stages(); s++) {
            String[] cells = new String[slots];
            Arrays.fill(cells, ".");
            List<Instruction> program = schedule.program(s);
            for (int i = 0; i < program.size(); i++) {
                String label = label(program.get(i), schedule.chunks());
                if (label != null) cells[(int) Math.round(r.start()[s][i])] = label;
            }
            out.append("stage ").append(s).append(':');
            for (String c : cells) out.append(' ').append(" ".repeat(Math.max(0, width - c.length()))).append(c);
            out.append('\n');
        }
        return out.toString();
    }

    private static boolean isCompute(Instruction i) {
        return label(i, 1) != null;
    }

    private static String label(Instruction instruction, int v) {
        return switch (instruction) {
            case Instruction.Forward f -> "F" + cell(f.mb(), f.chunk(), v);
            case Instruction.Backward b -> "B" + cell(b.mb(), b.chunk(), v);
            case Instruction.BackwardInput b -> "B" + cell(b.mb(), b.chunk(), v);
            case Instruction.BackwardWeight w -> "W" + cell(w.mb(), w.chunk(), v);
            default -> null;
        };
    }

    private static String cell(int mb, int chunk, int v) {
        return v > 1 ? mb + "." + chunk : Integer.toString(mb);
    }
}
