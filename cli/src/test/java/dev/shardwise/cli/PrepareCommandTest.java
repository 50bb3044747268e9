package dev.shardwise.cli;

import dev.shardwise.data.TokenDataset;
import dev.shardwise.data.Tokenizers;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import picocli.CommandLine;

import java.io.IOException;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.nio.file.Files;
import java.nio.file.Path;

import static org.junit.jupiter.api.Assertions.*;

class PrepareCommandTest {
    private record Run(int code, String out, String err) {}

    private static Run run(String... args) {
        StringWriter out = new StringWriter();
        StringWriter err = new StringWriter();
        CommandLine cli = new CommandLine(new Main());
        cli.setOut(new PrintWriter(out));
        cli.setErr(new PrintWriter(err));
        int code = cli.execute(args);
        return new Run(code, out.toString(), err.toString());
    }

    @Test
    void preparesWithATrainedTokenizerAndPrintsASummary(@TempDir Path dir) throws IOException {
        Path train = dir.resolve("train.txt");
        Path val = dir.resolve("val.txt");
        Files.writeString(train, "ROMEO:\nBut soft, what light.\n\nJULIET:\nAy me.\n\n".repeat(40));
        Files.writeString(val, "ROMEO:\nShe speaks.\n");
        Path out = dir.resolve("out");
        Run r = run("prepare", "--train-tokenizer", "--vocab", "300", train.toString(), "--val", val.toString(),
                "-o", out.toString());
        assertEquals(0, r.code(), r.err());
        assertTrue(r.out().contains("tokens/char") && r.out().contains("bpe-"), r.out());
        try (TokenDataset ds = TokenDataset.open(out.resolve("val.tokens"))) {
            ds.checkTokenizer(Tokenizers.load(out.resolve("tokenizer.bpe")));
            assertEquals(1, ds.documentCount());
        }
    }

    @Test
    void reportsAMissingInputWithoutWritingAnything(@TempDir Path dir) {
        Path out = dir.resolve("out");
        Run r = run("prepare", dir.resolve("missing.txt").toString(), "-o", out.toString());
        assertEquals(2, r.code());
        assertTrue(r.err().contains("missing.txt") && r.err().contains("does not exist"), r.err());
        assertFalse(Files.exists(out));
    }

    @Test
    void rejectsConflictingOptions(@TempDir Path dir) throws IOException {
        Path in = dir.resolve("in.txt");
        Files.writeString(in, "a\n\nb\n");
        Run r = run("prepare", "--tokenizer", "gpt2", "--train-tokenizer", in.toString(), "-o", dir.resolve("o").toString());
        assertEquals(2, r.code());
        assertTrue(r.err().contains("exclude each other"), r.err());
    }
}
