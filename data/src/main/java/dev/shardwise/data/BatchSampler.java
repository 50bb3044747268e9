package dev.shardwise.data;

import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Iterator;
import java.util.NoSuchElementException;

/**
 * Deterministic shuffled batches of token windows: batch {@code [B, T+1]} = B windows of T+1 consecutive
 * tokens (inputs are columns {@code 0..T-1}, targets columns {@code 1..T}).
 *
 * <p>The dataset of N tokens is cut into {@code W = floor((N - 1) / T)} windows starting at {@code w*T}
 * (neighbours share one token, as the last target of one is the first input of the next). Each epoch visits
 * every window once, in a random permutation drawn from (seed, epoch) alone; batches take the next B windows
 * of the permutation and run on into the next epoch. So the batch at training step s depends only on (seed, s,
 * B, T, N): {@link #batchAt(long)} computes it directly, and {@link #position()}/{@link #seek} save and
 * restore where a run is, so a resumed run sees the same data order.
 *
 * <p>The permutation uses SplitMix64 (Steele et al. 2014) implemented here, so the order is the same on every
 * JVM version. Not thread-safe; use one sampler per thread.
 */
public final class BatchSampler {
    /**
     * Where the sampler is: the next window is entry {@code index} of epoch {@code epoch}'s permutation.
     *
     * @param epoch how many full passes over the windows are done
     * @param index the next window within the epoch, in {@code [0, windowsPerEpoch)}
     */
    public record Position(long epoch, long index) {
        public Position {
            if (epoch < 0 || index < 0) {
                throw new IllegalArgumentException("position (epoch " + epoch + ", index " + index + ") is negative");
            }
        }
    }

    private final TokenDataset data;
    private final int batchSize;
    private final int seqLen;
    private final long seed;
    private final int windows;
    private long epoch;
    private int index;
    private long permutationEpoch = -1;
    private int[] permutation;

    /**
     * A sampler over {@code data} for batches of {@code batchSize} windows of {@code seqLen + 1} tokens.
     *
     * @throws IllegalArgumentException if a size is not positive, or the dataset has fewer than
     *     {@code seqLen + 1} tokens, or more than 2^31 - 1 windows
     */
    public BatchSampler(TokenDataset data, int batchSize, int seqLen, long seed) {
        if (batchSize < 1 || seqLen < 1) {
            throw new IllegalArgumentException("batch size " + batchSize + " and sequence length " + seqLen
                    + " must be at least 1");
        }
        long w = (data.size() - 1) / seqLen;
        if (data.size() < seqLen + 1L) {
            throw new IllegalArgumentException(data.path() + " has " + data.size() + " tokens, fewer than one window of "
                    + "T+1 = " + (seqLen + 1L) + "; use a shorter sequence length or more data");
        }
        if (w > Integer.MAX_VALUE - 8) {
            throw new IllegalArgumentException(data.path() + " has " + w + " windows of " + seqLen
                    + " tokens, more than this sampler supports (2^31); use a longer sequence length");
        }
        this.data = data;
        this.batchSize = batchSize;
        this.seqLen = seqLen;
        this.seed = seed;
        this.windows = (int) w;
    }

    public int batchSize() { return batchSize; }

    /** T; windows hold {@code T + 1} tokens. */
    public int seqLen() { return seqLen; }

    /** W, the number of windows in one epoch. */
    public long windowsPerEpoch() { return windows; }

    /** Where the next batch starts. */
    public Position position() {
        return new Position(epoch, index);
    }

    /**
     * Continues from {@code position}, as saved by {@link #position()}.
     *
     * @throws IllegalArgumentException if its index is not below {@link #windowsPerEpoch()}
     */
    public void seek(Position position) {
        if (position.index() >= windows) {
            throw new IllegalArgumentException("position index " + position.index() + " is not below the "
                    + windows + " windows per epoch of " + data.path() + " with T=" + seqLen
                    + "; was it saved with another dataset or sequence length?");
        }
        epoch = position.epoch();
        index = (int) position.index();
    }

    /** The position before training step {@code step} (0-based), when every step takes one batch. */
    public Position positionOfStep(long step) {
        if (step < 0) throw new IllegalArgumentException("step " + step + " is negative");
        long w = Math.multiplyExact(step, (long) batchSize);
        return new Position(w / windows, w % windows);
    }

    /** The next batch {@code [B, T+1]}, row-major, as a new array; advances the position. */
    public int[] next() {
        int[] out = new int[batchSize * (seqLen + 1)];
        next(out);
        return out;
    }

    /**
     * Fills {@code dst[0 .. B*(T+1))} with the next batch {@code [B, T+1]}, row-major; advances the position.
     *
     * @throws IllegalArgumentException if {@code dst} is shorter than {@code B * (T + 1)}
     */
    public void next(int[] dst) {
        int row = seqLen + 1;
        if (dst.length < batchSize * row) {
            throw new IllegalArgumentException("dst has " + dst.length + " ints, a batch [" + batchSize + ", "
                    + row + "] needs " + batchSize * row);
        }
        for (int b = 0; b < batchSize; b++) {
            if (permutationEpoch != epoch) {
                permutation = permutation(seed, epoch, windows);
                permutationEpoch = epoch;
            }
            data.read((long) permutation[index] * seqLen, dst, b * row, row);
            if (++index == windows) {
                index = 0;
                epoch++;
            }
        }
    }

    /**
     * Fills {@code dst}, a contiguous I32 tensor {@code [B, T+1]}, with the next batch; advances the position.
     *
     * @throws IllegalArgumentException if {@code dst} has another dtype, shape or layout
     */
    public void next(Tensor dst) {
        if (dst.dtype() != DType.I32 || dst.rank() != 2 || dst.dim(0) != batchSize || dst.dim(1) != seqLen + 1
                || !dst.isContiguous()) {
            throw new IllegalArgumentException("dst must be a contiguous I32 tensor [" + batchSize + ", "
                    + (seqLen + 1) + "], got " + dst.describe());
        }
        int[] tmp = next();
        MemorySegment.copy(tmp, 0, dst.segment(), ValueLayout.JAVA_INT, dst.byteOffset(), tmp.length);
    }

    /** The batch of training step {@code step}, without moving this sampler's position. */
    public int[] batchAt(long step) {
        Position saved = position();
        try {
            seek(positionOfStep(step));
            return next();
        } finally {
            seek(saved);
        }
    }

    /**
     * Validation batches in file order, not shuffled: windows {@code 0, 1, ..., W-1} (starting at {@code w*T}),
     * B at a time; the last batch holds the remaining {@code W mod B} windows if that is not zero. Each element
     * is a row-major {@code [rows, T+1]} array with {@code rows = length / (T + 1)}.
     *
     * @throws IllegalArgumentException as for the constructor
     */
    public static Iterator<int[]> sequential(TokenDataset data, int batchSize, int seqLen) {
        long windows = new BatchSampler(data, batchSize, seqLen, 0).windowsPerEpoch();
        return new Iterator<>() {
            private long next;

            @Override
            public boolean hasNext() {
                return next < windows;
            }

            @Override
            public int[] next() {
                if (!hasNext()) throw new NoSuchElementException("all " + windows + " windows were returned");
                int rows = (int) Math.min(batchSize, windows - next);
                int[] out = new int[rows * (seqLen + 1)];
                for (int r = 0; r < rows; r++, next++) data.read(next * seqLen, out, r * (seqLen + 1), seqLen + 1);
                return out;
            }
        };
    }

    /** A permutation of {@code [0, n)} that depends only on (seed, epoch): Fisher-Yates with SplitMix64. */
    static int[] permutation(long seed, long epoch, int n) {
        int[] p = new int[n];
        for (int i = 0; i < n; i++) p[i] = i;
        long state = mix64(seed ^ mix64(epoch + 0x632BE59BD9B4E019L));
        for (int i = n - 1; i > 0; i--) {
            state += 0x9E3779B97F4A7C15L;
            long r = mix64(state);
            int j = (int) Math.multiplyHigh(r >>> 1, (long) (i + 1) << 1);   // uniform in [0, i], Lemire's method
            int t = p[i];
            p[i] = p[j];
            p[j] = t;
        }
        return p;
    }

    private static long mix64(long z) {
        z = (z ^ (z >>> 30)) * 0xBF58476D1CE4E5B9L;
        z = (z ^ (z >>> 27)) * 0x94D049BB133111EBL;
        return z ^ (z >>> 31);
    }
}
