package dev.shardwise.data;

import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;

import static org.junit.jupiter.api.Assertions.*;

class TokenDatasetTest {
    @TempDir
    Path dir;

    private Path write(String name, Tokenizer t, int[]... docs) throws IOException {
        Path target = dir.resolve(name);
        try (TokenFileWriter w = new TokenFileWriter(target, t)) {
            for (int[] d : docs) w.addDocument(d);
            AtomicFiles.commit(java.util.List.of(w.finish()));
        }
        return target;
    }

    @Test
    void writesAndReadsBackTokensAndDocuments() throws IOException {
        Path f = write("a.tokens", new FakeTokenizer(1000), new int[] {1, 2, 3}, new int[] {}, new int[] {998, 0});
        try (TokenDataset ds = TokenDataset.open(f)) {
            assertEquals(8, ds.size());
            assertEquals(3, ds.documentCount());
            int[] all = ds.window(0, 8);
            assertArrayEquals(new int[] {1, 2, 3, 999, 999, 998, 0, 999}, all);
            assertEquals(0, ds.documentStart(0));
            assertEquals(4, ds.documentStart(1));
            assertEquals(5, ds.documentStart(2));
            assertEquals(8, ds.documentStart(3));
            assertEquals(998, ds.get(5));
            assertEquals("fake-1000", ds.tokenizerName());
            assertEquals(999, ds.endOfText());
            assertThrows(IndexOutOfBoundsException.class, () -> ds.get(8));
            MemoryPool pool = MemoryPool.unlimited("rank 0");
            try (Tensor t = Tensor.allocate(pool, MemoryCategory.BUFFERS, DType.I32, 4)) {
                ds.read(2, t);
                assertArrayEquals(new double[] {3, 999, 999, 998}, t.toDoubleArray());
            }
        }
    }

    @Test
    void storesUint16UpTo65536IdsAndUint32Above() throws IOException {
        for (int vocab : new int[] {300, 65536, 65537, 200_000}) {
            int[] doc = {vocab - 2, 7};
            Path f = write("v" + vocab + ".tokens", new FakeTokenizer(vocab), doc);
            try (TokenDataset ds = TokenDataset.open(f)) {
                int expectedBytes = vocab <= 65536 ? 2 : 4;
                assertEquals(expectedBytes, ds.tokenBytes(), "bytes per token for vocab " + vocab);
                assertEquals(128 + 8 * ((3 * expectedBytes + 7) / 8) + 16, Files.size(f), "file size, vocab " + vocab);
                assertEquals(vocab - 2, ds.get(0), "largest ordinary id for vocab " + vocab);
                assertEquals(vocab - 1, ds.get(2), "end-of-text id for vocab " + vocab);
            }
        }
        assertEquals(4, TokenFileWriter.tokenBytesFor(Tokenizers.named("cl100k").vocabSize()));
        assertEquals(2, TokenFileWriter.tokenBytesFor(Tokenizers.named("gpt2").vocabSize()));
    }

    @Test
    void rejectsTruncatedFiles() throws IOException {
        Path f = write("t.tokens", new FakeTokenizer(1000), new int[] {1, 2, 3, 4, 5, 6, 7, 8, 9});
        long size = Files.size(f);
        for (long cut : new long[] {size - 1, size - 8, 130, 127, 20}) {
            Path g = dir.resolve("cut" + cut + ".tokens");
            Files.copy(f, g);
            try (FileChannel ch = FileChannel.open(g, StandardOpenOption.WRITE)) {
                ch.truncate(cut);
            }
            IOException e = assertThrows(IOException.class, () -> TokenDataset.open(g).close(), "cut at " + cut);
            assertTrue(e.getMessage().contains("truncated") && e.getMessage().contains(g.toString()),
                    "cut at " + cut + ": " + e.getMessage());
        }
    }

    @Test
    void rejectsForeignFilesAndOtherVersions() throws IOException {
        Path text = dir.resolve("notes.txt");
        Files.writeString(text, "just some text, long enough to fill a header? ".repeat(5));
        IOException e = assertThrows(IOException.class, () -> TokenDataset.open(text));
        assertTrue(e.getMessage().contains("not a Shardwise token file"), e.getMessage());

        Path f = write("v.tokens", new FakeTokenizer(1000), new int[] {1});
        try (FileChannel ch = FileChannel.open(f, StandardOpenOption.WRITE)) {
            ch.write(ByteBuffer.allocate(4).order(ByteOrder.LITTLE_ENDIAN).putInt(0, 2), 8);
        }
        e = assertThrows(IOException.class, () -> TokenDataset.open(f));
        assertTrue(e.getMessage().contains("version 2"), e.getMessage());

        e = assertThrows(IOException.class, () -> TokenDataset.open(dir.resolve("none.tokens")));
        assertTrue(e.getMessage().contains("does not exist"), e.getMessage());
    }

    @Test
    void checksTheTokenizerItWasMadeWith() throws IOException {
        Path f = write("c.tokens", new FakeTokenizer(1000), new int[] {1});
        try (TokenDataset ds = TokenDataset.open(f)) {
            ds.checkTokenizer(new FakeTokenizer(1000));
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> ds.checkTokenizer(new FakeTokenizer(999)));
            assertTrue(e.getMessage().contains("fake-1000") && e.getMessage().contains("fake-999"), e.getMessage());
        }
    }

    @Test
    void rejectsIdsOutsideTheVocabulary() throws IOException {
        try (TokenFileWriter w = new TokenFileWriter(dir.resolve("x.tokens"), new FakeTokenizer(100))) {
            assertThrows(IllegalArgumentException.class, () -> w.addDocument(new int[] {100}));
        }
        try (var files = Files.list(dir)) {
            assertEquals(0, files.count(), "an unfinished writer left files behind");
        }
    }
}
