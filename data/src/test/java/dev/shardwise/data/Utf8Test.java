package dev.shardwise.data;

import org.junit.jupiter.api.Test;

import java.nio.charset.StandardCharsets;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.*;

class Utf8Test {
    @Test
    void wellFormedTextMatchesTheJdkEncoder() {
        String s = "ascii é 中文 😀 \u0000";
        assertArrayEquals(s.getBytes(StandardCharsets.UTF_8), Utf8.encode(s));
        assertEquals(s, Utf8.decode(s.getBytes(StandardCharsets.UTF_8)));
    }

    @Test
    void everyStringRoundTripsIncludingUnpairedSurrogates() {
        SplittableRandom random = new SplittableRandom(1);
        for (int k = 0; k < 2000; k++) {
            char[] c = new char[random.nextInt(0, 12)];
            for (int i = 0; i < c.length; i++) c[i] = (char) random.nextInt(0, 0x10000);
            String s = new String(c);
            assertEquals(s, Utf8.decode(Utf8.encode(s)), "case " + k);
        }
    }

    @Test
    void illFormedBytesBecomeReplacementCharactersAndAreCounted() {
        byte[] bad = {'a', (byte) 0xFF, 'b', (byte) 0xC3, 'c', (byte) 0xE4, (byte) 0xB8, 0, (byte) 0xC0, (byte) 0x80};
        Utf8.Decoded d = Utf8.decode(bad, 0, bad.length);
        // C0 is never a valid lead byte (overlong), so C0 80 gives two replacements, as the JDK decoder does.
        assertEquals("a\uFFFDb\uFFFDc\uFFFD\u0000\uFFFD\uFFFD", d.text());
        assertEquals(5, d.invalidSequences());
        assertEquals(new String(bad, StandardCharsets.UTF_8), d.text());
        assertEquals(1, d.nulBytes());
    }
}
