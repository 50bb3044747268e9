package dev.shardwise.cli;

import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import picocli.CommandLine;

import java.io.IOException;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

import static org.junit.jupiter.api.Assertions.*;

/**
 * {@code moefy} end to end on a tiny trained run: MoEfy it, evaluate K = 1..E, sample with K experts; and the
 * mistakes a user can make (E not dividing F, evaluating a dense run, --active on a dense checkpoint) as one-line
 * errors.
 */
class MoefyCommandTest {
    private record Run(int code, String out, String err) { }

    @TempDir
    static Path dir;
    static Path run;

    private static Run run(String... args) {
        StringWriter out = new StringWriter(), err = new StringWriter();
        CommandLine cli = Main.commandLine();
        cli.setOut(new PrintWriter(out));
        cli.setErr(new PrintWriter(err));
        int code = cli.execute(args);
        return new Run(code, out.toString(), err.toString());
    }

    private static void oneLine(Run r, String... mentions) {
        assertEquals(2, r.code(), r.err());
        assertEquals(1, r.err().strip().lines().count(), "one line: " + r.err());
        assertFalse(r.err().contains("Exception") || r.err().contains("\tat "), "no stack trace: " + r.err());
        for (String m : mentions) assertTrue(r.err().contains(m), "mentions " + m + ": " + r.err());
    }

    @BeforeAll
    static void trainAFewSteps() throws IOException {
        Files.writeString(dir.resolve("text.txt"), "the king shall speak now and we will hear him o my lord.\n\n".repeat(300));
        assertEquals(0, run("prepare", "--train-tokenizer", "--vocab", "300", dir.resolve("text.txt").toString(), "-o",
                dir.resolve("data").toString()).code());
        Files.writeString(dir.resolve("m.yaml"), "evalBatches: 2\nmodel: {vocabSize: 300, contextLength: 16, layers: 2, hidden: 16, "
                + "heads: 2, kvHeads: 2, ffnHidden: 64}\n");
        run = dir.resolve("run");
        Run r = run("train", "--config", dir.resolve("m.yaml").toString(), "--data", dir.resolve("data").toString(),
                "--seq-len", "16", "--micro-batch", "4", "--eval-every", "0", "--steps", "6", "--run-dir", run.toString());
        assertEquals(0, r.code(), r.err());
    }

    /** The rows of moefy.tsv after its header: active, experts, ffn_compute, val_loss, oracle_val_loss, dense_val_loss. */
    private static List<String[]> table(Path tsv) throws IOException {
        List<String> lines = Files.readAllLines(tsv);
        assertEquals("active\texperts\tffn_compute\tval_loss\toracle_val_loss\tdense_val_loss", lines.getFirst());
        return lines.subList(1, lines.size()).stream().map(l -> l.split("\t")).toList();
    }

    @Test
    void moefyThenEvaluateThenSample() throws IOException {
        Run r = run("moefy", "--checkpoint", run.toString(), "--experts", "4", "--router-steps", "40", "--router-tokens", "512",
                "--router-batch", "64", "--eval", "--oracle");
        assertEquals(0, r.code(), r.err());
        Path out = run.resolve("moefied");
        for (String f : List.of("manifest.json", "tensors.bin", "config.yaml", "tokenizer.bpe", "moefy.png", "moefy.tsv", "moefy.json")) {
            assertTrue(Files.isRegularFile(out.resolve(f)), "moefy wrote " + f);
        }
        List<String[]> rows = table(out.resolve("moefy.tsv"));
        assertEquals(4, rows.size(), "K = 1..4");
        double dense = Double.parseDouble(rows.getFirst()[5]);
        for (int k = 1; k <= 4; k++) {
            assertEquals(String.valueOf(k), rows.get(k - 1)[0]);
            assertEquals(k / 4.0, Double.parseDouble(rows.get(k - 1)[2]), 1e-12);
        }
        assertEquals(dense, Double.parseDouble(rows.get(3)[3]), 1e-5, "K = E matches the dense loss (f32)");
        assertEquals(dense, Double.parseDouble(rows.get(3)[4]), 1e-5, "K = E ground truth matches the dense loss (f32)");
        // the dense loss is the one training measured at its last step, on the same validation batches
        String last = Files.readAllLines(run.resolve("metrics.jsonl")).getLast();
        double trained = Double.parseDouble(last.replaceAll(".*\"val_loss\": ?([0-9.eE+-]+).*", "$1"));
        assertEquals(trained, dense, 1e-6, "dense loss vs metrics.jsonl " + last);

        Run again = run("moefy", "--checkpoint", out.toString(), "--active", "1,4", "--eval-batches", "1");
        assertEquals(0, again.code(), again.err());
        List<String[]> two = table(out.resolve("moefy.tsv"));
        assertEquals(2, two.size());
        assertEquals("NaN", two.getFirst()[4], "no --oracle, no ground-truth column");

        Run sparse = run("generate", "--checkpoint", out.toString(), "--active", "2", "--max-tokens", "6", "--prompt", "the");
        assertEquals(0, sparse.code(), sparse.err());
        assertTrue(sparse.out().startsWith("the") && sparse.out().strip().length() > 3, sparse.out());
        Run dense2 = run("generate", "--checkpoint", out.toString(), "--max-tokens", "6", "--temperature", "0", "--prompt", "the");
        Run original = run("generate", "--checkpoint", run.toString(), "--max-tokens", "6", "--temperature", "0", "--prompt", "the");
        assertEquals(0, dense2.code(), dense2.err());
        assertEquals(original.out(), dense2.out(), "the MoEfied checkpoint loads as the same dense model");
    }

    @Test
    void mistakesAreOneLineErrors() {
        oneLine(run("moefy", "--checkpoint", run.toString(), "--experts", "3", "-o", dir.resolve("x").toString()),
                "--experts 3", "ffnHidden");
        oneLine(run("moefy", "--checkpoint", run.toString()), "--experts E is required");
        oneLine(run("moefy", "--checkpoint", run.toString(), "--experts", "4", "--split", "spectral"), "--split spectral", "kmeans");
        oneLine(run("generate", "--checkpoint", run.toString(), "--active", "2"), "not MoEfied", "shardwise moefy");
        oneLine(run("moefy", "--checkpoint", dir.resolve("nothing").toString(), "--experts", "2"), "no checkpoint");
        assertFalse(Files.exists(dir.resolve("x")), "a refused moefy writes nothing");
    }
}
