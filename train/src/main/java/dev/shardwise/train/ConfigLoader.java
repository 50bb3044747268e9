package dev.shardwise.train;

import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.model.ModelConfig;
import dev.shardwise.model.MoeConfig;
import dev.shardwise.model.Recompute;
import dev.shardwise.parallel.ParallelLayout;
import dev.shardwise.parallel.ZeroStage;
import dev.shardwise.parallel.pipeline.ScheduleKind;
import org.yaml.snakeyaml.LoaderOptions;
import org.yaml.snakeyaml.Yaml;
import org.yaml.snakeyaml.constructor.SafeConstructor;
import org.yaml.snakeyaml.error.YAMLException;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
import java.util.function.Function;

/**
 * Resolves a {@link TrainConfig}: preset defaults, then a YAML file's keys, then flags. Keys are the record's
 * component names (camelCase), with the model's under {@code model:}, except that the layout's fields are keys of
 * their own: {@code batchSize} (the micro-batch), {@code ranks}, {@code dp}, {@code tp}, {@code pp}, {@code vpp},
 * {@code ep}, {@code zero} and {@code recompute}. Unknown keys and values of the wrong type are errors that name the key, the
 * source and the accepted keys (nanoGPT's configurator does the same).
 *
 * <p>The world size and dp follow Megatron's rule: without {@code dp}, dp = ranks / (tp·pp) (ranks defaults to 1);
 * without {@code ranks}, ranks = dp·tp·pp; given both, they must agree. A layout that does not divide is refused
 * with the values and sources involved and a fix.
 */
public final class ConfigLoader {
    /** Keys of the top level, in the order a resolved config is written. */
    static final List<String> KEYS = List.of("preset", "data", "batchSize", "seqLen", "gradAccumulation", "steps",
            "seed", "lr", "minLr", "warmupSteps", "weightDecay", "beta1", "beta2", "eps", "gradClip", "evalEvery",
            "evalBatches", "checkpointEvery", "checkpointAtStart", "saveCheckpoints", "runDir", "rankMemory", "ranks", "dp", "tp",
            "pp", "vpp", "ep", "sequenceParallel", "zero", "recompute", "recomputeEvery", "schedule", "pipelineCut", "offloadOptimizer",
            "timeline", "keepCheckpoints", "asyncCheckpoints", "initFrom", "precision", "model");
    /** Keys under {@code model:}. */
    static final List<String> MODEL_KEYS = List.of("vocabSize", "contextLength", "layers", "hidden", "heads",
            "kvHeads", "ffnHidden", "norm", "mlp", "positions", "residual", "bias", "topQueryLayer", "normEps", "moe");
    /** Keys under {@code model.moe:} (a missing key takes {@link #moeDefaults}'s value). */
    static final List<String> MOE_KEYS = List.of("experts", "topK", "every", "capacityFactor", "balance", "sharedExperts",
            "expertHidden", "gate", "routedScale", "auxWeight", "zLossWeight", "biasRate");

    private ConfigLoader() { }

    /** Reads a YAML config file into a map (no resolution yet). */
    public static Map<String, Object> readYaml(Path file) throws IOException {
        if (!Files.isRegularFile(file)) throw new IOException("config file " + file + " does not exist");
        try {
            Object loaded = new Yaml(new SafeConstructor(new LoaderOptions())).load(Files.readString(file));
            if (loaded == null) return new LinkedHashMap<>();
            if (!(loaded instanceof Map<?, ?> map)) {
                throw new IllegalArgumentException(file + ": a config must be a YAML mapping of keys to values");
            }
            Map<String, Object> out = new LinkedHashMap<>();
            map.forEach((k, v) -> out.put(String.valueOf(k), v));
            return out;
        } catch (YAMLException e) {
            throw new IllegalArgumentException(file + " is not valid YAML: " + e.getMessage().lines().findFirst().orElse(""), e);
        }
    }

    /**
     * The config keys that set {@code layout} run under {@code schedule} with {@code globalBatch} sequences per step:
     * ranks, dp, tp, pp, vpp, ep, sequenceParallel, zero, recompute, schedule, batchSize (the micro-batch) and
     * gradAccumulation (the micro-batches per step), for a caller that chose a layout itself ({@code --parallel auto},
     * the layout benchmarks).
     *
     * @throws IllegalArgumentException if dp·micro-batch does not divide the global batch
     */
    public static Map<String, Object> layoutKeys(ParallelLayout layout, ScheduleKind schedule, long globalBatch) {
        long perReplica = (long) layout.dp() * layout.microBatch();
        if (globalBatch % perReplica != 0) {
            throw new IllegalArgumentException("dp·micro-batch = " + perReplica + " does not divide the global batch " + globalBatch);
        }
        Map<String, Object> keys = new LinkedHashMap<>();
        keys.put("ranks", layout.worldSize());
        keys.put("dp", layout.dp());
        keys.put("tp", layout.tp());
        keys.put("pp", layout.pp());
        keys.put("vpp", layout.vpp());
        keys.put("ep", layout.ep());
        keys.put("sequenceParallel", layout.sequenceParallel());
        keys.put("zero", layout.zeroStage());
        keys.put("recompute", layout.recompute().toString());
        keys.put("schedule", schedule.toString());
        keys.put("batchSize", layout.microBatch());
        keys.put("gradAccumulation", Math.toIntExact(globalBatch / perReplica));
        return keys;
    }

    /**
     * Resolves the config: the preset named by {@code flags}, else by {@code yaml}, else "tiny"; then yaml's
     * keys; then flags' keys.
     *
     * @param yaml       keys from a config file (may be empty)
     * @param yamlSource how errors name the file
     * @param flags      keys set on the command line (may be empty)
     * @throws IllegalArgumentException naming the key and source of a bad value
     */
    public static TrainConfig resolve(Map<String, Object> yaml, String yamlSource, Map<String, Object> flags) {
        checkKeys(yaml, yamlSource);
        checkKeys(flags, "command line");
        String preset = String.valueOf(flags.getOrDefault("preset", yaml.getOrDefault("preset", "tiny")));
        Map<String, Object> merged = presetDefaults(preset);
        overlay(merged, yaml);
        overlay(merged, flags);
        merged.put("preset", preset);
        try {
            return build(merged, key -> flags.containsKey(key) ? "command line" : yaml.containsKey(key) ? yamlSource
                    : "preset " + preset);
        } catch (ClassCastException | NumberFormatException e) {
            throw new IllegalArgumentException("a config value has the wrong type (" + e.getMessage() + "); see "
                    + yamlSource + " and the flags", e);
        }
    }

    private static void checkKeys(Map<String, Object> map, String source) {
        for (String key : map.keySet()) {
            if (!KEYS.contains(key)) {
                throw new IllegalArgumentException("unknown key '" + key + "' in " + source + "; known keys: " + KEYS);
            }
        }
        if (map.get("model") instanceof Map<?, ?> model) {
            for (Object key : model.keySet()) {
                if (!MODEL_KEYS.contains(String.valueOf(key))) {
                    throw new IllegalArgumentException("unknown key 'model." + key + "' in " + source + "; known: " + MODEL_KEYS);
                }
            }
            checkMoeKeys(model.get("moe"), model.containsKey("moe"), source);
        } else if (map.containsKey("model")) {
            throw new IllegalArgumentException("'model' in " + source + " must be a mapping, e.g. model: {layers: 6}");
        }
    }

    private static void checkMoeKeys(Object moe, boolean present, String source) {
        if (moe instanceof Map<?, ?> map) {
            for (Object key : map.keySet()) {
                if (!MOE_KEYS.contains(String.valueOf(key))) {
                    throw new IllegalArgumentException("unknown key 'model.moe." + key + "' in " + source + "; known: " + MOE_KEYS);
                }
            }
        } else if (present && moe != null) {
            throw new IllegalArgumentException("'model.moe' in " + source + " must be a mapping, e.g. model: {moe: {experts: 8, "
                    + "topK: 2}}, or null for a dense model");
        }
    }

    @SuppressWarnings("unchecked")
    private static void overlay(Map<String, Object> into, Map<String, Object> from) {
        from.forEach((key, value) -> {
            if (key.equals("model")) {
                Map<String, Object> model = (Map<String, Object>) into.get("model");
                Map<String, Object> moe = model.get("moe") instanceof Map<?, ?> m ? new LinkedHashMap<>((Map<String, Object>) m) : null;
                model.putAll((Map<String, Object>) value);
                // model.moe keys overlay one by one, so a config can change one of a preset's MoE settings
                if (moe != null && model.get("moe") instanceof Map<?, ?> given && given != moe) {
                    moe.putAll((Map<String, Object>) given);
                    model.put("moe", moe);
                }
            } else {
                into.put(key, value);
            }
        });
    }

    /** The preset's model and training defaults as a config map. */
    static Map<String, Object> presetDefaults(String preset) {
        ModelConfig model = ModelConfig.preset(preset);
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("data", null);
        boolean tiny = model.hidden() <= 512;
        m.put("batchSize", tiny ? 8 : 4);
        m.put("seqLen", Math.min(256, model.contextLength()));
        m.put("gradAccumulation", 1);
        m.put("steps", tiny ? 600 : 1000);
        m.put("seed", 1337);
        m.put("lr", tiny ? 1e-3 : 6e-4);
        m.put("minLr", tiny ? 1e-4 : 6e-5);
        m.put("warmupSteps", tiny ? 60 : 100);
        m.put("weightDecay", 0.1);
        m.put("beta1", 0.9);
        m.put("beta2", 0.95);
        m.put("eps", 1e-8);
        m.put("gradClip", 1.0);
        m.put("evalEvery", 100);
        m.put("evalBatches", 8);
        m.put("checkpointEvery", 200);
        m.put("checkpointAtStart", false);
        m.put("saveCheckpoints", true);
        m.put("keepCheckpoints", 0);
        m.put("asyncCheckpoints", false);
        m.put("runDir", "runs/" + preset);
        m.put("rankMemory", "unlimited");
        // ranks and dp are left out: each is derived from the other (Megatron's rule; see build)
        m.put("tp", 1);
        m.put("pp", 1);
        m.put("vpp", 1);
        m.put("ep", 1);
        m.put("sequenceParallel", false);
        m.put("zero", 0);
        m.put("recompute", Recompute.NONE.toString());
        m.put("recomputeEvery", 1);
        m.put("schedule", null);      // ScheduleKind.defaultFor(vpp)
        m.put("pipelineCut", null);   // automatic balancing
        m.put("offloadOptimizer", null);
        m.put("timeline", null);
        m.put("precision", "fp32");
        m.put("model", modelMap(model));
        return m;
    }

    static Map<String, Object> modelMap(ModelConfig model) {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("vocabSize", model.vocabSize());
        m.put("contextLength", model.contextLength());
        m.put("layers", model.layers());
        m.put("hidden", model.hidden());
        m.put("heads", model.heads());
        m.put("kvHeads", model.kvHeads());
        m.put("ffnHidden", model.ffnHidden());
        m.put("norm", model.norm().name().toLowerCase(Locale.ROOT).replace('_', '-'));
        m.put("mlp", model.mlp().name().toLowerCase(Locale.ROOT));
        m.put("positions", model.positions().name().toLowerCase(Locale.ROOT));
        m.put("residual", model.residual().name().toLowerCase(Locale.ROOT).replace('_', '-'));
        m.put("bias", model.bias());
        m.put("topQueryLayer", model.topQueryLayer());
        m.put("normEps", model.normEps());
        if (model.moe() != null) m.put("moe", moeMap(model.moe()));
        return m;
    }

    static Map<String, Object> moeMap(MoeConfig moe) {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("experts", moe.experts());
        m.put("topK", moe.topK());
        m.put("every", moe.every());
        m.put("capacityFactor", moe.capacityFactor());
        m.put("balance", moe.balance().key());
        m.put("sharedExperts", moe.sharedExperts());
        m.put("expertHidden", moe.expertHidden());
        m.put("gate", moe.gate().key());
        m.put("routedScale", moe.routedScale());
        m.put("auxWeight", moe.auxWeight());
        m.put("zLossWeight", moe.zLossWeight());
        m.put("biasRate", moe.biasRate());
        return m;
    }

    /**
     * The MoE config from {@code model.moe}'s keys; a missing key defaults to 8 experts, top-2, every block,
     * dropless, balance aux, no shared experts, experts of hidden ffnHidden/topK (the dense model's active FLOPs),
     * the softmax gate, gates unscaled (routedScale 1) and the default weights.
     */
    @SuppressWarnings("unchecked")
    static MoeConfig moeFromMap(Object value, int ffnHidden) {
        if (value == null) return null;
        Map<String, Object> given = (Map<String, Object>) value;
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("experts", 8);
        m.put("topK", 2);
        m.put("every", 1);
        m.put("capacityFactor", 0);
        m.put("balance", "aux");
        m.put("sharedExperts", 0);
        m.put("gate", "softmax");
        m.put("routedScale", 1);
        m.put("auxWeight", MoeConfig.DEFAULT_AUX_WEIGHT);
        m.put("zLossWeight", MoeConfig.DEFAULT_Z_LOSS_WEIGHT);
        m.put("biasRate", MoeConfig.DEFAULT_BIAS_RATE);
        m.putAll(given);
        int topK = integer(m, "model.moe.", "topK");
        if (!m.containsKey("expertHidden")) m.put("expertHidden", Math.max(1, ffnHidden / Math.max(1, topK)));
        return new MoeConfig(integer(m, "model.moe.", "experts"), topK, integer(m, "model.moe.", "every"),
                number(m, "model.moe.", "capacityFactor"), MoeConfig.Balance.parse(String.valueOf(m.get("balance"))),
                integer(m, "model.moe.", "sharedExperts"), integer(m, "model.moe.", "expertHidden"),
                MoeConfig.Gate.parse(String.valueOf(m.get("gate"))), number(m, "model.moe.", "routedScale"),
                number(m, "model.moe.", "auxWeight"),
                number(m, "model.moe.", "zLossWeight"), number(m, "model.moe.", "biasRate"));
    }

    /** A model config from the {@code model:} keys (all of them present). */
    public static ModelConfig modelFromMap(Map<String, Object> mm) {
        return new ModelConfig(integer(mm, "model.", "vocabSize"), integer(mm, "model.", "contextLength"),
                integer(mm, "model.", "layers"), integer(mm, "model.", "hidden"), integer(mm, "model.", "heads"),
                integer(mm, "model.", "kvHeads"), integer(mm, "model.", "ffnHidden"),
                enumValue(ModelConfig.Norm.class, mm, "norm"), enumValue(ModelConfig.Mlp.class, mm, "mlp"),
                enumValue(ModelConfig.Positions.class, mm, "positions"), enumValue(ModelConfig.Residual.class, mm, "residual"),
                bool(mm, "model.", "bias"), bool(mm, "model.", "topQueryLayer"), number(mm, "model.", "normEps"),
                moeFromMap(mm.get("moe"), integer(mm, "model.", "ffnHidden")));
    }

    @SuppressWarnings("unchecked")
    private static TrainConfig build(Map<String, Object> m, Function<String, String> sourceOf) {
        ModelConfig model = modelFromMap((Map<String, Object>) m.get("model"));
        Object data = m.get("data");
        String memory = String.valueOf(m.get("rankMemory"));
        Object schedule = m.get("schedule");
        return new TrainConfig(String.valueOf(m.get("preset")), model, data == null ? null : Path.of(data.toString()),
                integer(m, "", "seqLen"), integer(m, "", "gradAccumulation"),
                integer(m, "", "steps"), (long) number(m, "", "seed"), number(m, "", "lr"), number(m, "", "minLr"),
                integer(m, "", "warmupSteps"), number(m, "", "weightDecay"), number(m, "", "beta1"),
                number(m, "", "beta2"), number(m, "", "eps"), number(m, "", "gradClip"), integer(m, "", "evalEvery"),
                integer(m, "", "evalBatches"), integer(m, "", "checkpointEvery"), bool(m, "", "checkpointAtStart"),
                Path.of(String.valueOf(m.get("runDir"))),
                memory.equals("unlimited") ? MemoryPool.UNLIMITED : MemoryPool.parseBytes(memory), layout(m, sourceOf),
                schedule == null ? null : ScheduleKind.parse(String.valueOf(schedule)), pipelineCut(m.get("pipelineCut")),
                integer(m, "", "recomputeEvery"),
                m.get("offloadOptimizer") == null ? null : Path.of(m.get("offloadOptimizer").toString()),
                m.get("timeline") == null ? null : Path.of(m.get("timeline").toString()), bool(m, "", "saveCheckpoints"),
                integer(m, "", "keepCheckpoints"), bool(m, "", "asyncCheckpoints"),
                m.get("initFrom") == null ? null : Path.of(m.get("initFrom").toString()), String.valueOf(m.get("precision")));
    }

    /**
     * The layout from {@code batchSize}, {@code ranks}, {@code dp}, {@code tp}, {@code pp}, {@code vpp}, {@code zero}
     * and {@code recompute}, completing ranks or dp by Megatron's rule; {@code sourceOf} names where a key was set.
     */
    private static ParallelLayout layout(Map<String, Object> m, Function<String, String> sourceOf) {
        int batchSize = integer(m, "", "batchSize");
        if (batchSize < 1) throw new IllegalArgumentException("batchSize must be positive, got " + batchSize);
        int tp = integer(m, "", "tp"), pp = integer(m, "", "pp"), vpp = integer(m, "", "vpp");
        Integer ranks = m.get("ranks") == null ? null : integer(m, "", "ranks");
        Integer dp = m.get("dp") == null ? null : integer(m, "", "dp");
        if (ranks != null && ranks < 1) {
            throw new IllegalArgumentException("ranks=" + ranks + " (" + sourceOf.apply("ranks") + ") must be at least 1; "
                    + "use ranks: 1 for a single rank");
        }
        if (dp == null) {
            int world = ranks == null ? 1 : ranks;
            try {
                dp = ParallelLayout.dataParallelSize(world, tp, pp);
            } catch (IllegalArgumentException e) {
                throw new IllegalArgumentException("ranks=" + world + (ranks == null ? " (the default)" : " (" + sourceOf.apply("ranks")
                        + ")") + " cannot be cut into tp=" + tp + " (" + sourceOf.apply("tp") + ") × pp=" + pp + " ("
                        + sourceOf.apply("pp") + "): " + e.getMessage()
                        + (tp >= 1 && pp >= 1 ? ", or give ranks as a multiple of tp·pp=" + tp * pp : ""), e);
            }
        }
        int zero = ZeroStage.of(integer(m, "", "zero")).number();   // refuses a stage outside 0..3, naming the key
        int ep = integer(m, "", "ep");
        ParallelLayout layout;
        try {
            layout = new ParallelLayout(dp, tp, pp, vpp, ep, bool(m, "", "sequenceParallel"), zero,
                    Recompute.parse(String.valueOf(m.get("recompute"))), batchSize);
        } catch (IllegalArgumentException e) {
            if (ep == 1 || ep < 1 || dp % ep == 0) throw e;
            throw new IllegalArgumentException("ep=" + ep + " (" + sourceOf.apply("ep") + ") and dp=" + dp + " ("
                    + (m.get("dp") == null ? "ranks / (tp·pp)" : sourceOf.apply("dp")) + "): " + e.getMessage()
                    + "; or make dp a multiple of ep (--ranks)", e);
        }
        if (ranks != null) {
            try {
                layout.requireWorldSize(ranks);
            } catch (IllegalArgumentException e) {
                throw new IllegalArgumentException("ranks=" + ranks + " (" + sourceOf.apply("ranks") + ") and dp=" + dp
                        + " (" + sourceOf.apply("dp") + ") disagree: " + e.getMessage() + "; or leave one of them out", e);
            }
        }
        return layout;
    }

    /** {@code pipelineCut} from a YAML list [0, 3, 6] or the flag's "0,3,6"; null when absent (automatic balancing). */
    private static List<Integer> pipelineCut(Object value) {
        if (value == null) return null;
        List<?> items = value instanceof List<?> list ? list : List.of(String.valueOf(value).split(","));
        List<Integer> out = new ArrayList<>(items.size());
        for (Object item : items) {
            Integer block = intOrNull(item);
            if (block == null) {
                throw new IllegalArgumentException("pipelineCut must list the first block of each model chunk, e.g. "
                        + "[0, 3, 6] in YAML or --pipeline-cut 0,3,6; got '" + value + "'");
            }
            out.add(block);
        }
        return out;
    }

    /** The resolved config as YAML, as written to the run directory's config.yaml. */
    public static String toYaml(TrainConfig c) {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("preset", c.preset());
        m.put("data", c.data() == null ? null : c.data().toString());
        m.put("batchSize", c.batchSize());
        m.put("seqLen", c.seqLen());
        m.put("gradAccumulation", c.gradAccumulation());
        m.put("steps", c.steps());
        m.put("seed", c.seed());
        m.put("lr", c.lr());
        m.put("minLr", c.minLr());
        m.put("warmupSteps", c.warmupSteps());
        m.put("weightDecay", c.weightDecay());
        m.put("beta1", c.beta1());
        m.put("beta2", c.beta2());
        m.put("eps", c.eps());
        m.put("gradClip", c.gradClip());
        m.put("evalEvery", c.evalEvery());
        m.put("evalBatches", c.evalBatches());
        m.put("checkpointEvery", c.checkpointEvery());
        m.put("checkpointAtStart", c.checkpointAtStart());
        m.put("saveCheckpoints", c.saveCheckpoints());
        m.put("runDir", c.runDir().toString());
        m.put("rankMemory", c.rankMemory() == MemoryPool.UNLIMITED ? "unlimited" : Long.toString(c.rankMemory()));
        m.put("ranks", c.ranks());
        m.put("dp", c.layout().dp());
        m.put("tp", c.layout().tp());
        m.put("pp", c.layout().pp());
        m.put("vpp", c.layout().vpp());
        m.put("ep", c.layout().ep());
        m.put("sequenceParallel", c.layout().sequenceParallel());
        m.put("zero", c.zero());
        m.put("recompute", c.layout().recompute().toString());
        m.put("recomputeEvery", c.recomputeEvery());
        m.put("schedule", c.schedule().toString());
        m.put("pipelineCut", c.pipelineCut());
        m.put("offloadOptimizer", c.offloadOptimizer() == null ? null : c.offloadOptimizer().toString());
        m.put("timeline", c.timeline() == null ? null : c.timeline().toString());
        m.put("keepCheckpoints", c.keepCheckpoints());
        m.put("asyncCheckpoints", c.asyncCheckpoints());
        m.put("initFrom", c.initFrom() == null ? null : c.initFrom().toString());
        m.put("precision", c.precision());
        m.put("model", modelMap(c.model()));
        org.yaml.snakeyaml.DumperOptions options = new org.yaml.snakeyaml.DumperOptions();
        options.setDefaultFlowStyle(org.yaml.snakeyaml.DumperOptions.FlowStyle.BLOCK);
        return new Yaml(options).dump(m);
    }

    private static int integer(Map<String, Object> m, String prefix, String key) {
        Object v = m.get(key);
        Integer i = intOrNull(v);
        if (i == null) throw new IllegalArgumentException(prefix + key + " must be an integer, got '" + v + "'");
        return i;
    }

    /** {@code v} as an int if it is a whole number or a string holding one, else null. */
    private static Integer intOrNull(Object v) {
        if (v instanceof Number n && n.doubleValue() == Math.rint(n.doubleValue())) return Math.toIntExact(n.longValue());
        if (v instanceof String s) {
            try {
                return Integer.parseInt(s.trim());
            } catch (NumberFormatException ignored) {
                return null;
            }
        }
        return null;
    }

    private static double number(Map<String, Object> m, String prefix, String key) {
        Object v = m.get(key);
        if (v instanceof Number n) return n.doubleValue();
        if (v instanceof String s) {
            try {
                return Double.parseDouble(s.trim());
            } catch (NumberFormatException ignored) {
                // reported below
            }
        }
        throw new IllegalArgumentException(prefix + key + " must be a number, got '" + v + "'");
    }

    private static boolean bool(Map<String, Object> m, String prefix, String key) {
        Object v = m.get(key);
        if (v instanceof Boolean b) return b;
        if ("true".equals(v) || "false".equals(v)) return Boolean.parseBoolean((String) v);
        throw new IllegalArgumentException(prefix + key + " must be true or false, got '" + v + "'");
    }

    private static <E extends Enum<E>> E enumValue(Class<E> type, Map<String, Object> m, String key) {
        String v = String.valueOf(m.get(key));
        Set<String> names = new TreeSet<>();
        for (E e : type.getEnumConstants()) {
            names.add(e.name().toLowerCase(Locale.ROOT).replace('_', '-'));
            if (e.name().equalsIgnoreCase(v.replace('-', '_'))) return e;
        }
        throw new IllegalArgumentException("model." + key + " must be one of " + names + ", got '" + v + "'");
    }
}
