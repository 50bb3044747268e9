package dev.shardwise.model;

import org.junit.jupiter.api.Test;

import java.util.List;

import static org.junit.jupiter.api.Assertions.*;

class PipelineCutTest {

    @Test
    void balancedCutCoversEveryBlockOnceWithEmbeddingFirstAndHeadLast() {
        for (String preset : ModelConfig.PRESETS) {
            ModelConfig config = ModelConfig.preset(preset);
            for (int parts = 1; parts <= Math.min(8, config.layers() + 2); parts++) {
                List<GptPart.Span> spans = PipelineCut.balanced(config, 256, parts);
                assertEquals(parts, spans.size());
                int next = 0;
                for (int k = 0; k < parts; k++) {
                    GptPart.Span s = spans.get(k);
                    assertEquals(k == 0, s.embedding(), preset + " part " + k);
                    assertEquals(k == parts - 1, s.head(), preset + " part " + k);
                    assertEquals(next, s.firstBlock(), preset + " parts " + spans);
                    next = s.endBlock();
                }
                assertEquals(config.layers(), next, preset + " every block in some part: " + spans);
            }
        }
    }

    @Test
    void headOfALargeVocabularyCountsAsSeveralBlocks() {
        // gpt2-124m: 12 blocks and a 50257-token head worth about 4.5 blocks; 4 parts leave the head's part fewer blocks
        List<GptPart.Span> spans = PipelineCut.balanced(ModelConfig.preset("gpt2-124m"), 1024, 4);
        assertTrue(spans.getLast().blocks() < spans.getFirst().blocks(), "head part lighter in blocks: " + spans);
        // tiny at 4 parts: the head alone is worth more than a block, so it gets a part of its own or one block
        List<GptPart.Span> tiny = PipelineCut.balanced(ModelConfig.preset("tiny"), 256, 4);
        assertTrue(tiny.getLast().blocks() <= 1, "tiny: " + tiny);
    }

    @Test
    void pinnedCutIsTakenAsWrittenAndBadOnesAreRefusedWithTheFix() {
        ModelConfig config = ModelConfig.preset("tiny");   // 4 layers
        List<GptPart.Span> spans = PipelineCut.pinned(config, List.of(0, 1, 3), 3);
        assertEquals(List.of(new GptPart.Span(true, 0, 1, false), new GptPart.Span(false, 1, 3, false),
                new GptPart.Span(false, 3, 4, true)), spans);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> PipelineCut.pinned(config, List.of(0, 2), 3));
        assertTrue(e.getMessage().contains("pp·vpp = 3"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> PipelineCut.pinned(config, List.of(0, 3, 2), 3));
        assertTrue(e.getMessage().contains("strictly increasing"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> PipelineCut.pinned(config, List.of(1, 2, 3), 3));
        assertTrue(e.getMessage().contains("block 0"), e.getMessage());
    }
}
