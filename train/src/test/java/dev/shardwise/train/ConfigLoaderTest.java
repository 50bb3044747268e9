package dev.shardwise.train;

import dev.shardwise.model.ModelConfig;
import dev.shardwise.model.Recompute;
import dev.shardwise.parallel.ParallelLayout;
import dev.shardwise.parallel.pipeline.ScheduleKind;
import org.junit.jupiter.api.Test;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.List;
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

    /** Resolves the tiny preset with {@code flags} as if given on the command line. */
    private static TrainConfig flags(Object... keyValues) {
        Map<String, Object> flags = new HashMap<>();
        for (int i = 0; i < keyValues.length; i += 2) flags.put((String) keyValues[i], keyValues[i + 1]);
        return ConfigLoader.resolve(Map.of(), "test.yaml", flags);
    }

    private static String refusal(Object... keyValues) {
        return assertThrows(IllegalArgumentException.class, () -> flags(keyValues)).getMessage();
    }

    @Test
    void withoutDpTheRanksLeftByTpAndPpAreDataParallel() {
        TrainConfig c = flags("ranks", 4, "pp", 2);
        assertEquals(new ParallelLayout(2, 1, 2, 1, 1, false, 0, Recompute.NONE, 8), c.layout(), "dp = ranks / (tp·pp)");
        assertEquals(4, c.ranks());
        assertEquals(ScheduleKind.ONE_F_ONE_B, c.schedule(), "1f1b is the default without vpp");
        assertEquals(1, flags().ranks(), "one rank without ranks or dp");
        assertEquals(8, flags("ranks", 8).layout().dp());
        assertEquals(8 * 256 * 8, flags("ranks", 8).tokensPerStep(), "B·T·accumulation·dp");
    }

    @Test
    void withoutRanksTheWorldIsDpTimesTpTimesPp() {
        TrainConfig c = flags("dp", 3, "pp", 2, "vpp", 2);
        assertEquals(6, c.ranks());
        assertEquals(ScheduleKind.INTERLEAVED, c.schedule(), "interleaved is the default with vpp > 1");
        assertEquals(3, flags("dp", 3, "ranks", 3).layout().dp(), "ranks and dp may both be given when they agree");
    }

    @Test
    void aWorldTpAndPpDoNotDivideIsRefusedNamingTheFix() {
        String m = refusal("ranks", 4, "pp", 3);
        assertTrue(m.contains("ranks=4 (command line)") && m.contains("tp·pp=3 does not divide world size=4")
                && m.contains("use tp·pp in {1, 2, 4}") && m.contains("ranks as a multiple of tp·pp=3"), m);
        String disagree = refusal("ranks", 4, "dp", 3);
        assertTrue(disagree.contains("ranks=4 (command line) and dp=3 (command line) disagree")
                && disagree.contains("use dp=4 for 4 ranks"), disagree);
    }

    @Test
    void vppWithoutPipelineStagesIsRefused() {
        String m = refusal("vpp", 2);
        assertTrue(m.contains("vpp=2 needs pp >= 2") && m.contains("use pp >= 2 or vpp=1"), m);
        String interleaved = refusal("schedule", "interleaved", "ranks", 2, "pp", 2);
        assertTrue(interleaved.contains("schedule=interleaved needs vpp >= 2"), interleaved);
        String unknown = refusal("schedule", "zigzag");
        assertTrue(unknown.contains("schedule='zigzag' is not a pipeline schedule; use one of gpipe, 1f1b"), unknown);
    }

    @Test
    void impossibleSettingsAreRefusedWithTheSettingToUse() {
        assertEquals(2, flags("ranks", 2, "tp", 2, "model", Map.of("topQueryLayer", true)).layout().tp(),
                "PanGu-α's top query layer splits over tp");
        String offload = refusal("offloadOptimizer", "/tmp/x");
        assertTrue(offload.contains("needs zero >= 1"), offload);
        String layers = refusal("ranks", 8, "pp", 4, "vpp", 2);   // tiny has 4 layers, 8 chunks asked
        assertTrue(layers.contains("pp·vpp=4·2=8 model chunks but model.layers=4") && layers.contains("use pp·vpp <= 4"), layers);
    }

    @Test
    void tensorParallelismSplitsHeadsAndPadsTheVocabulary() {
        TrainConfig c = flags("ranks", 4, "tp", 2, "model", Map.of("vocabSize", 8193));
        assertEquals(2, c.layout().tp(), "tp 2");
        assertEquals(2, c.layout().dp(), "dp = ranks / tp");
        String heads = refusal("ranks", 3, "tp", 3);   // tiny has 4 heads
        assertTrue(heads.contains("tp=3 does not divide model.heads=4"), heads);
    }

    @Test
    void pipelineCutIsCheckedAgainstTheLayoutAndTheLayers() {
        Map<String, Object> model = Map.of("layers", 8);
        TrainConfig c = flags("model", model, "ranks", 3, "pp", 3, "pipelineCut", List.of(0, 3, 6));
        assertEquals(List.of(0, 3, 6), c.pipelineCut(), "8 layers over pp 3: blocks [0,3), [3,6), [6,8)");
        assertEquals(List.of(0, 3, 6), flags("model", model, "ranks", 3, "pp", 3, "pipelineCut", "0, 3,6").pipelineCut(),
                "the flag's comma-separated form");
        assertNull(flags("model", model, "ranks", 3, "pp", 3).pipelineCut(), "absent: balanced automatically");

        String count = refusal("model", model, "ranks", 3, "pp", 3, "pipelineCut", List.of(0, 4));
        assertTrue(count.contains("pipelineCut=[0, 4] has 2 entries but pp·vpp=3·1=3 model chunks need 3")
                && count.contains("e.g. [0, 2, 5]"), count);
        String start = refusal("model", model, "ranks", 3, "pp", 3, "pipelineCut", List.of(1, 3, 6));
        assertTrue(start.contains("pipelineCut=[1, 3, 6] starts at 1, but the first chunk starts at block 0"), start);
        String order = refusal("model", model, "ranks", 3, "pp", 3, "pipelineCut", List.of(0, 3, 3));
        assertTrue(order.contains("pipelineCut=[0, 3, 3] is not strictly increasing at entry 2 (3 then 3)"), order);
        String beyond = refusal("model", model, "ranks", 3, "pp", 3, "pipelineCut", List.of(0, 3, 8));
        assertTrue(beyond.contains("starts a chunk at block 8 but model.layers=8"), beyond);
        String text = refusal("model", model, "ranks", 3, "pp", 3, "pipelineCut", "0,x,6");
        assertTrue(text.contains("pipelineCut must list the first block of each model chunk"), text);
        String every = refusal("recomputeEvery", 0);
        assertTrue(every.contains("recomputeEvery=0 must be at least 1"), every);
    }

    @Test
    void aResolvedLayoutReadsBackToItself() throws IOException {
        TrainConfig config = flags("model", Map.of("layers", 8), "ranks", 8, "pp", 2, "vpp", 2, "zero", 1,
                "recompute", "selective", "recomputeEvery", 2, "schedule", "interleaved", "pipelineCut", List.of(0, 2, 4, 7));
        assertEquals(new ParallelLayout(4, 1, 2, 2, 1, false, 1, Recompute.SELECTIVE, 8), config.layout());
        Path tmp = Files.createTempFile("config", ".yaml");
        try {
            Files.writeString(tmp, ConfigLoader.toYaml(config));
            Map<String, Object> yaml = ConfigLoader.readYaml(tmp);
            assertEquals(8, yaml.get("ranks"));
            assertEquals(4, yaml.get("dp"));
            assertEquals("interleaved", yaml.get("schedule"));
            assertEquals(config, ConfigLoader.resolve(yaml, tmp.toString(), Map.of()));
        } finally {
            Files.delete(tmp);
        }
    }
}
