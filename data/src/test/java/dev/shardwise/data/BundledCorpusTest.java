package dev.shardwise.data;

import org.junit.jupiter.api.Test;

import java.nio.charset.StandardCharsets;
import java.util.HexFormat;

import static org.junit.jupiter.api.Assertions.*;

class BundledCorpusTest {
    @Test
    void tinyShakespeareMatchesTheDocumentedChecksums() {
        BundledCorpus.Corpus c = BundledCorpus.tinyShakespeare();
        assertEquals("b5daab46b3d0653d2943ed722a286207f18b5a5da5d995d11c29c248ee0e6b17", sha256(c.train().text()));
        assertEquals("134871f445b99bf6a3d91afb08ebe2701ce32bc3b87ace06a67ca8c8cd32afc4", sha256(c.val().text()));
        assertTrue(c.val().text().startsWith("She vied so fast"));
    }

    private static String sha256(String s) {
        return HexFormat.of().formatHex(ByteLevelBpe.sha256(s.getBytes(StandardCharsets.UTF_8)));
    }
}
