package dev.shardwise.cli.bench;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** Runs the bench small (p=2, m=4, 1 ms of stand-in work): checks its output, not its timings. */
class BenchPipelineCommandTest {

    @Test
    void printsOneJsonRowPerScheduleWithItsFormulaAndWritesTheirTimelines(@TempDir Path dir) throws Exception {
        BenchPipelineCommand bench = new BenchPipelineCommand();
        bench.stages = 2;
        bench.microBatches = 4;
        bench.chunks = 2;
        bench.workMs = 1;
        bench.steps = 1;
        bench.json = true;
        bench.timeline = dir.resolve("trace.json");
        ByteArrayOutputStream bytes = new ByteArrayOutputStream();
        bench.run(new PrintStream(bytes, true, StandardCharsets.UTF_8));   // the stand-in throws if a message carried wrong data

        List<String> lines = bytes.toString(StandardCharsets.UTF_8).lines().toList();
        assertEquals(4, lines.size(), String.join("\n", lines));
        Pattern row = Pattern.compile("\\{\"bench\":\"pipeline\",\"case\":\"([^\"]+)\",\"value\":([-0-9.e]+),\"unit\":\"fraction\","
                + "\"peer\":\"formula\",\"peer_value\":([0-9.e-]+),\"ratio\":[-0-9.e]+,\"note\":\"[^\"]*\"}");
        // p=2, m=4: gpipe and 1f1b (p-1)/(m+p-1) = 1/5; interleaved v=2 1/9; zb-h1 at tF=tB=tW 1/13.
        String[] cases = {"gpipe", "1f1b", "interleaved v=2", "zb-h1"};
        double[] formulas = {0.2, 0.2, 1.0 / 9, 1.0 / 13};
        for (int i = 0; i < 4; i++) {
            Matcher m = row.matcher(lines.get(i));
            assertTrue(m.matches(), lines.get(i));
            assertEquals(cases[i], m.group(1));
            assertEquals(formulas[i], Double.parseDouble(m.group(3)), 1e-5, cases[i]);
            double measured = Double.parseDouble(m.group(2));
            assertTrue(measured > -0.5 && measured < 1, cases[i] + " measured bubble " + measured);
        }
        for (String name : List.of("trace-gpipe.json", "trace-1f1b.json", "trace-interleaved.json", "trace-zb-h1.json")) {
            String trace = Files.readString(dir.resolve(name));
            assertTrue(trace.startsWith("{\"traceEvents\":[") && trace.contains("\"pid\":1"), name);
        }
    }
}
