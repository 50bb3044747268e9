package dev.shardwise.cli;

import org.junit.jupiter.api.Test;
import picocli.CommandLine;

import java.io.PrintWriter;
import java.io.StringWriter;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

class PlanCommandTest {
    private record Run(int code, String out, String err) { }

    private static Run run(String... args) {
        CommandLine cli = Main.commandLine();
        StringWriter out = new StringWriter();
        StringWriter err = new StringWriter();
        cli.setOut(new PrintWriter(out));
        cli.setErr(new PrintWriter(err));
        int code = cli.execute(args);
        return new Run(code, out.toString(), err.toString());
    }

    @Test
    void planRanksLayoutsOfGpt3OnTheSeleneCluster() {
        Run r = run("plan", "--model", "gpt3-175b", "--cluster", "a100x3072", "--global-batch", "1536", "--top", "5");
        assertEquals(0, r.code(), r.err());
        assertTrue(r.out().contains("rank") && r.out().contains("best: tp="), r.out());
        assertEquals(5, r.out().lines().filter(l -> l.matches("^[1-5] .*")).count(), r.out());
    }

    @Test
    void explainPrintsTheBreakdownOfOneLayout() {
        Run r = run("plan", "--model", "gpt-145b", "--cluster", "a100x3072", "--global-batch", "2304",
                "--explain", "tp=8,pp=8,dp=24,vpp=2,mb=2,recompute=full,sp=false,zero=0");
        assertEquals(0, r.code(), r.err());
        assertTrue(r.out().contains("schedule interleaved") && r.out().contains("bubble") && r.out().contains("activations"), r.out());
    }

    @Test
    void jsonPrintsOneObjectPerLayoutWithTheIssueFields() {
        Run r = run("plan", "--model", "gpt-22b", "--cluster", "a100x8", "--global-batch", "4", "--top", "3", "--json");
        assertEquals(0, r.code(), r.err());
        var lines = r.out().lines().toList();
        assertEquals(3, lines.size(), r.out());
        for (String key : new String[] {"\"step_s\"", "\"tflops_per_device_model\"", "\"tflops_per_device_hardware\"", "\"mfu\"",
                "\"mem_bytes_per_device\"", "\"mem_breakdown\""}) {
            assertTrue(lines.getFirst().contains(key), key + " missing in " + lines.getFirst());
        }
    }

    @Test
    void anUnknownModelSaysWhichPresetsExist() {
        Run r = run("plan", "--model", "gpt-9t", "--cluster", "a100x8", "--global-batch", "8");
        assertEquals(2, r.code());
        assertTrue(r.err().contains("gpt3-175b"), r.err());
    }

    @Test
    void calibrationPrintsEveryShippedRowAndTheErrors() {
        Run r = run("plan", "--calibration");
        assertEquals(0, r.code(), r.err());
        assertEquals(2, r.out().lines().filter(l -> l.contains("mean |error|")).count(), r.out());
        assertTrue(r.out().contains("GPT-1T") && r.out().contains("held-out rows"), r.out());
    }

    @Test
    void planWithoutTheModelSaysWhatItNeeds() {
        Run r = run("plan", "--cluster", "a100x8");
        assertEquals(2, r.code());
        assertTrue(r.err().contains("--model, --cluster and --global-batch"), r.err());
    }
}
