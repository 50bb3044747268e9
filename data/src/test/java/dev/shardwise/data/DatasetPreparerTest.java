package dev.shardwise.data;

import dev.shardwise.data.DatasetPreparer.Request;
import dev.shardwise.data.DatasetPreparer.Summary;
import dev.shardwise.data.DatasetPreparer.TrainTokenizer;
import dev.shardwise.data.DatasetPreparer.UseTokenizer;
import dev.shardwise.data.DatasetPreparer.ValFraction;
import dev.shardwise.data.DatasetPreparer.ValSources;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

import static org.junit.jupiter.api.Assertions.*;

class DatasetPreparerTest {
    @TempDir
    Path dir;

    private static final String THREE_DOCS = "First Citizen:\nBefore we proceed.\n\n\nAll:\nSpeak, speak.\n  \nYou are all resolved.\n";

    private List<String> listing(Path d) throws IOException {
        if (!Files.exists(d)) return List.of();
        try (var s = Files.list(d)) {
            return s.map(p -> p.getFileName().toString()).sorted().toList();
        }
    }

    @Test
    void splitsDocumentsOnBlankLinesLinesOrNotAtAll() {
        assertEquals(List.of("First Citizen:\nBefore we proceed.", "All:\nSpeak, speak.", "You are all resolved."),
                DocSeparator.BLANK_LINE.split(THREE_DOCS));
        assertEquals(List.of("First Citizen:", "Before we proceed.", "All:", "Speak, speak.", "You are all resolved."),
                DocSeparator.LINE.split(THREE_DOCS));
        assertEquals(List.of(THREE_DOCS), DocSeparator.NONE.split(THREE_DOCS));
        assertEquals(List.of("a\r\nb", "c"), DocSeparator.BLANK_LINE.split("a\r\nb\r\n\r\nc"));
        assertEquals(DocSeparator.LINE, DocSeparator.parse("line"));
        assertThrows(IllegalArgumentException.class, () -> DocSeparator.parse("paragraph"));
    }

    @Test
    void writesTrainAndValWithEndOfTextAfterEveryDocument() throws IOException {
        Path in = dir.resolve("in.txt");
        Files.writeString(in, THREE_DOCS);
        Tokenizer gpt2 = Tokenizers.named("gpt2");
        Path out = dir.resolve("out/nested");
        Summary s = DatasetPreparer.prepare(new Request(List.of(TextSource.read(in)), new ValFraction(0.3),
                DocSeparator.BLANK_LINE, new UseTokenizer(gpt2), out), ProgressListener.NONE);
        assertEquals(List.of("train.tokens", "val.tokens"), listing(out));
        assertEquals(2, s.train().documents());
        assertEquals(1, s.val().documents());
        try (TokenDataset train = TokenDataset.open(out.resolve("train.tokens"));
             TokenDataset val = TokenDataset.open(out.resolve("val.tokens"))) {
            train.checkTokenizer(gpt2);
            assertEquals(2, train.tokenBytes());
            assertEquals(s.train().tokens(), train.size());
            long end = train.documentStart(1);
            assertEquals(gpt2.endOfText(), train.get(end - 1));
            assertEquals("First Citizen:\nBefore we proceed.<|endoftext|>",
                    gpt2.decode(train.window(0, (int) end)));
            assertEquals("You are all resolved.<|endoftext|>", gpt2.decode(val.window(0, (int) val.size())));
        }
    }

    @Test
    void trainsSavesAndUsesABpeTokenizer() throws IOException {
        String text = TestTexts.shakespeare(60_000);
        Path out = dir.resolve("bpe");
        Summary s = DatasetPreparer.prepare(new Request(List.of(new TextSource("shakespeare", text)),
                new ValSources(List.of(new TextSource("val", "ROMEO:\nHello there.\n"))), DocSeparator.BLANK_LINE,
                new TrainTokenizer(512), out), ProgressListener.NONE);
        assertEquals(List.of("tokenizer.bpe", "train.tokens", "val.tokens"), listing(out));
        ByteLevelBpe loaded = Tokenizers.load(out.resolve("tokenizer.bpe"));
        assertEquals(s.tokenizer().fingerprint(), loaded.fingerprint());
        try (TokenDataset val = TokenDataset.open(out.resolve("val.tokens"))) {
            val.checkTokenizer(loaded);
            assertEquals("ROMEO:\nHello there.<|endoftext|>", loaded.decode(val.window(0, (int) val.size())));
        }
        assertTrue(s.train().tokensPerChar() < 0.6, "tokens/char " + s.train().tokensPerChar());
        assertFalse(s.tokenizerTraining().isZero());
    }

    @Test
    void missingInputIsNamedAndNothingIsWritten() {
        Path missing = dir.resolve("nope.txt");
        IOException e = assertThrows(IOException.class, () -> TextSource.read(missing));
        assertTrue(e.getMessage().contains(missing.toString()) && e.getMessage().contains("does not exist"),
                e.getMessage());
    }

    @Test
    void binaryInputIsRefusedWithAHint() throws IOException {
        Path bin = dir.resolve("model.bin");
        byte[] bytes = new byte[4096];
        for (int i = 0; i < bytes.length; i++) bytes[i] = (byte) (i * 37);
        Files.write(bin, bytes);
        IOException e = assertThrows(IOException.class, () -> TextSource.read(bin));
        assertTrue(e.getMessage().contains(bin.toString()) && e.getMessage().contains("does not look like UTF-8 text")
                && e.getMessage().contains("iconv"), e.getMessage());

        // Latin-1 text: invalid UTF-8 on most lines, no NULs.
        Path latin = dir.resolve("latin1.txt");
        Files.write(latin, "caf\u00e9 na\u00efve r\u00e9sum\u00e9\n".repeat(50).getBytes(java.nio.charset.StandardCharsets.ISO_8859_1));
        assertThrows(IOException.class, () -> TextSource.read(latin));

        // A stray bad byte in a large text is tolerated and becomes U+FFFD.
        Path mostlyText = dir.resolve("ok.txt");
        byte[] ok = ("plain text line\n".repeat(1000) + "\u00ff").getBytes(java.nio.charset.StandardCharsets.ISO_8859_1);
        Files.write(mostlyText, ok);
        assertTrue(TextSource.read(mostlyText).text().endsWith("\uFFFD"));
    }

    @Test
    void failureWhileEncodingLeavesNoPartialOutput() throws IOException {
        Path out = dir.resolve("fresh/out");
        Tokenizer failing = new FakeTokenizer(1000, 2);
        IllegalStateException e = assertThrows(IllegalStateException.class, () -> DatasetPreparer.prepare(
                new Request(List.of(new TextSource("t", THREE_DOCS)), new ValFraction(0.3), DocSeparator.BLANK_LINE,
                        new UseTokenizer(failing), out), ProgressListener.NONE));
        assertTrue(e.getMessage().contains("fails"), e.getMessage());
        assertFalse(Files.exists(dir.resolve("fresh")), "directories created by the failed run were left behind: "
                + listing(dir.resolve("fresh")));

        // In an existing directory, files that were there stay, and no temporary files remain.
        Path existing = dir.resolve("existing");
        Files.createDirectories(existing);
        Files.writeString(existing.resolve("train.tokens"), "old");
        assertThrows(IllegalStateException.class, () -> DatasetPreparer.prepare(
                new Request(List.of(new TextSource("t", THREE_DOCS)), new ValFraction(0.3), DocSeparator.BLANK_LINE,
                        new UseTokenizer(new FakeTokenizer(1000, 2)), existing), ProgressListener.NONE));
        assertEquals(List.of("train.tokens"), listing(existing));
        assertEquals("old", Files.readString(existing.resolve("train.tokens")));
    }

    @Test
    void unwritableOutputIsReportedAndNothingIsLeft() throws IOException {
        Path file = dir.resolve("a-file");
        Files.writeString(file, "x");
        IOException e = assertThrows(IOException.class, () -> DatasetPreparer.prepare(
                new Request(List.of(new TextSource("t", THREE_DOCS)), new ValFraction(0.3), DocSeparator.BLANK_LINE,
                        new UseTokenizer(new FakeTokenizer(1000)), file.resolve("out")), ProgressListener.NONE));
        assertTrue(e.getMessage().contains("a-file"), e.getMessage());
        assertEquals(List.of("a-file"), listing(dir));
    }

    @Test
    void valFractionMustLeaveTrainingDocuments() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> DatasetPreparer.prepare(
                new Request(List.of(new TextSource("t", "one document only\n")), new ValFraction(0.1),
                        DocSeparator.NONE, new UseTokenizer(new FakeTokenizer(1000)), dir.resolve("o")),
                ProgressListener.NONE));
        assertTrue(e.getMessage().contains("leaves no training documents"), e.getMessage());
        assertThrows(IllegalArgumentException.class, () -> new ValFraction(1.0));
        assertFalse(Files.exists(dir.resolve("o")));
    }
}
