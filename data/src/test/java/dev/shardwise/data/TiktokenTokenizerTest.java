package dev.shardwise.data;

import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.*;

class TiktokenTokenizerTest {
    @Test
    void gpt2EncodesKnownIds() {
        Tokenizer gpt2 = Tokenizers.named("gpt2");
        assertArrayEquals(new int[] {15496, 995}, gpt2.encode("Hello world"));
        assertEquals(50257, gpt2.vocabSize());
        assertEquals(50256, gpt2.endOfText());
        assertEquals("Hello world", gpt2.decode(new int[] {15496, 995}));
        assertEquals("<|endoftext|>", gpt2.decode(new int[] {50256}));
        String s = "First Citizen:\nBefore we proceed 中文 😀";
        assertEquals(s, gpt2.decode(gpt2.encode(s)));
    }

    @Test
    void cl100kEncodesKnownIds() {
        Tokenizer cl = Tokenizers.named("cl100k");
        assertArrayEquals(new int[] {9906, 1917}, cl.encode("Hello world"));
        assertEquals(100257, cl.endOfText());
        assertEquals(100277, cl.vocabSize());
    }

    @Test
    void specialTokenTextIsOrdinaryText() {
        Tokenizer gpt2 = Tokenizers.named("gpt2");
        int[] ids = gpt2.encode("<|endoftext|>");
        assertTrue(ids.length > 1, "encoded as " + java.util.Arrays.toString(ids));
    }

    @Test
    void unknownNamesAndIdsAreRejectedWithTheKnownChoices() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> Tokenizers.named("gpt5"));
        assertTrue(e.getMessage().contains("gpt2") && e.getMessage().contains("cl100k"), e.getMessage());
        IllegalArgumentException id = assertThrows(IllegalArgumentException.class,
                () -> Tokenizers.named("gpt2").decode(new int[] {50257}));
        assertTrue(id.getMessage().contains("50257"), id.getMessage());
    }

    @Test
    void fingerprintsDifferBetweenEncodings() {
        assertNotEquals(Tokenizers.named("gpt2").fingerprint(), Tokenizers.named("cl100k").fingerprint());
        assertEquals(Tokenizers.named("gpt2").fingerprint(), Tokenizers.named("r50k_base").fingerprint());
    }
}
