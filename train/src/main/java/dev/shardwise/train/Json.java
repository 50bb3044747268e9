package dev.shardwise.train;

import org.yaml.snakeyaml.LoaderOptions;
import org.yaml.snakeyaml.Yaml;
import org.yaml.snakeyaml.constructor.SafeConstructor;

import java.util.Collection;
import java.util.Locale;
import java.util.Map;

/** Minimal JSON for metrics lines and manifests: writes maps, lists, strings and numbers; reads through SnakeYAML. */
final class Json {
    private Json() { }

    static String write(Object value) {
        StringBuilder sb = new StringBuilder();
        append(sb, value);
        return sb.toString();
    }

    private static void append(StringBuilder sb, Object value) {
        switch (value) {
            case null -> sb.append("null");
            case String s -> quote(sb, s);
            case Double d -> sb.append(Double.isFinite(d) ? repr(d) : "null");
            case Float f -> sb.append(Float.isFinite(f) ? repr(f.doubleValue()) : "null");
            case Number n -> sb.append(n);
            case Boolean b -> sb.append(b);
            case Map<?, ?> map -> {
                sb.append('{');
                boolean first = true;
                for (Map.Entry<?, ?> e : map.entrySet()) {
                    if (!first) sb.append(',');
                    first = false;
                    quote(sb, String.valueOf(e.getKey()));
                    sb.append(':');
                    append(sb, e.getValue());
                }
                sb.append('}');
            }
            case Collection<?> list -> {
                sb.append('[');
                boolean first = true;
                for (Object o : list) {
                    if (!first) sb.append(',');
                    first = false;
                    append(sb, o);
                }
                sb.append(']');
            }
            case int[] ints -> {
                sb.append('[');
                for (int i = 0; i < ints.length; i++) sb.append(i == 0 ? "" : ",").append(ints[i]);
                sb.append(']');
            }
            default -> quote(sb, value.toString());
        }
    }

    /** Shortest text that reads back as the same double (full precision, as metrics need). */
    private static String repr(double d) {
        if (d == Math.rint(d) && Math.abs(d) < 1e15) return String.format(Locale.ROOT, "%.1f", d);
        return Double.toString(d);
    }

    private static void quote(StringBuilder sb, String s) {
        sb.append('"');
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            switch (c) {
                case '"' -> sb.append("\\\"");
                case '\\' -> sb.append("\\\\");
                case '\n' -> sb.append("\\n");
                case '\r' -> sb.append("\\r");
                case '\t' -> sb.append("\\t");
                default -> {
                    if (c < 0x20) sb.append(String.format("\\u%04x", (int) c));
                    else sb.append(c);
                }
            }
        }
        sb.append('"');
    }

    @SuppressWarnings("unchecked")
    static Map<String, Object> readObject(String text) {
        Object o = new Yaml(new SafeConstructor(new LoaderOptions())).load(text);
        if (!(o instanceof Map<?, ?>)) throw new IllegalArgumentException("expected a JSON object");
        return (Map<String, Object>) o;
    }
}
