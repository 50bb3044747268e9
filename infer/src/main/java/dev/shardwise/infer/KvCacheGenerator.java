package dev.shardwise.infer;

import dev.shardwise.core.kernels.Bias;
import dev.shardwise.core.kernels.Embedding;
import dev.shardwise.core.kernels.Gelu;
import dev.shardwise.core.kernels.Gemm;
import dev.shardwise.core.kernels.LayerNorm;
import dev.shardwise.core.kernels.Vectors;
import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;
import dev.shardwise.model.ModelConfig;
import dev.shardwise.model.ParameterSet;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.ArrayList;
import java.util.List;

/**
 * Autoregressive decoding of a GPT with a key/value cache: each new token runs through the blocks as a single
 * row, appends its keys and values to per-layer caches, and attends over every cached position, so a token
 * costs O(parameters + T·C) instead of a full forward over the sequence. When the context fills up, the newest
 * half of the tokens is fed again into an empty cache (a sliding window).
 *
 * <p>Reads the parameters by their GPT names (see {@code Gpt.declare}); F32 only. Owns its caches and scratch
 * tensors ({@link #close()} frees them). Not thread-safe.
 */
public final class KvCacheGenerator implements TokenGenerator {
    private final ModelConfig config;
    private final ParameterSet params;
    private final int c, heads, kvHeads, headSize, qkvWidth, context;
    private final List<Tensor> owned = new ArrayList<>();
    private final Tensor[] keys;     // per layer [context, NKV·HS]
    private final Tensor[] values;   // per layer [context, NKV·HS]
    private final Tensor x, normed, mean, rstd, qkv, att, proj, hidden, gelu, logits, id, pos;
    private final float[] scores;
    private final List<Integer> history = new ArrayList<>();

    /** Whether {@code config} is a model this cached decoder can run (GPT-2 style). */
    public static boolean supports(ModelConfig config) {
        return config.norm() == ModelConfig.Norm.LAYER_NORM && config.mlp() == ModelConfig.Mlp.GELU
                && config.positions() == ModelConfig.Positions.LEARNED && config.residual() == ModelConfig.Residual.PRE_LN
                && config.bias() && !config.topQueryLayer() && config.moe() == null;
    }

    public KvCacheGenerator(ModelConfig config, ParameterSet params, MemoryPool pool) {
        if (params.dtype() != DType.F32) throw new IllegalArgumentException("generation runs in f32, got " + params.dtype().label());
        if (!supports(config)) {
            throw new IllegalArgumentException("cached generation supports GPT-2-style models (pre-LayerNorm, GELU, learned "
                    + "positions, biases); this model uses " + config.norm() + ", " + config.mlp() + ", " + config.positions()
                    + ", " + config.residual() + (config.topQueryLayer() ? ", a top query layer" : "")
                    + (config.moe() != null ? ", mixture-of-experts blocks" : ""));
        }
        this.config = config;
        this.params = params;
        this.c = config.hidden();
        this.heads = config.heads();
        this.kvHeads = config.kvHeads();
        this.headSize = config.headSize();
        this.qkvWidth = (heads + 2 * kvHeads) * headSize;
        this.context = config.contextLength();
        keys = new Tensor[config.layers()];
        values = new Tensor[config.layers()];
        for (int l = 0; l < config.layers(); l++) {
            keys[l] = allocate(pool, context, kvHeads * headSize);
            values[l] = allocate(pool, context, kvHeads * headSize);
        }
        x = allocate(pool, 1, c);
        normed = allocate(pool, 1, c);
        mean = allocate(pool, 1);
        rstd = allocate(pool, 1);
        qkv = allocate(pool, 1, qkvWidth);
        att = allocate(pool, 1, c);
        proj = allocate(pool, 1, c);
        hidden = allocate(pool, 1, config.ffnHidden());
        gelu = allocate(pool, 1, config.ffnHidden());
        logits = allocate(pool, 1, config.vocabSize());
        id = Tensor.allocate(pool, MemoryCategory.BUFFERS, DType.I32, 1);
        pos = Tensor.allocate(pool, MemoryCategory.BUFFERS, DType.I32, 1);
        owned.add(id);
        owned.add(pos);
        scores = new float[context];
    }

    private Tensor allocate(MemoryPool pool, int... shape) {
        Tensor t = Tensor.allocate(pool, MemoryCategory.ACTIVATIONS, DType.F32, shape);
        owned.add(t);
        return t;
    }

    /** Tokens fed so far that are in the cache. */
    public int position() {
        return history.size();
    }

    @Override
    public float[] feed(int token) {
        if (token < 0 || token >= config.vocabSize()) {
            throw new IllegalArgumentException("token " + token + " is outside the vocabulary [0, " + config.vocabSize() + ")");
        }
        if (history.size() == context) slideWindow();
        history.add(token);
        return run(token, history.size() - 1);
    }

    private void slideWindow() {
        List<Integer> keep = new ArrayList<>(history.subList(context / 2, history.size()));
        history.clear();
        for (int token : keep) {
            history.add(token);
            run(token, history.size() - 1);
        }
    }

    private float[] run(int token, int p) {
        id.segment().set(ValueLayout.JAVA_INT, 0, token);
        pos.segment().set(ValueLayout.JAVA_INT, 0, p);
        Embedding.forward(x, id, param("wte"), false);
        Embedding.forward(x, pos, param("wpe"), true);
        for (int l = 0; l < config.layers(); l++) {
            String h = "h." + l;
            layerNorm(h + ".ln1");
            linear(qkv, normed, h + ".attn.qkv");
            MemorySegment.copy(qkv.segment(), (long) heads * headSize * 4, keys[l].segment(), (long) p * kvHeads * headSize * 4,
                    (long) kvHeads * headSize * 4);
            MemorySegment.copy(qkv.segment(), (long) (heads + kvHeads) * headSize * 4, values[l].segment(),
                    (long) p * kvHeads * headSize * 4, (long) kvHeads * headSize * 4);
            attend(l, p);
            linear(proj, att, h + ".attn.proj");
            Vectors.accumulate(x, proj);
            layerNorm(h + ".ln2");
            linear(hidden, normed, h + ".mlp.fc");
            Gelu.forward(gelu, hidden);
            linear(proj, gelu, h + ".mlp.proj");
            Vectors.accumulate(x, proj);
        }
        layerNorm("ln_f");
        Gemm.matmul(logits, normed, param("wte"), false, true, 1f, 0f);
        float[] out = new float[config.vocabSize()];
        MemorySegment.copy(logits.segment(), ValueLayout.JAVA_FLOAT, 0, out, 0, out.length);
        return out;
    }

    /** att[h] = softmax(q_h · K[0..p]ᵀ / √HS) · V[0..p] for every head, reading the caches of layer {@code l}. */
    private void attend(int l, int p) {
        MemorySegment q = qkv.segment(), k = keys[l].segment(), v = values[l].segment(), o = att.segment();
        double scale = 1.0 / Math.sqrt(headSize);
        int group = heads / kvHeads, kvWidth = kvHeads * headSize;
        for (int h = 0; h < heads; h++) {
            long qOff = (long) h * headSize;
            long kvOff = (long) (h / group) * headSize;
            float max = Float.NEGATIVE_INFINITY;
            for (int t = 0; t <= p; t++) {
                float dot = 0;
                for (int e = 0; e < headSize; e++) {
                    dot += q.getAtIndex(ValueLayout.JAVA_FLOAT, qOff + e) * k.getAtIndex(ValueLayout.JAVA_FLOAT, (long) t * kvWidth + kvOff + e);
                }
                scores[t] = (float) (dot * scale);
                max = Math.max(max, scores[t]);
            }
            double sum = 0;
            for (int t = 0; t <= p; t++) {
                scores[t] = (float) Math.exp(scores[t] - max);
                sum += scores[t];
            }
            for (int e = 0; e < headSize; e++) {
                double acc = 0;
                for (int t = 0; t <= p; t++) acc += scores[t] * v.getAtIndex(ValueLayout.JAVA_FLOAT, (long) t * kvWidth + kvOff + e);
                o.setAtIndex(ValueLayout.JAVA_FLOAT, qOff + e, (float) (acc / sum));
            }
        }
    }

    private void layerNorm(String name) {
        LayerNorm.forward(normed, mean, rstd, x, param(name + ".weight"), param(name + ".bias"), config.normEps());
    }

    private void linear(Tensor out, Tensor in, String name) {
        Gemm.matmul(out, in, param(name + ".weight"), false, true, 1f, 0f);
        Bias.forward(out, param(name + ".bias"));
    }

    private Tensor param(String name) {
        return params.get(name).value();
    }

    @Override
    public void close() {
        for (Tensor t : owned) t.close();
        owned.clear();
    }
}
