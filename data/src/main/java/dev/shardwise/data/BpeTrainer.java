package dev.shardwise.data;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.PriorityQueue;

/**
 * Learns a {@link ByteLevelBpe} from text (Sennrich et al. 2016): start from the 256 byte values and
 * repeatedly merge the most frequent adjacent pair of tokens into a new token, counting pairs only inside the
 * chunks of the {@link Pretokenizer}, until the vocabulary (256 bytes + merges + {@code <|endoftext|>})
 * reaches the requested size or no pair occurs at least twice.
 *
 * <p>Deterministic: the same texts and size give the same merges on every run and JVM; ties between
 * equally frequent pairs go to the pair with the smaller (left id, right id).
 *
 * @implNote The corpus is reduced to its distinct chunks with their counts. Pair counts live in a hash map
 *     and a max-heap with lazy deletion (an entry is skipped when its count is no longer current). Each merge
 *     visits only the chunks that contain the merged pair (an index from pair to chunks) and updates the
 *     counts of the pairs around each replacement, so a merge costs time proportional to where it occurs,
 *     not to the corpus.
 */
public final class BpeTrainer {
    /** Pairs seen fewer times than this are never merged: a merge for one occurrence only memorises. */
    static final int MIN_PAIR_COUNT = 2;

    private BpeTrainer() {}

    /** Trains without progress reports; see {@link #train(List, int, ProgressListener)}. */
    public static ByteLevelBpe train(List<String> texts, int vocabSize) {
        return train(texts, vocabSize, ProgressListener.NONE);
    }

    /**
     * Trains a byte-level BPE tokenizer named {@code bpe-N}, N its final vocabulary size, which is
     * {@code vocabSize} unless the texts run out of pairs seen at least twice first.
     *
     * @param texts     the training corpus; documents may be passed separately or joined
     * @param vocabSize requested number of ids including the 256 bytes and {@code <|endoftext|>}
     * @param progress  told about phase {@code "bpe merges"} as merges are made
     * @throws IllegalArgumentException if {@code vocabSize < 257} or {@code texts} is empty
     */
    public static ByteLevelBpe train(List<String> texts, int vocabSize, ProgressListener progress) {
        if (vocabSize < 257) {
            throw new IllegalArgumentException("vocabSize " + vocabSize + " is below 257 (256 bytes + <|endoftext|>); "
                    + "use e.g. 1024, 8192 or 32768");
        }
        if (texts.isEmpty()) {
            throw new IllegalArgumentException("no training text given; pass at least one non-empty text");
        }
        int wantedMerges = vocabSize - 257;

        // Distinct chunks and how often each occurs.
        Map<String, int[]> chunkCounts = new HashMap<>();
        for (String text : texts) {
            Pretokenizer.split(text, (from, to) ->
                    chunkCounts.computeIfAbsent(text.substring(from, to), k -> new int[1])[0]++);
        }
        int words = chunkCounts.size();
        int[][] sym = new int[words][];
        long[] freq = new long[words];
        int w0 = 0;
        for (Map.Entry<String, int[]> e : chunkCounts.entrySet()) {
            byte[] bytes = Utf8.encode(e.getKey());
            int[] s = new int[bytes.length];
            for (int i = 0; i < s.length; i++) s[i] = bytes[i] & 0xFF;
            sym[w0] = s;
            freq[w0] = e.getValue()[0];
            w0++;
        }
        chunkCounts.clear();

        PairCounts pc = new PairCounts(words);
        for (int w = 0; w < words; w++) {
            int[] s = sym[w];
            for (int i = 0; i + 1 < s.length; i++) {
                long p = PairMap.pack(s[i], s[i + 1]);
                pc.counts.add(p, freq[w]);
                pc.noteOccurrence(p, w);
            }
        }
        pc.counts.forEach((p, c) -> pc.heap.add(new Entry(c, p)));

        int[] left = new int[wantedMerges];
        int[] right = new int[wantedMerges];
        int merges = 0;
        progress.progress("bpe merges", 0, wantedMerges);
        while (merges < wantedMerges) {
            Entry top = pc.heap.poll();
            if (top == null) break;
            long current = pc.counts.get(top.pair);
            if (current != top.count) continue;              // stale entry
            if (current < MIN_PAIR_COUNT) break;
            int a = PairMap.left(top.pair);
            int b = PairMap.right(top.pair);
            int id = 256 + merges;
            left[merges] = a;
            right[merges] = b;
            merges++;
            applyMerge(pc, sym, freq, top.pair, a, b, id);
            if ((merges & 63) == 0) progress.progress("bpe merges", merges, wantedMerges);
        }
        progress.progress("bpe merges", merges, merges);
        int[] l = Arrays.copyOf(left, merges);
        int[] r = Arrays.copyOf(right, merges);
        return new ByteLevelBpe("bpe-" + (257 + merges), l, r);
    }

    /** Replaces every (a, b) by {@code id} in the chunks that contain it and updates the pair counts. */
    private static void applyMerge(PairCounts pc, int[][] sym, long[] freq, long pair, int a, int b, int id) {
        PairMap delta = new PairMap(64);
        ByteLevelBpe.IntList occurrences = pc.takeOccurrences(pair);
        for (int k = 0; k < occurrences.size(); k++) {
            int w = occurrences.get(k);
            int[] s = sym[w];
            boolean found = false;
            for (int i = 0; i + 1 < s.length; i++) {
                if (s[i] == a && s[i + 1] == b) { found = true; break; }
            }
            if (!found) continue;                             // the index may hold chunks merged away earlier
            int[] t = new int[s.length];
            int n = 0;
            for (int i = 0; i < s.length; i++) {
                if (i + 1 < s.length && s[i] == a && s[i + 1] == b) {
                    t[n++] = id;
                    i++;
                } else {
                    t[n++] = s[i];
                }
            }
            t = Arrays.copyOf(t, n);
            long f = freq[w];
            for (int i = 0; i + 1 < s.length; i++) delta.add(PairMap.pack(s[i], s[i + 1]), -f);
            for (int i = 0; i + 1 < n; i++) {
                long p = PairMap.pack(t[i], t[i + 1]);
                delta.add(p, f);
                if (t[i] == id || t[i + 1] == id) pc.noteOccurrence(p, w);
            }
            sym[w] = t;
        }
        delta.forEach((p, d) -> {
            long c = pc.counts.add(p, d);
            if (c > 0) pc.heap.add(new Entry(c, p));
        });
    }

    private record Entry(long count, long pair) {}

    /** Pair counts, the max-heap over them, and the index from pair to the chunks that contain it. */
    private static final class PairCounts {
        final PairMap counts;
        final PriorityQueue<Entry> heap = new PriorityQueue<>(
                Comparator.comparingLong(Entry::count).reversed().thenComparingLong(Entry::pair));
        private final PairMap listOf;                         // pair -> 1 + index into lists
        private final List<ByteLevelBpe.IntList> lists = new ArrayList<>();

        PairCounts(int words) {
            counts = new PairMap(words);
            listOf = new PairMap(words);
        }

        void noteOccurrence(long pair, int word) {
            long at = listOf.get(pair);
            ByteLevelBpe.IntList list;
            if (at == 0) {
                list = new ByteLevelBpe.IntList(4);
                lists.add(list);
                listOf.put(pair, lists.size());
            } else {
                list = lists.get((int) at - 1);
            }
            if (list.size() == 0 || list.get(list.size() - 1) != word) list.add(word);
        }

        /** The chunks recorded for {@code pair}; the record is emptied, since the pair is merged away. */
        ByteLevelBpe.IntList takeOccurrences(long pair) {
            long at = listOf.get(pair);
            if (at == 0) return new ByteLevelBpe.IntList(4);
            ByteLevelBpe.IntList list = lists.get((int) at - 1);
            lists.set((int) at - 1, new ByteLevelBpe.IntList(4));
            return list;
        }
    }
}
