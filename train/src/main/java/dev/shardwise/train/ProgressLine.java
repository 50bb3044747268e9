package dev.shardwise.train;

import dev.shardwise.core.memory.MemoryPool;

import java.io.PrintStream;
import java.util.Locale;

/**
 * The live line of a run: step, loss, learning rate, tokens/s, MFU, peak memory, ETA. On a terminal it rewrites
 * itself in place; otherwise (logs, CI) it prints a line about every 10 seconds, at validation steps and at the end.
 */
final class ProgressLine {
    /** Steps left out of the ETA while the JIT warms up. */
    private static final int WARMUP_STEPS = 2;

    private final PrintStream out;
    private final long totalSteps;
    private final boolean terminal = System.console() != null;
    private long lastPrintNanos;
    private double smoothedStepSeconds = Double.NaN;

    ProgressLine(PrintStream out, long totalSteps) {
        this.out = out;
        this.totalSteps = totalSteps;
    }

    void update(long step, double loss, double lr, double tokensPerSecond, double mfu, long memBytes, double stepSeconds,
                double valLoss) {
        // The first steps run before the JIT has compiled the kernels: leave them out of the ETA.
        if (step > WARMUP_STEPS) {
            smoothedStepSeconds = Double.isNaN(smoothedStepSeconds) ? stepSeconds : 0.9 * smoothedStepSeconds + 0.1 * stepSeconds;
        }
        long remaining = (long) ((totalSteps - step) * smoothedStepSeconds);
        String eta = Double.isNaN(smoothedStepSeconds) ? "--" : String.format(Locale.ROOT, "%dm%02ds", remaining / 60, remaining % 60);
        String line = String.format(Locale.ROOT,
                "step %d/%d | loss %.4f%s | lr %.2e | %,.0f tok/s | MFU %.1f%% | mem %s | ETA %s",
                step, totalSteps, loss, Double.isNaN(valLoss) ? "" : String.format(Locale.ROOT, " | val %.4f", valLoss),
                lr, tokensPerSecond, 100 * mfu, MemoryPool.formatBytes(memBytes), eta);
        long now = System.nanoTime();
        boolean important = !Double.isNaN(valLoss) || step == totalSteps || step == 1;
        if (terminal) {
            out.print("\r" + line + (important && !Double.isNaN(valLoss) ? "\n" : "   "));
            out.flush();
        } else if (important || now - lastPrintNanos > 10_000_000_000L) {
            out.println(line);
            lastPrintNanos = now;
        }
    }

    void finish() {
        if (terminal) out.println();
    }
}
