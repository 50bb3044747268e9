package dev.shardwise.train;

import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.memory.ProcessMemory;

import java.io.PrintStream;
import java.util.Locale;
import java.util.Optional;

/**
 * The live line of a run: step, loss, learning rate, tokens/s, MFU, peak memory, ETA. On a terminal it rewrites
 * itself in place; otherwise (logs, CI) it prints a line about every 10 seconds, at validation steps and at the end.
 */
final class ProgressLine {
    /** Steps left out of the ETA while the JIT warms up. */
    private static final int WARMUP_STEPS = 2;

    private final PrintStream out;
    private final long totalSteps;
    /** In place on a terminal, or when {@code SHARDWISE_PROGRESS=inline} (set by {@code shardwise launch} for rank 0 to draw the job's line). */
    private final boolean terminal = System.console() != null || "inline".equals(System.getenv("SHARDWISE_PROGRESS"));
    private boolean lineOpen;   // an in-place line is on screen without its newline yet
    private long lastPrintNanos;
    private double smoothedStepSeconds = Double.NaN;

    ProgressLine(PrintStream out, long totalSteps) {
        this.out = out;
        this.totalSteps = totalSteps;
    }

    void update(long step, double loss, double lr, double tokensPerSecond, double mfu, MemoryPool memory,
                Optional<ProcessMemory> process, double stepSeconds, double valLoss, double bubble) {
        update(step, loss, lr, tokensPerSecond, mfu, memory, process, stepSeconds, valLoss, bubble, null);
    }

    /** As above, with the step's expert load and auxiliary loss after the loss when {@code moe} is not null. */
    void update(long step, double loss, double lr, double tokensPerSecond, double mfu, MemoryPool memory,
                Optional<ProcessMemory> process, double stepSeconds, double valLoss, double bubble, MoeReport moe) {
        // The first steps run before the JIT has compiled the kernels: leave them out of the ETA.
        if (step > WARMUP_STEPS) {
            smoothedStepSeconds = Double.isNaN(smoothedStepSeconds) ? stepSeconds : 0.9 * smoothedStepSeconds + 0.1 * stepSeconds;
        }
        long remaining = (long) ((totalSteps - step) * smoothedStepSeconds);
        String eta = Double.isNaN(smoothedStepSeconds) ? "--" : String.format(Locale.ROOT, "%dm%02ds", remaining / 60, remaining % 60);
        String line = String.format(Locale.ROOT,
                "step %d/%d | loss %.4f%s%s | lr %.2e | %,.0f tok/s | MFU %.1f%%%s | mem %s | ETA %s",
                step, totalSteps, loss, Double.isNaN(valLoss) ? "" : String.format(Locale.ROOT, " | val %.4f", valLoss),
                moe == null ? "" : String.format(Locale.ROOT, " | aux %.4f | experts max/mean %.2f%s", moe.auxLoss(), moe.maxOverMean(),
                        moe.dropped() > 0 ? String.format(Locale.ROOT, " dropped %,.0f", moe.dropped()) : ""),
                lr, tokensPerSecond, 100 * mfu, Double.isNaN(bubble) ? "" : String.format(Locale.ROOT, " | bubble %.0f%%", 100 * bubble),
                memory(memory, process), eta);
        long now = System.nanoTime();
        boolean important = !Double.isNaN(valLoss) || step == totalSteps || step == 1;
        if (terminal) {
            lineOpen = Double.isNaN(valLoss);   // a validation step ends its line, so it stays on screen
            out.print("\r" + line + (lineOpen ? "   " : "\n"));
            out.flush();
        } else if (important || now - lastPrintNanos > 10_000_000_000L) {
            out.println(line);
            lastPrintNanos = now;
        }
    }

    /**
     * Peak bytes of the step, then by category, then the process's resident memory where the OS reports it:
     * {@code 425.5 MiB (params 20M grads 20M optim 41M act 330M buf 14M) | rss 612.0 MiB}.
     */
    private static String memory(MemoryPool pool, Optional<ProcessMemory> process) {
        StringBuilder sb = new StringBuilder(MemoryPool.formatBytes(pool.peakBytes())).append(" (");
        for (MemoryCategory c : MemoryCategory.values()) {
            String name = switch (c) {
                case PARAMETERS -> "params";
                case GRADIENTS -> "grads";
                case OPTIMIZER_STATE -> "optim";
                case ACTIVATIONS -> "act";
                case BUFFERS -> "buf";
            };
            sb.append(c.ordinal() == 0 ? "" : " ").append(name).append(' ')
                    .append(Math.round(pool.peakBytes(c) / 1048576.0)).append('M');
        }
        sb.append(')');
        process.ifPresent(m -> sb.append(" | rss ").append(MemoryPool.formatBytes(m.residentBytes())));
        return sb.toString();
    }

    void finish() {
        if (terminal && lineOpen) out.println();
        lineOpen = false;
    }
}
