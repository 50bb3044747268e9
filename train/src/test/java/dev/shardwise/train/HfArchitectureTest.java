package dev.shardwise.train;

import dev.shardwise.model.ModelConfig;
import org.junit.jupiter.api.Test;

import java.util.HashMap;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.*;

/** Which models map onto Hugging Face's GPT-2 and LLaMA layouts, and the round trip of their config.json. */
class HfArchitectureTest {
    @Test
    void presetsMapOntoTheirArchitecture() {
        assertEquals(HfArchitecture.GPT2, HfArchitecture.of(ModelConfig.preset("gpt2-124m"), "m"));
        assertEquals(HfArchitecture.LLAMA, HfArchitecture.of(ModelConfig.preset("llama-tiny"), "m"));
        IllegalArgumentException moe = assertThrows(IllegalArgumentException.class,
                () -> HfArchitecture.of(ModelConfig.preset("moe-tiny"), "the checkpoint's model"));
        assertTrue(moe.getMessage().contains("mixture-of-experts") && moe.getMessage().contains("the checkpoint's model"), moe.getMessage());
    }

    @Test
    void configJsonRoundTrips() {
        for (String preset : List.of("gpt2-124m", "llama-tiny")) {
            ModelConfig model = ModelConfig.preset(preset);
            HfArchitecture a = HfArchitecture.of(model, preset);
            Map<String, Object> json = Json.readObject(Json.write(a.config(model)));
            assertEquals(a, HfArchitecture.fromConfig(json));
            assertEquals(model, a.model(json), preset);
        }
    }

    @Test
    void llamaSplitsTheFusedQkvIntoThreeRowRanges() {
        ModelConfig model = ModelConfig.preset("llama-tiny");   // 8 heads, 4 kv heads, head size 32
        List<HfArchitecture.Tensor> qkv = HfArchitecture.LLAMA.tensors(model).stream()
                .filter(t -> t.name().equals("h.0.attn.qkv.weight")).toList();
        assertEquals(List.of(new HfArchitecture.Tensor("model.layers.0.self_attn.q_proj.weight", "h.0.attn.qkv.weight", false, 0, 256),
                new HfArchitecture.Tensor("model.layers.0.self_attn.k_proj.weight", "h.0.attn.qkv.weight", false, 256, 128),
                new HfArchitecture.Tensor("model.layers.0.self_attn.v_proj.weight", "h.0.attn.qkv.weight", false, 384, 128)), qkv);
    }

    @Test
    void refusesWhatShardwiseLlamaDoesNotDo() {
        Map<String, Object> json = new HashMap<>(HfArchitecture.LLAMA.config(ModelConfig.preset("llama-tiny")));
        json.put("tie_word_embeddings", false);
        json.put("rope_theta", 500000.0);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> HfArchitecture.LLAMA.model(json));
        assertTrue(e.getMessage().contains("untied lm_head") && e.getMessage().contains("rope_theta 500000"), e.getMessage());
        json.put("model_type", "mistral");
        assertThrows(IllegalArgumentException.class, () -> HfArchitecture.fromConfig(json));
    }
}
