package dev.shardwise.data;

import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Iterator;
import java.util.List;

import static org.junit.jupiter.api.Assertions.*;

class BatchSamplerTest {
    private static final int N = 1001;      // tokens: 0, 1, ..., 999 then end-of-text
    private static TokenDataset data;

    @BeforeAll
    static void writeDataset(@TempDir Path dir) throws IOException {
        int[] doc = new int[N - 1];
        for (int i = 0; i < doc.length; i++) doc[i] = i;
        Path f = dir.resolve("seq.tokens");
        try (TokenFileWriter w = new TokenFileWriter(f, new FakeTokenizer(5000))) {
            w.addDocument(doc);
            AtomicFiles.commit(List.of(w.finish()));
        }
        data = TokenDataset.open(f);
    }

    @AfterAll
    static void close() {
        data.close();
    }

    private static List<int[]> take(BatchSampler s, int n) {
        List<int[]> out = new ArrayList<>();
        for (int i = 0; i < n; i++) out.add(s.next());
        return out;
    }

    private static void assertSameBatches(List<int[]> a, List<int[]> b, String what) {
        assertEquals(a.size(), b.size());
        for (int i = 0; i < a.size(); i++) assertArrayEquals(a.get(i), b.get(i), what + ": batch " + i);
    }

    @Test
    void sameSeedGivesSameBatchesAndOtherSeedsDiffer() {
        List<int[]> a = take(new BatchSampler(data, 4, 16, 42), 30);
        List<int[]> b = take(new BatchSampler(data, 4, 16, 42), 30);
        assertSameBatches(a, b, "seed 42 twice");
        List<int[]> c = take(new BatchSampler(data, 4, 16, 43), 30);
        assertFalse(Arrays.equals(a.getFirst(), c.getFirst()) && Arrays.equals(a.get(1), c.get(1)),
                "seeds 42 and 43 gave the same first batches");
    }

    @Test
    void windowsAreConsecutiveTokensAtMultiplesOfT() {
        int t = 16;
        int[] batch = new BatchSampler(data, 3, t, 1).next();
        for (int r = 0; r < 3; r++) {
            int first = batch[r * (t + 1)];
            assertEquals(0, first % t, "row " + r + " starts at " + first);
            for (int k = 0; k <= t; k++) assertEquals(first + k, batch[r * (t + 1) + k], "row " + r + " col " + k);
        }
    }

    @Test
    void everyEpochVisitsEveryWindowOnce() {
        BatchSampler s = new BatchSampler(data, 5, 10, 7);   // W = floor(1000 / 10) = 100 windows, 20 batches
        assertEquals(100, s.windowsPerEpoch());
        for (int epoch = 0; epoch < 2; epoch++) {
            boolean[] seen = new boolean[100];
            for (int b = 0; b < 20; b++) {
                int[] batch = s.next();
                for (int r = 0; r < 5; r++) {
                    int w = batch[r * 11] / 10;
                    assertFalse(seen[w], "epoch " + epoch + ": window " + w + " twice");
                    seen[w] = true;
                }
            }
            assertEquals(new BatchSampler.Position(epoch + 1, 0), s.position());
        }
    }

    @Test
    void restoredPositionGivesTheSameNextBatches() {
        BatchSampler run = new BatchSampler(data, 7, 12, 99);   // W = 83, batches cross epoch ends
        take(run, 25);
        BatchSampler.Position saved = run.position();
        List<int[]> expected = take(run, 40);

        BatchSampler resumed = new BatchSampler(data, 7, 12, 99);
        resumed.seek(saved);
        assertSameBatches(expected, take(resumed, 40), "resumed at " + saved);

        BatchSampler fresh = new BatchSampler(data, 7, 12, 99);
        assertEquals(saved, fresh.positionOfStep(25));
        for (int k = 0; k < 40; k++) assertArrayEquals(expected.get(k), fresh.batchAt(25 + k), "batchAt step " + (25 + k));
        assertEquals(new BatchSampler.Position(0, 0), fresh.position(), "batchAt moved the position");
    }

    @Test
    void rejectsPositionsFromAnotherDataset() {
        BatchSampler s = new BatchSampler(data, 2, 10, 0);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> s.seek(new BatchSampler.Position(0, 100)));
        assertTrue(e.getMessage().contains("100 windows"), e.getMessage());
    }

    @Test
    void fillsAnI32Tensor() {
        BatchSampler a = new BatchSampler(data, 2, 8, 5);
        BatchSampler b = new BatchSampler(data, 2, 8, 5);
        MemoryPool pool = MemoryPool.unlimited("rank 0");
        try (Tensor t = Tensor.allocate(pool, MemoryCategory.BUFFERS, DType.I32, 2, 9)) {
            a.next(t);
            int[] expected = b.next();
            double[] got = t.toDoubleArray();
            for (int i = 0; i < expected.length; i++) assertEquals(expected[i], (int) got[i], "element " + i);
        }
    }

    @Test
    void sequentialBatchesCoverAllWindowsInOrder() {
        Iterator<int[]> it = BatchSampler.sequential(data, 32, 10);   // 100 windows: 3 full batches + 4
        List<Integer> starts = new ArrayList<>();
        List<Integer> rows = new ArrayList<>();
        while (it.hasNext()) {
            int[] b = it.next();
            rows.add(b.length / 11);
            for (int r = 0; r < b.length / 11; r++) starts.add(b[r * 11]);
        }
        assertEquals(List.of(32, 32, 32, 4), rows);
        for (int w = 0; w < 100; w++) assertEquals(w * 10, starts.get(w), "window " + w);
    }
}
