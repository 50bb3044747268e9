package dev.shardwise.cli.bench;

import java.util.Locale;

/**
 * One benchmark result, printed as a table row or as the JSON line of ARCHITECTURE.md's conventions:
 * {@code {"bench", "case", "value", "unit", "peer", "peer_value", "ratio"}} (peer fields only when a peer ran),
 * plus {@code "peak_fraction"} when the value is compared with the machine's peak.
 *
 * @param peer         the peer's name, or null when none was measured
 * @param peerValue    the peer's value in the same unit (NaN when no peer)
 * @param peakFraction value / machine peak (NaN when not applicable)
 */
public record BenchRow(String bench, String caseName, double value, String unit,
                       String peer, double peerValue, double peakFraction, String note) {

    /** A row without a peer. */
    public static BenchRow alone(String bench, String caseName, double value, String unit, double peakFraction, String note) {
        return new BenchRow(bench, caseName, value, unit, null, Double.NaN, peakFraction, note);
    }

    /** value / peerValue, or NaN when there is no peer. */
    public double ratio() {
        return peer == null ? Double.NaN : value / peerValue;
    }

    public String toJson() {
        StringBuilder sb = new StringBuilder("{");
        sb.append("\"bench\":").append(quote(bench));
        sb.append(",\"case\":").append(quote(caseName));
        sb.append(",\"value\":").append(number(value));
        sb.append(",\"unit\":").append(quote(unit));
        if (peer != null) {
            sb.append(",\"peer\":").append(quote(peer));
            sb.append(",\"peer_value\":").append(number(peerValue));
            sb.append(",\"ratio\":").append(number(ratio()));
        }
        if (!Double.isNaN(peakFraction)) sb.append(",\"peak_fraction\":").append(number(peakFraction));
        if (note != null && !note.isEmpty()) sb.append(",\"note\":").append(quote(note));
        return sb.append('}').toString();
    }

    private static String number(double v) {
        return Double.isFinite(v) ? String.format(Locale.ROOT, "%.6g", v) : "null";
    }

    private static String quote(String s) {
        return '"' + s.replace("\\", "\\\\").replace("\"", "\\\"") + '"';
    }
}
