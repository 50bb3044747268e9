package dev.shardwise.data;

import org.junit.jupiter.api.Test;

import java.util.ArrayList;
import java.util.List;

import static org.junit.jupiter.api.Assertions.*;

class PretokenizerTest {
    private static List<String> chunks(String s) {
        List<String> out = new ArrayList<>();
        Pretokenizer.split(s, (from, to) -> {
            assertTrue(to > from, "empty chunk at " + from + " in '" + s + "'");
            out.add(s.substring(from, to));
        });
        assertEquals(s, String.join("", out), "chunks do not partition '" + s + "'");
        return out;
    }

    @Test
    void splitsEnglishLikeGpt2() {
        assertEquals(List.of("Hello", ",", " world", "!", "\n\n", "All", ":"), chunks("Hello, world!\n\nAll:"));
        assertEquals(List.of("I", "'ll", " don", "'t", "  ", " go"), chunks("I'll don't   go"));
        assertEquals(List.of("123", "456", "7", " 42"), chunks("1234567 42"));
    }

    @Test
    void capsCjkRunsAtFourCharacters() {
        assertEquals(List.of("四海無波", "乞放閑", "，", "三封手疏", "犯龍顏", "。", "\n"), chunks("四海無波乞放閑，三封手疏犯龍顏。\n"));
        assertEquals(List.of("《", "木兰花慢", "》", " 程垓"), chunks("《木兰花慢》 程垓"));
    }

    @Test
    void keepsCombiningMarksWithTheirLetters() {
        assertEquals(List.of("cafe\u0301", " ok"), chunks("cafe\u0301 ok"));
    }
}
