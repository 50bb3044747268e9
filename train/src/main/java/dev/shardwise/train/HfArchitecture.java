package dev.shardwise.train;

import dev.shardwise.core.kernels.Rotary;
import dev.shardwise.model.ModelConfig;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * The Hugging Face architectures a Shardwise model maps onto tensor by tensor: {@code GPT2LMHeadModel} (GPT-2's
 * Conv1D weights stored [in, out], the transpose of ours) and {@code LlamaForCausalLM} (nn.Linear [out, in] as ours;
 * our fused qkv weight is three tensors there, q_proj, k_proj and v_proj, row ranges of it; RoPE in the same
 * rotate-half convention; grouped-query heads repeated the same way). In both the head is tied to the embedding and
 * not stored. Each knows its tensor names and its {@code config.json}.
 */
enum HfArchitecture {
    GPT2("GPT2LMHeadModel", "gpt2"),
    LLAMA("LlamaForCausalLM", "llama");

    /**
     * One Hugging Face tensor: its name, the Shardwise parameter it is stored in, whether it is stored transposed,
     * and which rows of the Shardwise parameter it is (all of them unless {@code rows} is smaller).
     */
    record Tensor(String hfName, String name, boolean transposed, int firstRow, int rows) { }

    final String className, modelType;

    HfArchitecture(String className, String modelType) {
        this.className = className;
        this.modelType = modelType;
    }

    /**
     * The architecture {@code model} is.
     *
     * @throws IllegalArgumentException naming what keeps it from being a GPT-2 or a LLaMA
     */
    static HfArchitecture of(ModelConfig model, String what) {
        List<String> gpt2 = GPT2.differences(model), llama = LLAMA.differences(model);
        if (gpt2.isEmpty()) return GPT2;
        if (llama.isEmpty()) return LLAMA;
        throw new IllegalArgumentException(what + " is neither a GPT-2 (" + String.join(", ", gpt2) + ") nor a LLaMA ("
                + String.join(", ", llama) + "); only those two map onto Hugging Face's layouts");
    }

    /** What in {@code model} this architecture does not have; empty when the model is one. */
    List<String> differences(ModelConfig model) {
        List<String> differs = new ArrayList<>();
        boolean gpt2 = this == GPT2;
        if (model.norm() != (gpt2 ? ModelConfig.Norm.LAYER_NORM : ModelConfig.Norm.RMS_NORM)) differs.add("norm " + model.norm());
        if (model.mlp() != (gpt2 ? ModelConfig.Mlp.GELU : ModelConfig.Mlp.SWIGLU)) differs.add("mlp " + model.mlp());
        if (model.positions() != (gpt2 ? ModelConfig.Positions.LEARNED : ModelConfig.Positions.ROTARY)) {
            differs.add("positions " + model.positions());
        }
        if (model.residual() != ModelConfig.Residual.PRE_LN) differs.add("residual " + model.residual());
        if (model.bias() != gpt2) differs.add(gpt2 ? "no biases" : "biases");
        if (gpt2 && model.kvHeads() != model.heads()) differs.add("kvHeads " + model.kvHeads() + " != heads " + model.heads());
        if (model.topQueryLayer()) differs.add("a top-query layer");
        if (model.moe() != null) differs.add("mixture-of-experts layers");
        return differs;
    }

    /** The Hugging Face tensors of {@code model}, in file order. */
    List<Tensor> tensors(ModelConfig model) {
        List<Tensor> m = new ArrayList<>();
        if (this == GPT2) {
            m.add(whole("transformer.wte.weight", "wte", false));
            m.add(whole("transformer.wpe.weight", "wpe", false));
            for (int l = 0; l < model.layers(); l++) {
                String hf = "transformer.h." + l + ".", sw = "h." + l + ".";
                m.add(whole(hf + "ln_1.weight", sw + "ln1.weight", false));
                m.add(whole(hf + "ln_1.bias", sw + "ln1.bias", false));
                m.add(whole(hf + "attn.c_attn.weight", sw + "attn.qkv.weight", true));
                m.add(whole(hf + "attn.c_attn.bias", sw + "attn.qkv.bias", false));
                m.add(whole(hf + "attn.c_proj.weight", sw + "attn.proj.weight", true));
                m.add(whole(hf + "attn.c_proj.bias", sw + "attn.proj.bias", false));
                m.add(whole(hf + "ln_2.weight", sw + "ln2.weight", false));
                m.add(whole(hf + "ln_2.bias", sw + "ln2.bias", false));
                m.add(whole(hf + "mlp.c_fc.weight", sw + "mlp.fc.weight", true));
                m.add(whole(hf + "mlp.c_fc.bias", sw + "mlp.fc.bias", false));
                m.add(whole(hf + "mlp.c_proj.weight", sw + "mlp.proj.weight", true));
                m.add(whole(hf + "mlp.c_proj.bias", sw + "mlp.proj.bias", false));
            }
            m.add(whole("transformer.ln_f.weight", "ln_f.weight", false));
            m.add(whole("transformer.ln_f.bias", "ln_f.bias", false));
            return m;
        }
        int headSize = model.hidden() / model.heads(), q = model.heads() * headSize, kv = model.kvHeads() * headSize;
        m.add(whole("model.embed_tokens.weight", "wte", false));
        for (int l = 0; l < model.layers(); l++) {
            String hf = "model.layers." + l + ".", sw = "h." + l + ".";
            m.add(whole(hf + "input_layernorm.weight", sw + "ln1.weight", false));
            m.add(new Tensor(hf + "self_attn.q_proj.weight", sw + "attn.qkv.weight", false, 0, q));
            m.add(new Tensor(hf + "self_attn.k_proj.weight", sw + "attn.qkv.weight", false, q, kv));
            m.add(new Tensor(hf + "self_attn.v_proj.weight", sw + "attn.qkv.weight", false, q + kv, kv));
            m.add(whole(hf + "self_attn.o_proj.weight", sw + "attn.proj.weight", false));
            m.add(whole(hf + "post_attention_layernorm.weight", sw + "ln2.weight", false));
            m.add(whole(hf + "mlp.gate_proj.weight", sw + "mlp.gate.weight", false));
            m.add(whole(hf + "mlp.up_proj.weight", sw + "mlp.up.weight", false));
            m.add(whole(hf + "mlp.down_proj.weight", sw + "mlp.down.weight", false));
        }
        m.add(whole("model.norm.weight", "ln_f.weight", false));
        return m;
    }

    private static Tensor whole(String hfName, String name, boolean transposed) {
        return new Tensor(hfName, name, transposed, 0, -1);
    }

    /** {@code model}'s {@code config.json} in this architecture's keys. */
    Map<String, Object> config(ModelConfig model) {
        Map<String, Object> c = new LinkedHashMap<>();
        c.put("architectures", List.of(className));
        c.put("model_type", modelType);
        c.put("vocab_size", model.vocabSize());
        if (this == GPT2) {
            c.put("n_positions", model.contextLength());
            c.put("n_ctx", model.contextLength());
            c.put("n_embd", model.hidden());
            c.put("n_layer", model.layers());
            c.put("n_head", model.heads());
            c.put("n_inner", model.ffnHidden());
            c.put("activation_function", "gelu_new");
            c.put("layer_norm_epsilon", model.normEps());
        } else {
            c.put("hidden_size", model.hidden());
            c.put("intermediate_size", model.ffnHidden());
            c.put("num_hidden_layers", model.layers());
            c.put("num_attention_heads", model.heads());
            c.put("num_key_value_heads", model.kvHeads());
            c.put("max_position_embeddings", model.contextLength());
            c.put("rms_norm_eps", model.normEps());
            c.put("rope_theta", Rotary.LLAMA_THETA);
            c.put("hidden_act", "silu");
            c.put("attention_bias", false);
            c.put("mlp_bias", false);
        }
        c.put("tie_word_embeddings", true);
        c.put("torch_dtype", "float32");
        return c;
    }

    /**
     * The architecture a {@code config.json} describes, by its {@code model_type}.
     *
     * @throws IllegalArgumentException if it is neither GPT-2 nor LLaMA
     */
    static HfArchitecture fromConfig(Map<String, Object> config) {
        Object type = config.get("model_type");
        for (HfArchitecture a : values()) if (a.modelType.equals(type)) return a;
        throw new IllegalArgumentException("model_type " + type + " is not one Shardwise imports; it reads \"gpt2\" and \"llama\"");
    }

    /**
     * The Shardwise model a {@code config.json} of this architecture describes.
     *
     * @throws IllegalArgumentException if a key is missing or asks for what Shardwise's model does not do (an untied
     *                                  head, another RoPE base, RoPE scaling, biases in a LLaMA)
     */
    ModelConfig model(Map<String, Object> c) {
        if (this == GPT2) {
            int hidden = integer(c, "n_embd");
            return new ModelConfig(integer(c, "vocab_size"), integer(c, "n_positions"), integer(c, "n_layer"), hidden,
                    integer(c, "n_head"), integer(c, "n_head"), c.get("n_inner") instanceof Number i ? i.intValue() : 4 * hidden,
                    ModelConfig.Norm.LAYER_NORM, ModelConfig.Mlp.GELU, ModelConfig.Positions.LEARNED, ModelConfig.Residual.PRE_LN,
                    true, false, c.get("layer_norm_epsilon") instanceof Number e ? e.doubleValue() : 1e-5);
        }
        List<String> unsupported = new ArrayList<>();
        if (Boolean.FALSE.equals(c.get("tie_word_embeddings")) || !c.containsKey("tie_word_embeddings")) {
            unsupported.add("an untied lm_head (tie_word_embeddings is not true; Shardwise ties the head to the embedding)");
        }
        if (c.get("rope_theta") instanceof Number theta && theta.doubleValue() != Rotary.LLAMA_THETA) {
            unsupported.add("rope_theta " + theta + " (Shardwise rotates with base " + Rotary.LLAMA_THETA + ")");
        }
        if (c.get("rope_scaling") != null) unsupported.add("rope_scaling");
        if (Boolean.TRUE.equals(c.get("attention_bias")) || Boolean.TRUE.equals(c.get("mlp_bias"))) unsupported.add("biases");
        if (c.get("hidden_act") != null && !"silu".equals(c.get("hidden_act"))) unsupported.add("hidden_act " + c.get("hidden_act"));
        if (!unsupported.isEmpty()) {
            throw new IllegalArgumentException("this LLaMA has " + String.join(", ", unsupported) + ", which Shardwise's LLaMA does not");
        }
        int heads = integer(c, "num_attention_heads");
        return new ModelConfig(integer(c, "vocab_size"), integer(c, "max_position_embeddings"), integer(c, "num_hidden_layers"),
                integer(c, "hidden_size"), heads, c.get("num_key_value_heads") instanceof Number kv ? kv.intValue() : heads,
                integer(c, "intermediate_size"), ModelConfig.Norm.RMS_NORM, ModelConfig.Mlp.SWIGLU, ModelConfig.Positions.ROTARY,
                ModelConfig.Residual.PRE_LN, false, false, c.get("rms_norm_eps") instanceof Number e ? e.doubleValue() : 1e-6);
    }

    private static int integer(Map<String, Object> c, String key) {
        if (!(c.get(key) instanceof Number n)) throw new IllegalArgumentException("config.json has no number '" + key + "'");
        return n.intValue();
    }
}
