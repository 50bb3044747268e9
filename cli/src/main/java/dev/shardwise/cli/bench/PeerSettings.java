package dev.shardwise.cli.bench;

import java.util.LinkedHashMap;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * How the PyTorch peer of {@code bench train} ran, from the {@code PEER ...} line its script prints: its thread
 * settings ({@code torch.get_num_threads()}, {@code torch.get_num_interop_threads()}, {@code OMP_NUM_THREADS}), the
 * oneDNN version and CPU capability {@code torch.__config__.show()} reports, and the precision it ran in. A ratio is
 * only meaningful next to these, so the benchmark prints them with every peer figure.
 *
 * @param fields the line's {@code key=value} pairs in order; empty when the script printed no such line
 */
record PeerSettings(Map<String, String> fields) {
    private static final Pattern LINE = Pattern.compile("^PEER (.*)$", Pattern.MULTILINE);
    private static final Pattern FIELD = Pattern.compile("(\\w+)=(\\S+)");

    PeerSettings {
        fields = Map.copyOf(fields);
    }

    /** Reads the PEER line out of the script's output; no fields when there is none. */
    static PeerSettings parse(String output) {
        Matcher m = LINE.matcher(output);
        Map<String, String> fields = new LinkedHashMap<>();
        if (m.find()) {
            Matcher f = FIELD.matcher(m.group(1));
            while (f.find()) fields.put(f.group(1), f.group(2));
        }
        return new PeerSettings(fields);
    }

    /** One line for the report. */
    String describe() {
        if (fields.isEmpty()) return "PyTorch peer settings: not reported (an older script?)";
        return "PyTorch peer settings: " + get("threads") + " intra-op threads (torch.get_num_threads), " + get("interop")
                + " inter-op, OMP_NUM_THREADS " + get("omp_num_threads") + "; oneDNN " + get("onednn") + ", CPU capability "
                + get("cpu_capability") + "; precision " + get("precision")
                + ("bf16".equals(fields.get("precision")) ? " (torch.autocast cpu bfloat16: forward and loss)" : "");
    }

    private String get(String key) {
        return fields.getOrDefault(key, "?");
    }
}
