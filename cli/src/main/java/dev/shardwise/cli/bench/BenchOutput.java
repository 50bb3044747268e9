package dev.shardwise.cli.bench;

import java.io.PrintStream;
import java.util.Locale;

/** Prints benchmark rows as they are measured: an aligned table for people, or JSON lines with --json. */
public final class BenchOutput {
    private final PrintStream out;
    private final boolean json;
    private boolean headerPrinted;

    public BenchOutput(PrintStream out, boolean json) {
        this.out = out;
        this.json = json;
    }

    public boolean json() { return json; }

    /** A line of context (machine, peak) before the table; omitted in JSON mode. */
    public void info(String line) {
        if (!json) out.println(line);
    }

    public void row(BenchRow row) {
        if (json) {
            out.println(row.toJson());
        } else {
            if (!headerPrinted) {
                out.printf(Locale.ROOT, "%-44s %12s %-8s %12s %-9s %7s %6s  %s%n",
                        "case", "value", "unit", "peer", "", "ratio", "peak", "note");
                headerPrinted = true;
            }
            out.printf(Locale.ROOT, "%-44s %12.2f %-8s %12s %-9s %7s %6s  %s%n",
                    row.caseName(), row.value(), row.unit(),
                    row.peer() == null ? "" : String.format(Locale.ROOT, "%.2f", row.peerValue()),
                    row.peer() == null ? "" : row.peer(),
                    row.peer() == null ? "" : String.format(Locale.ROOT, "%.3fx", row.ratio()),
                    Double.isNaN(row.peakFraction()) ? "" : String.format(Locale.ROOT, "%.0f%%", 100 * row.peakFraction()),
                    row.note() == null ? "" : row.note());
        }
        out.flush();
    }
}
