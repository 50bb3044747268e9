package dev.shardwise.train;

import dev.shardwise.model.ModelConfig;
import org.junit.jupiter.api.Test;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.*;

class ConfigLoaderTest {

    @Test
    void theShippedExampleConfigResolves() throws IOException {
        Path file = Path.of("..", "configs", "tiny-shakespeare.yaml");
        assertTrue(Files.isRegularFile(file), "configs/tiny-shakespeare.yaml ships with the repository");
        TrainConfig config = ConfigLoader.resolve(ConfigLoader.readYaml(file), file.toString(), Map.of("steps", 7));
        assertEquals(7, config.steps(), "flags override the file");
        assertEquals(ModelConfig.preset("tiny"), config.model());
        assertEquals(8 * 256, config.tokensPerStep());
    }

    @Test
    void aResolvedConfigReadsBackToItself() throws IOException {
        Map<String, Object> flags = Map.of("preset", "llama-tiny", "steps", 3, "model", Map.of("residual", "deepnorm"));
        TrainConfig config = ConfigLoader.resolve(Map.of(), "test", flags);
        assertEquals(ModelConfig.Residual.DEEPNORM, config.model().residual());
        Path tmp = Files.createTempFile("config", ".yaml");
        Files.writeString(tmp, ConfigLoader.toYaml(config));
        assertEquals(config, ConfigLoader.resolve(ConfigLoader.readYaml(tmp), tmp.toString(), Map.of()));
        Files.delete(tmp);
    }
}
