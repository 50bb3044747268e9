package dev.shardwise.parallel.pipeline;

import java.util.Arrays;
import java.util.stream.Collectors;

/**
 * The pipeline schedules Shardwise can run, as {@code --schedule} and the YAML key {@code schedule} name them.
 * Each has one builder that turns (stages, chunks, micro-batches) into per-stage instruction lists.
 */
public enum ScheduleKind {
    /** All forwards, then all backwards (Huang et al. 2019): all m micro-batches' activations alive at once. */
    GPIPE("gpipe"),
    /** One forward one backward (PipeDream-Flush, Narayanan et al. 2021): at most p micro-batches alive per stage. */
    ONE_F_ONE_B("1f1b"),
    /** Interleaved 1F1B over v model chunks per stage (Narayanan et al. 2021): the bubble shrinks by v. */
    INTERLEAVED("interleaved"),
    /** Zero-bubble ZB-H1 (Qi et al. 2023): backward split into input- and weight-gradient halves at 1F1B's memory. */
    ZB_H1("zb-h1");

    private final String flag;

    ScheduleKind(String flag) {
        this.flag = flag;
    }

    /**
     * The schedule named {@code text} as {@code --schedule} spells it ({@code gpipe}, {@code 1f1b},
     * {@code interleaved}, {@code zb-h1}; any case).
     *
     * @throws IllegalArgumentException naming the valid names
     */
    public static ScheduleKind parse(String text) {
        for (ScheduleKind k : values()) {
            if (k.flag.equalsIgnoreCase(text.strip())) return k;
        }
        throw new IllegalArgumentException("schedule='" + text + "' is not a pipeline schedule; use one of "
                + Arrays.stream(values()).map(ScheduleKind::toString).collect(Collectors.joining(", ")));
    }

    /** The default for a layout: interleaved when there are several chunks per stage, else 1F1B. */
    public static ScheduleKind defaultFor(int vpp) {
        return vpp > 1 ? INTERLEAVED : ONE_F_ONE_B;
    }

    /** The name as flags and configs spell it. */
    @Override
    public String toString() {
        return flag;
    }
}
