package dev.shardwise.cli;

import org.junit.jupiter.api.Test;
import picocli.CommandLine;

import java.io.PrintWriter;
import java.io.StringWriter;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** {@code shardwise launch}'s command line: what it prints and what it refuses, without starting processes. */
class LaunchCommandTest {
    private record Run(int code, String out, String err) { }

    private static Run run(String... args) {
        StringWriter out = new StringWriter(), err = new StringWriter();
        CommandLine cli = Main.commandLine();
        cli.setOut(new PrintWriter(out));
        cli.setErr(new PrintWriter(err));
        int code = cli.execute(args);
        return new Run(code, out.toString(), err.toString());
    }

    @Test
    void printsTheSrunLineWithOrWithoutTheDoubleDash() {
        for (String[] args : new String[][] {{"launch", "--nproc", "8", "--print", "slurm", "--", "train", "--preset", "tiny"},
                {"launch", "--nproc", "8", "--print", "slurm", "train", "--preset", "tiny"}}) {
            Run r = run(args);
            assertEquals(0, r.code(), r.err());
            assertTrue(r.out().lines().anyMatch(l -> l.startsWith("SHARDWISE_SKIP_BUILD=1 srun --ntasks=8 ") && l.endsWith(" train --preset tiny")),
                    String.join(" ", args) + ":\n" + r.out());
        }
    }

    @Test
    void refusesCommandsThatDoNotRunAsOneRankPerProcess() {
        Run r = run("launch", "--nproc", "2", "--", "demo");
        assertEquals(2, r.code());
        assertTrue(r.err().contains("'demo' does not run as one rank per process"), r.err());
        r = run("launch", "--nproc", "2", "--print", "yaml", "--", "train");
        assertEquals(2, r.code());
        assertTrue(r.err().contains("--print slurm or --print k8s"), r.err());
    }
}
