package dev.shardwise.parallel.pipeline;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import java.util.TreeSet;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

class PipelineTimelineTest {

    /** A made-up step of {@code stage}: its program's instructions, 10 µs each, back to back. */
    private static PipelineExecutor.Step step(PipelineSchedule s, int stage) {
        List<PipelineExecutor.Event> events = new ArrayList<>();
        long t = 0;
        for (Instruction i : s.program(stage)) {
            events.add(new PipelineExecutor.Event(i, t, t + 10_000));
            t += 10_000;
        }
        return new PipelineExecutor.Step(stage, t, 0, 0, 0, 0, 0, 0, events);
    }

    @Test
    void writesOneRowPerRankOfCompleteEventsThatChromeTracingReads(@TempDir Path dir) throws Exception {
        PipelineSchedule s = PipelineSchedule.build(ScheduleKind.ZB_H1, 3, 1, 4);
        List<PipelineExecutor.Step> steps = List.of(step(s, 0), step(s, 1), step(s, 2));
        Path file = dir.resolve("pipeline.json");
        Files.writeString(file, "old");
        Timeline.write(file, steps);
        String json = Files.readString(file, StandardCharsets.UTF_8);

        assertTrue(json.startsWith("{\"traceEvents\":[") && json.strip().endsWith("}"), json.substring(0, 40));
        assertEquals(count(json, '{'), count(json, '}'), "balanced braces");
        assertEquals(count(json, '['), count(json, ']'), "balanced brackets");
        try (var files = Files.list(dir)) {
            assertEquals(List.of(file), files.toList(), "the temporary file was renamed, nothing left beside it");
        }

        Pattern complete = Pattern.compile("\\{\"name\":\"([^\"]+)\",\"cat\":\"([a-z-]+)\",\"ph\":\"X\",\"pid\":(\\d+),\"tid\":(\\d+),"
                + "\"ts\":[0-9.]+,\"dur\":[0-9.]+,\"args\":\\{\"instruction\":\"[^\"]+\"}}");
        Matcher m = complete.matcher(json);
        Set<Integer> rows = new TreeSet<>();
        List<String> rank1 = new ArrayList<>();
        int events = 0;
        while (m.find()) {
            events++;
            assertEquals(m.group(3), m.group(4), "pid = tid = rank");
            rows.add(Integer.parseInt(m.group(3)));
            if (m.group(3).equals("1")) rank1.add(m.group(1) + "/" + m.group(2));
        }
        int instructions = s.programs().stream().mapToInt(List::size).sum();
        assertEquals(instructions, events, "one complete event per instruction");
        assertEquals(Set.of(0, 1, 2), rows, "one row per rank");
        assertEquals(3, count(json, "\"process_name\""), "each rank's row is named");
        assertEquals("recv-act 0.0/pipeline-wait", rank1.get(0));
        assertEquals("F0.0/forward-compute", rank1.get(1));
        assertEquals("send-act 0.0/pipeline-send", rank1.get(2));
        assertTrue(rank1.contains("W3.0/backward-compute") && rank1.contains("B3.0/backward-compute"), rank1.toString());
        assertEquals(List.of("reduce/grads-reduce", "optimizer/optimizer"), rank1.subList(rank1.size() - 2, rank1.size()));
    }

    private static int count(String s, char c) {
        return (int) s.chars().filter(x -> x == c).count();
    }

    private static int count(String s, String sub) {
        return s.split(Pattern.quote(sub), -1).length - 1;
    }
}
