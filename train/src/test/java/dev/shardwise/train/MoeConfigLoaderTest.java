package dev.shardwise.train;

import dev.shardwise.model.ModelConfig;
import dev.shardwise.model.MoeConfig;
import org.junit.jupiter.api.Test;

import java.util.Map;

import static org.junit.jupiter.api.Assertions.*;

/** {@code model.moe} in configs: the moe-tiny preset, key-by-key overrides, defaults, round trips and refusals. */
class MoeConfigLoaderTest {
    @Test
    void moeTinyHasASharedHalfEightExpertsTopTwoAndTinysActiveFlopsPerToken() {
        ModelConfig tiny = ModelConfig.preset("tiny"), moe = ModelConfig.preset("moe-tiny");
        assertEquals(8, moe.moe().experts());
        assertEquals(2, moe.moe().topK());
        assertEquals(tiny.ffnHidden() / 4, moe.moe().expertHidden());
        assertEquals(tiny.ffnHidden() / 2, moe.moe().sharedExperts() * moe.moe().expertHidden(), "the shared MLP: F/2");
        // matrix weights per token: F/2 + 2·F/4 = F, as tiny; the extras per layer: the router's C·E weights and the
        // output biases (C) of the 2 routed experts and the shared MLP beside the dense MLP's one, and the routed
        // experts' hidden biases (2·F/4 + F/2 = F, as tiny's)
        assertEquals(tiny.trainingFlopsPerToken(256) + 6.0 * 4 * (256 * 8 + 2 * 256), moe.trainingFlopsPerToken(256), 1e-6);
        assertTrue(moe.parameterCount() > 3 * tiny.parameterCount() / 2, "all 8 experts are parameters");
        assertEquals(MoeConfig.Balance.AUX, moe.moe().balance());
    }

    @Test
    void yamlOverridesOneMoeKeyOfThePresetAndTheResolvedConfigRoundTrips() {
        TrainConfig c = ConfigLoader.resolve(Map.of("preset", "moe-tiny", "model", Map.of("moe",
                Map.of("balance", "bias", "capacityFactor", 1.25, "sharedExperts", 1, "routedScale", 2.5))), "x.yaml", Map.of());
        MoeConfig moe = c.model().moe();
        assertEquals(MoeConfig.Balance.BIAS, moe.balance());
        assertEquals(2.5, moe.routedScale());
        assertEquals(1.25, moe.capacityFactor());
        assertEquals(1, moe.sharedExperts());
        assertEquals(8, moe.experts(), "the preset's other keys stay");
        assertEquals(c.model(), ConfigLoader.modelFromMap(ConfigLoader.modelMap(c.model())), "model map round trip");
    }

    @Test
    void missingMoeKeysTakeDefaultsAndExpertsKeepTheDenseActiveWidth() {
        TrainConfig c = ConfigLoader.resolve(Map.of("model", Map.of("moe", Map.of("experts", 4, "topK", 1))), "x.yaml", Map.of());
        MoeConfig moe = c.model().moe();
        assertEquals(c.model().ffnHidden(), moe.expertHidden(), "top-1: one expert as wide as the dense MLP");
        assertEquals(MoeConfig.Balance.AUX, moe.balance());
        assertEquals(1.0, moe.routedScale(), "gates as the router gives them");
        assertTrue(moe.dropless());
        assertNull(ConfigLoader.resolve(Map.of(), "x.yaml", Map.of()).model().moe(), "tiny stays dense");
    }

    @Test
    void badMoeKeysAndValuesAreRefusedNamingTheKey() {
        IllegalArgumentException unknown = assertThrows(IllegalArgumentException.class, () -> ConfigLoader.resolve(
                Map.of("model", Map.of("moe", Map.of("expert", 4))), "x.yaml", Map.of()));
        assertTrue(unknown.getMessage().contains("model.moe.expert"), unknown.getMessage());
        IllegalArgumentException topK = assertThrows(IllegalArgumentException.class, () -> ConfigLoader.resolve(
                Map.of("model", Map.of("moe", Map.of("experts", 4, "topK", 5))), "x.yaml", Map.of()));
        assertTrue(topK.getMessage().contains("moe.topK must be in [1, moe.experts=4]"), topK.getMessage());
        IllegalArgumentException balance = assertThrows(IllegalArgumentException.class, () -> ConfigLoader.resolve(
                Map.of("model", Map.of("moe", Map.of("balance", "loss"))), "x.yaml", Map.of()));
        assertTrue(balance.getMessage().contains("aux, bias or none"), balance.getMessage());
        IllegalArgumentException scale = assertThrows(IllegalArgumentException.class, () -> ConfigLoader.resolve(
                Map.of("model", Map.of("moe", Map.of("routedScale", 0))), "x.yaml", Map.of()));
        assertTrue(scale.getMessage().contains("moe.routedScale must be positive"), scale.getMessage());
    }
}
