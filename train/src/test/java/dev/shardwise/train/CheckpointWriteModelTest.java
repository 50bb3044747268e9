package dev.shardwise.train;

import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;
import dev.shardwise.model.Gpt;
import dev.shardwise.model.ModelConfig;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.*;

/**
 * {@link Checkpoint#writeModel}: a model with extra named tensors written as one checkpoint directory, read back by
 * {@link Checkpoint#loadParameters} (extras ignored) and {@link Checkpoint#readTensors}; replacing an existing one
 * leaves no temporary directories; a name that collides with the parameters' is refused.
 */
class CheckpointWriteModelTest {
    @TempDir
    Path dir;

    @Test
    void writesParametersAndExtrasThatReadBackExactly() throws IOException {
        MemoryPool pool = MemoryPool.unlimited("rank 0");
        ModelConfig config = ModelConfig.gpt(31, 8, 1, 8, 2);
        Path out = dir.resolve("sub/out");
        try (Gpt model = Gpt.create(config, pool, DType.F32, 3);
             Gpt copy = new Gpt(config, Gpt.declare(config).allocate(pool, DType.F32));
             Tensor extra = Tensor.allocate(pool, MemoryCategory.BUFFERS, DType.F32, 3, 5);
             Tensor back = Tensor.allocate(pool, MemoryCategory.BUFFERS, DType.F32, 3, 5)) {
            for (int i = 0; i < 15; i++) extra.set(i * 0.25 - 1, i / 5, i % 5);
            Map<String, Object> metadata = Map.of("step", 7, "model", ConfigLoader.modelMap(config), "note", "kept");
            for (int round = 0; round < 2; round++) {   // the second write replaces the first
                assertEquals(out, Checkpoint.writeModel(out, model.parameters(), Map.of("extra/x", extra), metadata, List.of()));
            }
            try (var files = Files.list(out.getParent())) {
                assertEquals(List.of(out), files.toList(), "no temporary or old directories left beside it");
            }
            Checkpoint.loadParameters(out, copy.parameters());
            for (var p : model.parameters().parameters()) {
                assertArrayEquals(p.value().toFloatArray(), copy.parameters().get(p.name()).value().toFloatArray(), p.name());
            }
            Checkpoint.readTensors(out, Map.of("extra/x", back));
            assertArrayEquals(extra.toFloatArray(), back.toFloatArray());
            Map<String, Object> read = Checkpoint.metadata(out);
            assertEquals(7L, ((Number) read.get("step")).longValue());
            assertEquals("kept", read.get("note"));
            assertEquals(config, Checkpoint.modelConfig(out));
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> Checkpoint.writeModel(dir.resolve("bad"),
                    model.parameters(), Map.of("param/wte", extra), metadata, List.of()));
            assertTrue(e.getMessage().contains("param/wte"), e.getMessage());
            IOException missing = assertThrows(IOException.class, () -> Checkpoint.readTensors(out, Map.of("extra/y", back)));
            assertTrue(missing.getMessage().contains("extra/y"), missing.getMessage());
        }
    }
}
