package dev.shardwise.cli;

import org.junit.jupiter.api.Test;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** {@link RankOutput} turns mpirun's tagged output into rank-prefixed lines and one live progress line. */
class RankOutputTest {

    /** Output as mpirun 4.1 writes it when rank 0 prints a progress update between other ranks' lines. */
    private static final String TAGGED = "[1,0]<stdout>:hello 0\n[1,0]<stdout>:\rstep 1/2[1,1]<stdout>:hello 1\n"
            + "[1,1]<stderr>:warning from 1\n[1,0]<stdout>:\rstep 2/2\n--------\nmpirun noticed something\n";

    private record Printed(String out, String err, List<String> launcher) { }

    private static Printed feed(List<String> chunks, boolean live) {
        ByteArrayOutputStream out = new ByteArrayOutputStream(), err = new ByteArrayOutputStream();
        RankOutput output = new RankOutput(new PrintStream(out, true, StandardCharsets.UTF_8),
                new PrintStream(err, true, StandardCharsets.UTF_8), live);
        chunks.forEach(output::accept);
        output.finish();
        return new Printed(out.toString(StandardCharsets.UTF_8), err.toString(StandardCharsets.UTF_8), output.launcherLines());
    }

    @Test
    void linesGetTheirRankPrefixAndStreamWhateverTheChunkBoundaries() {
        Printed whole = feed(List.of(TAGGED), false);
        assertEquals("[rank 0] hello 0\n[rank 1] hello 1\n[rank 0] step 2/2\n", whole.out());
        assertEquals("[rank 1] warning from 1\n--------\nmpirun noticed something\n", whole.err());
        assertEquals(List.of("--------", "mpirun noticed something"), whole.launcher());
        for (int size : new int[] {1, 2, 3, 5, 7, 13}) {   // tags split across reads
            List<String> chunks = new java.util.ArrayList<>();
            for (int i = 0; i < TAGGED.length(); i += size) chunks.add(TAGGED.substring(i, Math.min(TAGGED.length(), i + size)));
            assertEquals(whole, feed(chunks, false), "chunks of " + size + " characters");
        }
    }

    @Test
    void textThatOnlyLooksLikeATagStaysText() {
        Printed p = feed(List.of("[1,0]<stdout>:array [1,2] and [x]<stdout>\n"), false);
        assertEquals("[rank 0] array [1,2] and [x]<stdout>\n", p.out());
    }

    @Test
    void liveModeDrawsRankZerosProgressInPlaceAndClearsItForOtherLines() {
        Printed p = feed(List.of("[1,0]<stdout>:\rstep 1/2   ", "[1,1]<stdout>:hello 1\n", "[1,0]<stdout>:\rstep 2/2   \n"), true);
        String clear = "\r" + " ".repeat("[rank 0] step 1/2".length()) + "\r";
        assertEquals("\r[rank 0] step 1/2" + clear + "[rank 1] hello 1\n" + "\r[rank 0] step 1/2" + clear
                + "[rank 0] step 2/2\n", p.out());
    }

    @Test
    void unfinishedLinesArePrintedAtTheEnd() {
        Printed p = feed(List.of("[1,1]<stdout>:no newline"), false);
        assertTrue(p.out().equals("[rank 1] no newline\n"), p.out());
    }
}
