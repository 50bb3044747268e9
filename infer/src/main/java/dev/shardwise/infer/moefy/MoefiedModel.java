package dev.shardwise.infer.moefy;

import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;
import dev.shardwise.model.Gpt;
import dev.shardwise.model.ModelConfig;
import dev.shardwise.train.Checkpoint;

import java.io.IOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * A MoEfied model (Zhang et al. 2022) as {@code shardwise moefy} writes it: one checkpoint in the project's format
 * (manifest.json + tensors.bin, directory written atomically) holding
 * <pre>
 *   param/...                      the dense model's parameters, each block's FFN neurons permuted into expert order
 *   moefy/h.L.router.w1, b1, w2, b2 block L's router, [R, C], [R], [E, R], [E], f32
 *   manifest "moefy": {"experts": E, "routerHidden": R, "run": RUN, "checkpoint": the dense checkpoint it came from,
 *                      "routerRecall": per block {"k", "recall"} for K = E/4 and E/2}
 *   config.yaml, tokenizer file    the run's resolved config and its tokenizer, copied in
 * </pre>
 * so it loads as a dense model anywhere a checkpoint is read (the permutation leaves its function unchanged), and
 * {@link #useActive} makes it run K of its E experts per token. Owns the model and the routers ({@link #close()}).
 */
public final class MoefiedModel implements AutoCloseable {
    static final String KEY = "moefy";
    static final String CONFIG_FILE = "config.yaml";

    private final Path dir;
    private final Gpt model;
    private final List<ExpertWeights> blocks;
    private final List<ExpertRouter> routers;
    private final Map<String, Object> info;

    MoefiedModel(Path dir, Gpt model, List<ExpertRouter> routers, int experts, Map<String, Object> info) {
        this.dir = dir;
        this.model = model;
        this.routers = List.copyOf(routers);
        this.info = info;
        List<ExpertWeights> b = new ArrayList<>();
        for (int l = 0; l < model.config().layers(); l++) b.add(ExpertWeights.of(model.parameters(), model.config(), l, experts));
        this.blocks = List.copyOf(b);
    }

    /** Whether checkpoint {@code dir} was written by {@code shardwise moefy}. */
    public static boolean isMoefied(Path dir) throws IOException {
        return Checkpoint.metadata(dir).get(KEY) instanceof Map<?, ?>;
    }

    /**
     * Loads the MoEfied checkpoint at {@code path} (f32), its parameters and routers checked against their checksums.
     *
     * @throws IOException if it is not a readable checkpoint, or not a MoEfied one (saying how to make one)
     */
    public static MoefiedModel load(Path path, MemoryPool pool) throws IOException {
        Path dir = Checkpoint.resolve(path);
        Map<String, Object> metadata = Checkpoint.metadata(dir);
        if (!(metadata.get(KEY) instanceof Map<?, ?> raw)) {
            throw new IOException("checkpoint " + dir + " is not MoEfied (its manifest has no \"moefy\" entry); make one with "
                    + "shardwise moefy --checkpoint RUN --experts E, then pass its output directory");
        }
        @SuppressWarnings("unchecked")
        Map<String, Object> info = (Map<String, Object>) raw;
        ModelConfig config = Checkpoint.modelConfig(dir);
        int experts = ((Number) info.get("experts")).intValue(), routerHidden = ((Number) info.get("routerHidden")).intValue();
        Gpt model = new Gpt(config, Gpt.declare(config).allocate(pool, DType.F32));
        List<ExpertRouter> routers = new ArrayList<>();
        try {
            Checkpoint.loadParameters(dir, model.parameters());
            Map<String, Tensor> tensors = new LinkedHashMap<>();
            for (int l = 0; l < config.layers(); l++) {
                ExpertRouter r = ExpertRouter.allocate(pool, DType.F32, config.hidden(), routerHidden, experts);
                routers.add(r);
                tensors.putAll(r.tensors(routerPrefix(l)));
            }
            Checkpoint.readTensors(dir, tensors);
            return new MoefiedModel(dir, model, routers, experts, info);
        } catch (IOException | RuntimeException e) {
            for (ExpertRouter r : routers) r.close();
            model.close();
            throw e;
        }
    }

    /**
     * Writes {@code model} (its FFNs already in expert order) with {@code routers} as a MoEfied checkpoint at
     * {@code out}, atomically; {@code metadata} is the dense checkpoint's (step, state, model, tokenizer, ...) and
     * {@code info} goes under "moefy".
     */
    static Path write(Path out, Gpt model, List<ExpertRouter> routers, Map<String, Object> info, Map<String, Object> metadata,
                      List<Path> attachments) throws IOException {
        Map<String, Tensor> extra = new LinkedHashMap<>();
        for (int l = 0; l < routers.size(); l++) {
            ExpertRouter r = routers.get(l);
            extra.put(routerPrefix(l) + "w1", r.w1);
            extra.put(routerPrefix(l) + "b1", r.b1);
            extra.put(routerPrefix(l) + "w2", r.w2);
            extra.put(routerPrefix(l) + "b2", r.b2);
        }
        Map<String, Object> m = new LinkedHashMap<>(metadata);
        m.put(KEY, info);
        return Checkpoint.writeModel(out, model.parameters(), extra, m, attachments);
    }

    static String routerPrefix(int layer) {
        return "moefy/h." + layer + ".router.";
    }

    /** The checkpoint directory. */
    public Path directory() { return dir; }

    /** The dense model (FFNs in expert order), running its own FFN unless {@link #useActive} installed the experts. */
    public Gpt model() { return model; }

    /** E. */
    public int experts() { return blocks.getFirst().experts(); }

    /** Block {@code layer}'s experts (views of the model's FFN parameters). */
    ExpertWeights block(int layer) { return blocks.get(layer); }

    /** Block {@code layer}'s router. */
    ExpertRouter router(int layer) { return routers.get(layer); }

    /** What moefy recorded (experts, router size, source run, router recall). */
    public Map<String, Object> info() { return info; }

    /** The run's resolved config, copied into the checkpoint. */
    public Path configFile() { return dir.resolve(CONFIG_FILE); }

    /**
     * Makes the model run K = {@code active} of its E experts per token in every block from now on; 0 restores the
     * dense FFN.
     *
     * @return the installed FFN (its {@link SparseExpertFeedForward#seconds} times it), or null for 0
     * @throws IllegalArgumentException unless 0 <= active <= E
     */
    public SparseExpertFeedForward useActive(int active) {
        if (active == 0) {
            model.substituteFeedForward(null);
            return null;
        }
        SparseExpertFeedForward sparse = new SparseExpertFeedForward(blocks, routers, active);
        model.substituteFeedForward(sparse);
        return sparse;
    }

    /**
     * Makes the model run, per token, the K = {@code active} experts of largest actual activation mass (ground-truth
     * selection: the whole FFN is computed to find them), the bound for {@link #useActive}'s router.
     */
    public void useOracle(int active) {
        model.substituteFeedForward(new OracleExpertFeedForward(blocks, active));
    }

    @Override
    public void close() {
        for (ExpertRouter r : routers) r.close();
        model.close();
    }
}
