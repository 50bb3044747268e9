package dev.shardwise.cli.bench;

import dev.shardwise.comm.Communicator;
import dev.shardwise.comm.LocalCluster;
import dev.shardwise.comm.RankContext;
import dev.shardwise.comm.ReduceOp;
import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

import java.lang.foreign.MemorySegment;
import java.util.Arrays;
import java.util.Locale;

/**
 * {@code shardwise bench collectives}: bus bandwidth of allReduce, reduceScatter, allGather and allToAll on each
 * communication backend (now {@code local}: ranks as threads of this JVM), from 1 KiB up to {@code --max-size} in
 * steps of 4x, beside a plain memory copy of the same size measured in the same run.
 *
 * <p>Bus bandwidth follows NCCL-tests, so that one number compares across rank counts: for S bytes (the
 * allReduce buffer, the reduceScatter input, the allGather output, the allToAll buffer of one rank) and n ranks,
 * allReduce moves {@code 2(n-1)/n · S}, the others {@code (n-1)/n · S}, divided by the time. The peer is a copy of
 * S bytes with {@code MemorySegment.copy}, counting read + write bytes ({@code 2S / time}), the faster of one thread
 * copying it all and every kernel thread of every rank copying its share (the same threads the collectives use).
 *
 * <p>Every rank runs the same loop; a trial is a barrier, {@code iters} back-to-back calls (enough for about
 * 16 MiB of traffic, at least one) and a barrier, timed on rank 0; the median of 5 trials after one warm-up trial
 * is reported. The copy peers run between the same barriers (the one-thread copy on rank 0 while the others wait).
 */
@Command(name = "collectives", mixinStandardHelpOptions = true,
        description = "Bus bandwidth of allReduce, reduceScatter, allGather, allToAll beside a memory copy in the same run.")
public final class BenchCollectivesCommand implements Runnable {
    private static final String BENCH = "collectives";
    private static final long MIN_SIZE = 1L << 10;
    private static final int TRIALS = 5;

    @Option(names = "--json", description = "One JSON object per case instead of a table.")
    boolean json;

    @Option(names = "--max-size", defaultValue = "256m", description = "Largest buffer (default ${DEFAULT-VALUE}).")
    String maxSize;

    @Option(names = "--ranks", defaultValue = "2", description = "Ranks (default ${DEFAULT-VALUE}).")
    int ranks;

    @Override
    public void run() {
        if (ranks < 2) throw new IllegalArgumentException("--ranks must be >= 2 (bus bandwidth of one rank is 0), got " + ranks);
        long max = MemoryPool.parseBytes(maxSize);
        if (max < MIN_SIZE) throw new IllegalArgumentException("--max-size must be at least 1k, got " + maxSize);
        BenchOutput out = new BenchOutput(System.out, json);
        out.info(String.format(Locale.ROOT, "backend local: %d ranks as threads, %d kernel thread(s) each; peer: "
                        + "MemorySegment.copy, faster of 1 thread and all threads (read+write bytes); bus bandwidth as NCCL-tests define it",
                ranks, Math.max(1, Runtime.getRuntime().availableProcessors() / ranks)));
        double[] largest = new double[2];   // allReduce busbw and copy bandwidth at the largest size
        LocalCluster.run(ranks, ctx -> {
            bench(ctx, max, ctx.globalRank() == 0 ? out : null, largest);
            return null;
        });
        // allReduce reads and writes every rank's buffer once: 2n·S bytes of memory traffic, of which bus bandwidth
        // counts 2(n-1)/n·S; so at the copy's bandwidth busbw/copy would be (n-1)/n² (25% for two ranks).
        double traffic = largest[0] * trafficPerBusByte(ranks);
        out.info(String.format(Locale.ROOT, "largest allReduce: bus bandwidth %.2f GB/s = %.0f%% of copy %.2f GB/s (bar: >= 50%%); "
                        + "its memory traffic (2n·S bytes) %.2f GB/s = %.0f%% of copy; at copy speed busbw/copy would be %.0f%%",
                largest[0], 100 * largest[0] / largest[1], largest[1], traffic, 100 * traffic / largest[1],
                100.0 * (ranks - 1) / ((double) ranks * ranks)));
    }

    /** Memory traffic of an allReduce over bus bandwidth: 2n·S / (2(n-1)/n·S). */
    private static double trafficPerBusByte(int ranks) {
        return (double) ranks * ranks / (ranks - 1);
    }

    /** Runs on every rank; {@code out} is null except on rank 0, which times and prints. */
    private static void bench(RankContext ctx, long maxBytes, BenchOutput out, double[] largest) {
        int n = ctx.worldSize();
        Communicator world = ctx.world();
        int maxCount = Math.toIntExact(maxBytes / 4 / n * n);
        try (Tensor a = Tensor.allocate(ctx.memory(), MemoryCategory.BUFFERS, DType.F32, maxCount);
             Tensor b = Tensor.allocate(ctx.memory(), MemoryCategory.BUFFERS, DType.F32, maxCount)) {
            for (long size = MIN_SIZE; size <= maxBytes; size *= 4) {
                int count = (int) (size / 4 / n * n), chunk = count / n;
                long bytes = 4L * count;
                Tensor whole = Tensor.wrap(a.segment(), DType.F32, count), whole2 = Tensor.wrap(b.segment(), DType.F32, count);
                Tensor part = Tensor.wrap(b.segment(), DType.F32, chunk);
                int[] counts = new int[n];
                Arrays.fill(counts, chunk);
                int iters = (int) Math.max(1, Math.min(2000, (16L << 20) / bytes));
                MemorySegment src = a.segment(), dst = b.segment();
                double copy1 = time(world, iters, ctx.globalRank() == 0 ? () -> MemorySegment.copy(src, 0, dst, 0, bytes) : () -> { });
                double copyAll = time(world, iters, () -> copyShare(ctx, src, dst, bytes));
                double copyBw = 2.0 * bytes / Math.min(copy1, copyAll) / 1e9;
                if (out != null && size == MIN_SIZE << 2 * ((63 - Long.numberOfLeadingZeros(maxBytes / MIN_SIZE)) / 2)) {
                    out.info(String.format(Locale.ROOT, "copy peer at %s: one thread %.2f GB/s, all %d threads %.2f GB/s",
                            MemoryPool.formatBytes(bytes), 2.0 * bytes / copy1 / 1e9, n * ctx.compute().threads(),
                            2.0 * bytes / copyAll / 1e9));
                }
                double scale = (n - 1.0) / n;
                double ar = time(world, iters, () -> world.allReduce(whole, ReduceOp.SUM));
                double rs = time(world, iters, () -> world.reduceScatter(part, whole, ReduceOp.SUM));
                double ag = time(world, iters, () -> world.allGather(whole, part));
                double aa = time(world, iters, () -> world.allToAll(whole2, counts, whole, counts));
                if (out != null) {
                    String label = n + " ranks " + MemoryPool.formatBytes(bytes);
                    row(out, "local allReduce " + label, 2 * scale * bytes / ar / 1e9, copyBw, ar, "2(n-1)/n*S/t");
                    row(out, "local reduceScatter " + label, scale * bytes / rs / 1e9, copyBw, rs, "(n-1)/n*S/t, S = input");
                    row(out, "local allGather " + label, scale * bytes / ag / 1e9, copyBw, ag, "(n-1)/n*S/t, S = output");
                    row(out, "local allToAll " + label, scale * bytes / aa / 1e9, copyBw, aa, "(n-1)/n*S/t, S = per rank");
                    largest[0] = 2 * scale * bytes / ar / 1e9;
                    largest[1] = copyBw;
                }
            }
        }
    }

    /** This rank's 1/n of a copy of {@code bytes}, split over its compute threads. */
    private static void copyShare(RankContext ctx, MemorySegment src, MemorySegment dst, long bytes) {
        int n = ctx.worldSize(), threads = ctx.compute().threads(), parts = n * threads;
        ctx.compute().parallelFor(threads, t -> {
            int part = ctx.globalRank() * threads + t;
            long lo = bytes * part / parts & ~63L, hi = part == parts - 1 ? bytes : bytes * (part + 1) / parts & ~63L;
            MemorySegment.copy(src, lo, dst, lo, hi - lo);
        });
    }

    private static void row(BenchOutput out, String name, double busBw, double copyBw, double seconds, String formula) {
        out.row(new BenchRow(BENCH, name, busBw, "GB/s", "copy", copyBw, Double.NaN,
                String.format(Locale.ROOT, "busbw %s, %.1f us", formula, seconds * 1e6)));
    }

    /**
     * Median over {@value #TRIALS} trials (after one warm-up) of the time per call of {@code body}, called
     * {@code iters} times between two barriers; collective on {@code world}, meaningful on rank 0.
     */
    private static double time(Communicator world, int iters, Runnable body) {
        double[] perCall = new double[TRIALS];
        for (int trial = -1; trial < TRIALS; trial++) {
            world.barrier();
            long start = System.nanoTime();
            for (int i = 0; i < iters; i++) body.run();
            world.barrier();
            if (trial >= 0) perCall[trial] = (System.nanoTime() - start) / 1e9 / iters;
        }
        Arrays.sort(perCall);
        return perCall[TRIALS / 2];
    }
}
