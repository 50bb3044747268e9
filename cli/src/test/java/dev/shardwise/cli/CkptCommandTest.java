package dev.shardwise.cli;

import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import picocli.CommandLine;

import java.io.IOException;
import java.io.PrintWriter;
import java.io.RandomAccessFile;
import java.io.StringWriter;
import java.nio.file.Files;
import java.nio.file.Path;

import static org.junit.jupiter.api.Assertions.*;

/**
 * {@code ckpt inspect} and {@code ckpt export} on a real run's checkpoint, and the errors a user can cause around
 * checkpoints (missing or damaged checkpoint, missing data, missing import): one line, no stack trace, exit status 2.
 */
class CkptCommandTest {
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

    private static String[] train(String... more) {
        String[] base = {"train", "--config", dir.resolve("m.yaml").toString(), "--data", dir.resolve("data").toString(),
                "--seq-len", "8", "--micro-batch", "2", "--eval-every", "0", "--checkpoint-every", "1"};
        String[] all = java.util.Arrays.copyOf(base, base.length + more.length);
        System.arraycopy(more, 0, all, base.length, more.length);
        return all;
    }

    /** A user error: exit status 2 and one line on stderr, no stack trace. */
    private static void oneLine(Run r, String... mentions) {
        assertEquals(2, r.code(), r.err());
        assertEquals(1, r.err().strip().lines().count(), "one line: " + r.err());
        assertFalse(r.err().contains("Exception") || r.err().contains("\tat "), "no stack trace: " + r.err());
        for (String m : mentions) assertTrue(r.err().contains(m), "mentions " + m + ": " + r.err());
    }

    @BeforeAll
    static void trainTwoSteps() throws IOException {
        Files.writeString(dir.resolve("text.txt"), "the king shall speak now and we will hear him o my lord.\n\n".repeat(200));
        assertEquals(0, run("prepare", "--train-tokenizer", "--vocab", "300", dir.resolve("text.txt").toString(), "-o",
                dir.resolve("data").toString()).code());
        Files.writeString(dir.resolve("m.yaml"), "model: {vocabSize: 300, contextLength: 8, layers: 1, hidden: 16, heads: 2, "
                + "kvHeads: 2, ffnHidden: 64}\n");
        run = dir.resolve("run");
        Run r = run(train("--steps", "2", "--run-dir", run.toString(), "--ranks", "2", "--zero", "3", "--async-checkpoints"));
        assertEquals(0, r.code(), r.err());
    }

    @Test
    void inspectListsTensorsAndLayoutAndVerifiesChecksums() {
        Run r = run("ckpt", "inspect", run.toString());
        assertEquals(0, r.code(), r.err());
        assertTrue(r.out().contains("shardwise-checkpoint-2, step 2") && r.out().contains("ranks=2, dp=2")
                && r.out().contains("param/h.0.attn.qkv.weight") && r.out().contains("[48, 16]")
                && r.out().contains("shard-00001.bin") && r.out().contains("checksums: all verified"), r.out());
    }

    @Test
    void damagedAndMissingCheckpointsAreOneLineErrors() throws IOException {
        Path copy = dir.resolve("damaged");
        Files.createDirectories(copy.resolve("checkpoints/step-000001"));
        try (var files = Files.list(run.resolve("checkpoints/step-000001"))) {
            for (Path f : files.toList()) Files.copy(f, copy.resolve("checkpoints/step-000001").resolve(f.getFileName()));
        }
        try (RandomAccessFile f = new RandomAccessFile(copy.resolve("checkpoints/step-000001/shard-00000.bin").toFile(), "rw")) {
            f.seek(10);
            int b = f.read();
            f.seek(10);
            f.write(b ^ 1);
        }
        oneLine(run("ckpt", "inspect", copy.resolve("checkpoints/step-000001").toString()), "is damaged", "fails its checksum");
        oneLine(run(train("--steps", "2", "--run-dir", copy.toString(), "--resume-from", "step-000001")), "is damaged", "--resume-from");
        oneLine(run(train("--steps", "2", "--run-dir", copy.toString(), "--resume")), "no intact checkpoint", "step-000001");
        oneLine(run(train("--steps", "3", "--run-dir", run.toString(), "--resume-from", "step-000007")), "no checkpoint", "step-000002");
        oneLine(run("ckpt", "inspect", dir.resolve("nothing").toString()), "no checkpoint at");
    }

    @Test
    void missingDataAndImportsAreOneLineErrors() {
        Run r = run("train", "--config", dir.resolve("m.yaml").toString(), "--data", dir.resolve("no-data").toString(),
                "--seq-len", "8", "--steps", "1", "--run-dir", dir.resolve("r1").toString());
        oneLine(r, "no-data", "shardwise prepare");
        oneLine(run(train("--steps", "1", "--run-dir", dir.resolve("r2").toString(), "--init-from", dir.resolve("no-hf").toString())),
                "--init-from", "model.safetensors");
    }

    @Test
    void exportWritesSafetensorsThatInitFromReads() {
        Path hf = dir.resolve("hf");
        Run r = run("ckpt", "export", "--format", "safetensors", run.toString(), "-o", hf.toString());
        assertEquals(0, r.code(), r.err());
        assertTrue(Files.isRegularFile(hf.resolve("model.safetensors")) && Files.isRegularFile(hf.resolve("config.json")));
        oneLine(run("ckpt", "export", "--format", "gguf", run.toString(), "-o", hf.toString()), "--format safetensors");
        assertEquals(0, run(train("--steps", "1", "--run-dir", dir.resolve("r3").toString(), "--init-from", hf.toString())).code());
    }
}
