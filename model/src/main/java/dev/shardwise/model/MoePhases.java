package dev.shardwise.model;

import java.util.Locale;

/**
 * Per-phase timers of the mixture-of-experts blocks (as Megatron's timers break a step down): wall time per phase of
 * the blocks' forwards and backwards, summed over the passes since {@link #reset}, and how busy the expert tiles kept
 * the compute pool's threads. Off unless a caller asks ({@link MoeRun#timePhases}), so training pays nothing; for
 * {@code bench kernels}, to show where an MoE block's time goes beside the dense MLP's. Not thread-safe: one rank's
 * training thread.
 */
public final class MoePhases {
    /** The phases of one block, in the order they run. */
    public enum Phase {
        ROUTE("route"), DISPATCH("dispatch"), EXPERTS("experts"), COMBINE("combine"), EXPERTS_BACKWARD("experts bwd"),
        EXPERT_WEIGHTS("expert dW"), ROUTER_BACKWARD("router bwd"), SCATTER_ADD("scatter-add");

        private final String label;

        Phase(String label) { this.label = label; }

        public String label() { return label; }
    }

    /** Timers that record nothing (the default of a run). */
    static final MoePhases OFF = new MoePhases(false);

    private final boolean on;
    private final long[] nanos = new long[Phase.values().length];
    private long tileWall, tileBusy;
    private int passes;

    private MoePhases(boolean on) {
        this.on = on;
    }

    /** Timers that record. */
    static MoePhases recording() {
        return new MoePhases(true);
    }

    /** Whether these timers record. */
    boolean on() {
        return on;
    }

    /** The time now to lap from, when recording (else 0). */
    long start() {
        return on ? System.nanoTime() : 0;
    }

    /** Adds the time since {@code since} to {@code phase} and returns the time now (when recording). */
    long lap(Phase phase, long since) {
        if (!on) return 0;
        long now = System.nanoTime();
        nanos[phase.ordinal()] += now - since;
        return now;
    }

    /** Adds one run of an expert tile list: its wall time and the thread time its tiles were running. */
    void tiles(long wallNanos, long busyNanos) {
        if (!on) return;
        tileWall += wallNanos;
        tileBusy += busyNanos;
    }

    /** Counts a forward and backward of one block (what {@link #millis} divides by). */
    void pass() {
        if (on) passes++;
    }

    /** Milliseconds of {@code phase} per forward and backward of a block. */
    public double millis(Phase phase) {
        return passes == 0 ? 0 : nanos[phase.ordinal()] / 1e6 / passes;
    }

    /** Milliseconds of every phase per forward and backward of a block. */
    public double totalMillis() {
        double sum = 0;
        for (Phase p : Phase.values()) sum += millis(p);
        return sum;
    }

    /** The fraction of the tile lists' wall time that {@code threads} threads spent running tiles (1: none idle). */
    public double tileBusyFraction(int threads) {
        return tileWall == 0 ? 0 : (double) tileBusy / ((double) tileWall * threads);
    }

    /** One line: each phase's milliseconds per forward and backward. */
    public String summary() {
        StringBuilder sb = new StringBuilder();
        for (Phase p : Phase.values()) {
            if (!sb.isEmpty()) sb.append(", ");
            sb.append(String.format(Locale.ROOT, "%s %.2f", p.label(), millis(p)));
        }
        return sb.toString();
    }

    /** Forgets what was recorded. */
    public void reset() {
        java.util.Arrays.fill(nanos, 0);
        tileWall = 0;
        tileBusy = 0;
        passes = 0;
    }
}
