package dev.shardwise.plan;

import org.yaml.snakeyaml.LoaderOptions;
import org.yaml.snakeyaml.Yaml;
import org.yaml.snakeyaml.constructor.SafeConstructor;

import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;

/**
 * Loads device, cluster and model specs: a preset name from the YAML presets shipped in this jar, or a path to the
 * user's YAML file with one spec's keys. Unknown keys, missing keys and wrong types are errors naming the key, the
 * file and the valid keys. Call from any thread; it reads the presets on each call.
 */
public final class Specs {
    private static final double GB = 1e9;
    private static final double TFLOPS = 1e12;

    private Specs() { }

    /** The device preset {@code name} (see {@code devices.yaml}). @throws IllegalArgumentException listing the presets */
    public static DeviceSpec device(String name) {
        Map<String, Object> m = preset("devices.yaml", name, "device");
        return device(name, m, "devices.yaml");
    }

    /** A cluster preset name or a YAML file with its keys (see {@code clusters.yaml}). @throws IllegalArgumentException */
    public static ClusterSpec cluster(String nameOrFile) {
        Path file = Path.of(nameOrFile);
        if (looksLikeFile(nameOrFile) && Files.isRegularFile(file)) return cluster(file.getFileName().toString(), readFile(file), file.toString());
        return cluster(nameOrFile, preset("clusters.yaml", nameOrFile, "cluster"), "clusters.yaml");
    }

    /** A model preset name or a YAML file with its keys (see {@code models.yaml}). @throws IllegalArgumentException */
    public static ModelSpec model(String nameOrFile) {
        Path file = Path.of(nameOrFile);
        if (looksLikeFile(nameOrFile) && Files.isRegularFile(file)) return model(file.getFileName().toString(), readFile(file), file.toString());
        return model(nameOrFile, preset("models.yaml", nameOrFile, "model"), "models.yaml");
    }

    /** Names of the presets in {@code devices.yaml}, {@code clusters.yaml} or {@code models.yaml}. */
    public static Set<String> presetNames(String resource) {
        return load(resource).keySet();
    }

    private static boolean looksLikeFile(String s) {
        return s.endsWith(".yaml") || s.endsWith(".yml") || s.contains("/");
    }

    private static DeviceSpec device(String name, Map<String, Object> m, String where) {
        keys(m, where, name, List.of("flops16_tflops", "flops32_tflops", "memory_gb", "memory_bandwidth_gb_per_s", "nvlink_gb_per_s", "network_gb_per_s"), List.of());
        return new DeviceSpec(name, num(m, "flops16_tflops", where) * TFLOPS, num(m, "flops32_tflops", where) * TFLOPS,
                num(m, "memory_gb", where) * GB, num(m, "memory_bandwidth_gb_per_s", where) * GB,
                num(m, "nvlink_gb_per_s", where) * GB, num(m, "network_gb_per_s", where) * GB);
    }

    private static ClusterSpec cluster(String name, Map<String, Object> m, String where) {
        keys(m, where, name, List.of("device", "devices_per_node", "nodes"),
                List.of("intra_node_gb_per_s", "inter_node_gb_per_s", "intra_node_latency_us", "inter_node_latency_us"));
        if (!(m.get("device") instanceof String deviceName)) {
            throw new IllegalArgumentException(where + ": cluster " + name + ": device must be a device preset name, one of " + presetNames("devices.yaml"));
        }
        DeviceSpec device = device(deviceName);
        return new ClusterSpec(name, device, integer(m, "devices_per_node", where), integer(m, "nodes", where),
                m.containsKey("intra_node_gb_per_s") ? num(m, "intra_node_gb_per_s", where) * GB : device.nvlinkBandwidth(),
                m.containsKey("intra_node_latency_us") ? num(m, "intra_node_latency_us", where) * 1e-6 : 5e-6,
                m.containsKey("inter_node_gb_per_s") ? num(m, "inter_node_gb_per_s", where) * GB : device.networkBandwidth(),
                m.containsKey("inter_node_latency_us") ? num(m, "inter_node_latency_us", where) * 1e-6 : 10e-6);
    }

    private static ModelSpec model(String name, Map<String, Object> m, String where) {
        keys(m, where, name, List.of("layers", "hidden", "heads", "vocab", "seq"),
                List.of("ffn_hidden", "kv_heads", "experts", "top_k", "moe_every", "mlp"));
        int hidden = integer(m, "hidden", where);
        int heads = integer(m, "heads", where);
        int experts = m.containsKey("experts") ? integer(m, "experts", where) : 0;
        if (experts == 0 && (m.containsKey("top_k") || m.containsKey("moe_every"))) {
            throw new IllegalArgumentException(where + ": model " + name + ": top_k and moe_every need experts (the experts per "
                    + "MoE block); add experts or drop them");
        }
        if (m.containsKey("experts") && experts < 2) {
            throw new IllegalArgumentException(where + ": model " + name + ": experts=" + experts + " must be at least 2; drop "
                    + "experts for a dense model");
        }
        return new ModelSpec(name, integer(m, "layers", where), hidden, heads,
                m.containsKey("ffn_hidden") ? integer(m, "ffn_hidden", where) : 4 * hidden,
                integer(m, "vocab", where), integer(m, "seq", where),
                m.containsKey("kv_heads") ? integer(m, "kv_heads", where) : heads, experts,
                experts == 0 ? 0 : m.containsKey("top_k") ? integer(m, "top_k", where) : 2,
                experts == 0 ? 0 : m.containsKey("moe_every") ? integer(m, "moe_every", where) : 1, gated(m, name, where));
    }

    private static boolean gated(Map<String, Object> m, String name, String where) {
        Object mlp = m.getOrDefault("mlp", "gelu");
        return switch (String.valueOf(mlp)) {
            case "gelu" -> false;
            case "swiglu" -> true;
            default -> throw new IllegalArgumentException(where + ": model " + name + ": mlp=" + mlp + " must be gelu or swiglu");
        };
    }

    static void positive(String what, String key, double value) {
        if (!(value > 0) || Double.isInfinite(value)) {
            throw new IllegalArgumentException(what + ": " + key + "=" + value + " must be a positive number");
        }
    }

    private static Map<String, Object> preset(String resource, String name, String kind) {
        Map<String, Object> all = load(resource);
        if (!(all.get(name) instanceof Map<?, ?> m)) {
            throw new IllegalArgumentException(kind + " '" + name + "' is neither a preset nor a YAML file; use one of "
                    + new TreeSet<>(all.keySet()) + (kind.equals("device") ? "" : " or a path to a .yaml file"));
        }
        return stringKeys(m, resource);
    }

    private static Map<String, Object> load(String resource) {
        try (InputStream in = Specs.class.getResourceAsStream(resource)) {
            if (in == null) throw new IllegalStateException("preset file " + resource + " is missing from the plan jar; rebuild it");
            return stringKeys(yaml().load(new String(in.readAllBytes(), StandardCharsets.UTF_8)), resource);
        } catch (IOException e) {
            throw new UncheckedIOException("cannot read preset file " + resource, e);
        }
    }

    private static Map<String, Object> readFile(Path file) {
        try {
            return stringKeys(yaml().load(Files.readString(file)), file.toString());
        } catch (IOException e) {
            throw new IllegalArgumentException("cannot read " + file + ": " + e.getMessage(), e);
        }
    }

    private static Yaml yaml() {
        return new Yaml(new SafeConstructor(new LoaderOptions()));
    }

    private static Map<String, Object> stringKeys(Object o, String where) {
        if (!(o instanceof Map<?, ?> m)) throw new IllegalArgumentException(where + ": expected a mapping of keys to values");
        Map<String, Object> out = new LinkedHashMap<>();
        m.forEach((k, v) -> out.put(String.valueOf(k), v));
        return out;
    }

    private static void keys(Map<String, Object> m, String where, String name, List<String> required, List<String> optional) {
        for (String k : m.keySet()) {
            if (!required.contains(k) && !optional.contains(k)) {
                throw new IllegalArgumentException(where + ": " + name + ": unknown key '" + k + "'; valid keys are "
                        + required + " and optional " + optional);
            }
        }
        for (String k : required) {
            if (!m.containsKey(k)) throw new IllegalArgumentException(where + ": " + name + ": missing key '" + k + "'; required keys are " + required);
        }
    }

    private static double num(Map<String, Object> m, String key, String where) {
        if (!(m.get(key) instanceof Number n)) {
            throw new IllegalArgumentException(where + ": " + key + "=" + m.get(key) + " must be a number");
        }
        return n.doubleValue();
    }

    private static int integer(Map<String, Object> m, String key, String where) {
        if (!(m.get(key) instanceof Integer n)) {
            throw new IllegalArgumentException(where + ": " + key + "=" + m.get(key) + " must be a whole number");
        }
        return n;
    }
}
