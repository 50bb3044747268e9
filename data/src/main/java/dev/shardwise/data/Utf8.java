package dev.shardwise.data;

import java.util.Arrays;

/**
 * UTF-8 conversion that round-trips every Java {@link String}, including unpaired surrogates.
 *
 * <p>Well-formed text is encoded as standard UTF-8. An unpaired surrogate (which standard encoders replace with
 * {@code '?'}) is written as its 3-byte generalized form ({@code ED A0..BF xx}, the WTF-8 convention), so a
 * byte-level tokenizer can give back exactly the string it was given. The decoder accepts those forms and
 * turns every other ill-formed sequence into U+FFFD, one per ill-formed sequence, and counts them.
 */
final class Utf8 {
    private Utf8() {}

    /** The UTF-8 bytes of {@code s} (generalized for unpaired surrogates). */
    static byte[] encode(CharSequence s) {
        return encode(s, 0, s.length());
    }

    /** The UTF-8 bytes of {@code s[from, to)}. */
    static byte[] encode(CharSequence s, int from, int to) {
        byte[] out = new byte[Math.max(16, (to - from) * 3)];
        int n = 0;
        for (int i = from; i < to; i++) {
            char c = s.charAt(i);
            if (c < 0x80) {
                out[n++] = (byte) c;
            } else if (c < 0x800) {
                out[n++] = (byte) (0xC0 | (c >> 6));
                out[n++] = (byte) (0x80 | (c & 0x3F));
            } else if (Character.isHighSurrogate(c) && i + 1 < to && Character.isLowSurrogate(s.charAt(i + 1))) {
                int cp = Character.toCodePoint(c, s.charAt(++i));
                out[n++] = (byte) (0xF0 | (cp >> 18));
                out[n++] = (byte) (0x80 | ((cp >> 12) & 0x3F));
                out[n++] = (byte) (0x80 | ((cp >> 6) & 0x3F));
                out[n++] = (byte) (0x80 | (cp & 0x3F));
            } else {
                // Includes unpaired surrogates, written in the generalized 3-byte form.
                out[n++] = (byte) (0xE0 | (c >> 12));
                out[n++] = (byte) (0x80 | ((c >> 6) & 0x3F));
                out[n++] = (byte) (0x80 | (c & 0x3F));
            }
        }
        return n == out.length ? out : Arrays.copyOf(out, n);
    }

    /** Decoded text and the number of ill-formed sequences replaced by U+FFFD. */
    record Decoded(String text, long invalidSequences, long nulBytes) {}

    /** Decodes {@code bytes[from, to)}; see the class comment for the handling of ill-formed input. */
    static Decoded decode(byte[] bytes, int from, int to) {
        StringBuilder sb = new StringBuilder(to - from);
        long invalid = 0;
        long nuls = 0;
        int i = from;
        while (i < to) {
            int b = bytes[i] & 0xFF;
            if (b < 0x80) {
                if (b == 0) nuls++;
                sb.append((char) b);
                i++;
                continue;
            }
            int need;
            int cp;
            int min;
            if (b >= 0xC2 && b <= 0xDF) { need = 1; cp = b & 0x1F; min = 0x80; }
            else if (b >= 0xE0 && b <= 0xEF) { need = 2; cp = b & 0x0F; min = 0x800; }
            else if (b >= 0xF0 && b <= 0xF4) { need = 3; cp = b & 0x07; min = 0x10000; }
            else { sb.append('\uFFFD'); invalid++; i++; continue; }
            int j = i + 1;
            int got = 0;
            while (got < need && j < to && (bytes[j] & 0xC0) == 0x80) {
                cp = (cp << 6) | (bytes[j] & 0x3F);
                j++;
                got++;
            }
            if (got < need || cp < min || cp > 0x10FFFF) {
                // A truncated, overlong or out-of-range sequence: one U+FFFD for the lead byte and the
                // continuation bytes that followed it; resume at the next byte that is not a continuation.
                sb.append('\uFFFD');
                invalid++;
                i = j;
                continue;
            }
            sb.appendCodePoint(cp);   // surrogate code points come back as the lone char they encoded
            i = j;
        }
        return new Decoded(sb.toString(), invalid, nuls);
    }

    /** Decodes bytes, replacing ill-formed sequences with U+FFFD. */
    static String decode(byte[] bytes) {
        return decode(bytes, 0, bytes.length).text();
    }
}
