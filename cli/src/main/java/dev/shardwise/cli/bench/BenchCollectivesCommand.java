package dev.shardwise.cli.bench;

import dev.shardwise.comm.Communicator;
import dev.shardwise.comm.LocalCluster;
import dev.shardwise.comm.RankContext;
import dev.shardwise.comm.ReduceOp;
import dev.shardwise.comm.mpi.Mpi;
import dev.shardwise.comm.mpi.MpiCommunicator;
import dev.shardwise.core.exec.ComputePool;
import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.lang.foreign.MemorySegment;
import java.lang.management.ManagementFactory;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.function.Consumer;
import java.util.function.DoubleSupplier;
import java.util.function.IntFunction;

/**
 * {@code shardwise bench collectives}: bus bandwidth of allReduce, reduceScatter, allGather and allToAll on each
 * communication backend ({@code local}: ranks as threads of this JVM; {@code mpi}: one process per rank under
 * mpirun, Open MPI called through FFM), from 1 KiB up to {@code --max-size} in steps of 4x, beside a plain memory
 * copy of the same size measured in the same run, and for {@code mpi} beside Open MPI driven from C.
 *
 * <p>Bus bandwidth follows NCCL-tests, so that one number compares across rank counts: for S bytes (the
 * allReduce buffer, the reduceScatter input, the allGather output, the allToAll buffer of one rank) and n ranks,
 * allReduce moves {@code 2(n-1)/n · S}, the others {@code (n-1)/n · S}, divided by the time. The copy peer is a
 * copy of S bytes with {@code MemorySegment.copy}, the faster of one thread copying it all and every kernel thread
 * of every rank copying its share (the same threads the collectives use). It is counted the way bus bandwidth
 * counts a link, as bytes moved from one place to another per second ({@code S / time}), so the copy stands for
 * the link that shared memory gives ranks; STREAM would count it twice (read + write), and the local summary line
 * gives that figure too.
 *
 * <p>Every rank runs the same loop; a trial is a barrier, {@code iters} back-to-back calls (enough for about
 * 16 MiB of traffic, 64 MiB beside the C peer, at least one) and a barrier, timed on rank 0; the median of 5 trials after one warm-up trial
 * is reported. The copy peers run between the same barriers (the one-thread copy on rank 0 while the others wait).
 *
 * <p>{@code --backend mpi} (outside mpirun) compiles {@code mpi_collectives_peer.c} with mpicc into a shared
 * library and runs this command under {@code mpirun -np --nproc}; its processes time each operation in
 * alternating trials, one through the Java backend, one through the C peer (called from the same processes, on
 * the same buffers), so both see the same machine load; rank 0 prints the medians. C peers: allReduce and
 * reduceScatter against the same algorithm in C (MPI_Alltoallv, sum in rank order, MPI_Allgatherv: like for
 * like); nativeAllReduce (MPI_Allreduce called through FFM) against MPI_Allreduce called from C; allGather and
 * allToAll against MPI_Allgather and MPI_Alltoall. Without mpicc the rows compare with the copy.
 */
@Command(name = "collectives", mixinStandardHelpOptions = true,
        description = "Bus bandwidth of allReduce, reduceScatter, allGather, allToAll beside a memory copy (and, for mpi, "
                + "Open MPI driven from C) in the same run.")
public final class BenchCollectivesCommand implements Runnable {
    private static final String BENCH = "collectives";
    private static final long MIN_SIZE = 1L << 10;
    private static final int TRIALS = 5;
    /** Trials of each side when a Java backend and its C peer alternate. */
    private static final int PAIRED_TRIALS = 9;
    /** The sizes of the FFM-vs-C bar. */
    private static final long BAR_FROM = 1L << 20, BAR_TO = 64L << 20;

    @Option(names = "--json", description = "One JSON object per case instead of a table.")
    boolean json;

    @Option(names = "--max-size", defaultValue = "256m", description = "Largest buffer (default ${DEFAULT-VALUE}).")
    String maxSize;

    @Option(names = "--ranks", defaultValue = "2", description = "Ranks of the local backend (default ${DEFAULT-VALUE}).")
    int ranks;

    @Option(names = "--backend", defaultValue = "local",
            description = "local (ranks as threads), mpi (processes under mpirun, beside Open MPI from C) or all (default ${DEFAULT-VALUE}).")
    String backend;

    @Option(names = "--nproc", defaultValue = "2", description = "Processes of the mpi backend (default ${DEFAULT-VALUE}).")
    int nproc;

    /** Set by the launching process: the C peer library the processes under mpirun call. */
    @Option(names = "--c-peer", hidden = true)
    Path cPeerLibrary;

    /**
     * One measured case: median seconds per call of {@code op} on S = {@code bytes}, the C peer's (NaN if none),
     * the copy bandwidth at that size, and the fastest trial of each (on a loaded machine, preemption only adds
     * time, so the best trials show what each path costs by itself).
     */
    record Case(String op, long bytes, double seconds, double cSeconds, double copyBw, double bestSeconds, double cBestSeconds) { }

    @Override
    public void run() {
        long max = MemoryPool.parseBytes(maxSize);
        if (max < MIN_SIZE) throw new IllegalArgumentException("--max-size must be at least 1k, got " + maxSize);
        BenchOutput out = new BenchOutput(System.out, json);
        switch (backend) {
            case "local" -> runLocal(max, out);
            case "mpi" -> runMpi(max, out);
            case "all" -> {
                runLocal(max, out);
                runMpi(max, out);
            }
            default -> throw new IllegalArgumentException("--backend must be local, mpi or all, got " + backend);
        }
    }

    private void runLocal(long max, BenchOutput out) {
        if (ranks < 2) throw new IllegalArgumentException("--ranks must be >= 2 (bus bandwidth of one rank is 0), got " + ranks);
        out.info(String.format(Locale.ROOT, "backend local: %d ranks as threads, %d kernel thread(s) each; peer: "
                        + "MemorySegment.copy, faster of 1 thread and all threads, in bytes copied per second; bus bandwidth as NCCL-tests define it",
                ranks, Math.max(1, Runtime.getRuntime().availableProcessors() / ranks)));
        double[] largest = new double[2];   // allReduce busbw and copy bandwidth at the largest size
        LocalCluster.run(ranks, ctx -> {
            bench(ctx, max, ctx.globalRank() == 0 ? out : null, cases -> {
                printRows(out, "local", ranks, cases);
                Case ar = cases.getFirst();
                largest[0] = busFactor(ar.op(), ranks) * ar.bytes() / ar.seconds() / 1e9;
                largest[1] = ar.copyBw();
            }, null);
            return null;
        });
        // allReduce reads and writes every rank's buffer once: 2n·S bytes of memory traffic (read + write), of which
        // bus bandwidth counts 2(n-1)/n·S; a copy of S bytes is 2S bytes of traffic. So if both ran at the same
        // memory speed, busbw/copy would be 2(n-1)/n² (50% for two ranks) with the copy counted as bytes copied.
        double traffic = largest[0] * trafficPerBusByte(ranks);
        out.info(String.format(Locale.ROOT, "largest allReduce: bus bandwidth %.2f GB/s = %.0f%% of copy %.2f GB/s (bytes copied per s; "
                        + "bar: >= 50%%; at the copy's memory speed it would be %.0f%%); its memory traffic (2n·S bytes, read + write) "
                        + "%.2f GB/s = %.0f%% of the copy's (2S bytes per copy, %.2f GB/s)",
                largest[0], 100 * largest[0] / largest[1], largest[1], 200.0 * (ranks - 1) / ((double) ranks * ranks),
                traffic, 50 * traffic / largest[1], 2 * largest[1]));
    }

    /** Memory traffic of an allReduce over bus bandwidth: 2n·S / (2(n-1)/n·S). */
    private static double trafficPerBusByte(int ranks) {
        return (double) ranks * ranks / (ranks - 1);
    }

    /**
     * Outside mpirun: C peer, this benchmark under mpirun, C peer again, then the rows. Inside mpirun (every
     * process): one rank of the mpi backend.
     */
    private void runMpi(long max, BenchOutput out) {
        try {
            if (Mpi.launchedByMpirun()) {
                runMpiRank(max, out);
                return;
            }
            if (nproc < 2) throw new IllegalArgumentException("--nproc must be >= 2 (bus bandwidth of one rank is 0), got " + nproc);
            Path mpirun = MpiBenchLauncher.onPath("mpirun");
            if (mpirun == null || !Mpi.isAvailable()) {
                throw new IllegalStateException("bench collectives --backend mpi needs Open MPI: "
                        + (mpirun == null ? "mpirun not found" : Mpi.unavailableReason())
                        + "; install openmpi-bin libopenmpi-dev (scripts/ensure-openmpi.sh)");
            }
            out.info(String.format(Locale.ROOT, "mpirun -np %d: waiting processes %s (load average %.1f, %d cores)", nproc,
                    MpiBenchLauncher.yieldWhenIdle(nproc) ? "yield the core (mpi_yield_when_idle 1)" : "spin",
                    ManagementFactory.getOperatingSystemMXBean().getSystemLoadAverage(), Runtime.getRuntime().availableProcessors()));
            Path dir = Files.createTempDirectory("shardwise-bench-mpi-");
            int rc;
            try {
                Path binary = MpiBenchLauncher.buildCPeer(dir, out);
                List<String> args = new ArrayList<>(List.of("--backend", "mpi", "--max-size", maxSize));
                if (json) args.add("--json");
                if (binary != null) args.addAll(List.of("--c-peer", binary.toString()));
                rc = MpiBenchLauncher.relaunch(mpirun, nproc, args);
            } finally {
                MpiBenchLauncher.deleteDirectory(dir);
            }
            if (rc != 0) throw new IllegalStateException("bench collectives under mpirun -np " + nproc + " failed (exit " + rc + "); see its output above");
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException("interrupted while running the mpi benchmark", e);
        }
    }

    /** One process of the mpi benchmark; rank 0 prints the rows and the FFM/C summary. */
    private void runMpiRank(long max, BenchOutput out) {
        MpiCPeer peer = cPeerLibrary == null ? null : new MpiCPeer(cPeerLibrary);
        try (MpiCommunicator world = MpiCommunicator.world()) {
            int n = world.size();
            int threads = Math.max(1, Runtime.getRuntime().availableProcessors() / n);
            boolean printer = world.rank() == 0;
            if (printer) {
                out.info(String.format(Locale.ROOT, "backend mpi: %d processes under mpirun (Open MPI through FFM), %d kernel thread(s) each; "
                        + "peer: %s", n, threads, peer == null ? "MemorySegment.copy (no C peer: run outside mpirun with mpicc installed)"
                        : "Open MPI driven from C (mpi_collectives_peer.c) in the same processes, trials alternating; copy bandwidth in the notes"));
            }
            List<Case> all = new ArrayList<>();
            try (ComputePool compute = new ComputePool("mpi-rank-" + world.rank() + "-kernels", threads)) {
                RankContext ctx = new RankContext(world.rank(), n, world, new MemoryPool("rank " + world.rank(), MemoryPool.UNLIMITED), compute);
                ComputePool.runWith(compute, () -> bench(ctx, max, printer ? out : null, cases -> {
                    printRows(out, "mpi", n, cases);
                    all.addAll(cases);
                }, peer));
            }
            if (printer && peer != null) summarizeAgainstC(out, all);
        }
        Mpi.finalizeMpi();
    }


    private static String cPeerName(String op) {
        return switch (op) {
            case "allReduce", "reduceScatter" -> "C rank-order";
            case "nativeAllReduce" -> "C MPI_Allreduce";
            case "allGather" -> "C MPI_Allgather";
            default -> "C MPI_Alltoall";
        };
    }

    /** Bus bytes per buffer byte: 2(n-1)/n for the all-reduces, (n-1)/n for the others (NCCL-tests). */
    private static double busFactor(String op, int n) {
        return (op.endsWith("llReduce") ? 2.0 : 1.0) * (n - 1) / n;
    }

    private static String formula(String op) {
        return switch (op) {
            case "allReduce" -> "2(n-1)/n*S/t";
            case "nativeAllReduce" -> "2(n-1)/n*S/t, MPI_Allreduce via FFM";
            case "reduceScatter" -> "(n-1)/n*S/t, S = input";
            case "allGather" -> "(n-1)/n*S/t, S = output";
            default -> "(n-1)/n*S/t, S = per rank";
        };
    }

    /** Prints one size's cases: bus bandwidth against the C peer's when it ran, else against the copy. */
    private static void printRows(BenchOutput out, String backend, int n, List<Case> cases) {
        for (Case c : cases) {
            String name = backend + " " + c.op() + " " + n + " ranks " + MemoryPool.formatBytes(c.bytes());
            double factor = busFactor(c.op(), n), busBw = factor * c.bytes() / c.seconds() / 1e9;
            double cSeconds = c.cSeconds();
            out.row(Double.isNaN(cSeconds)
                    ? new BenchRow(BENCH, name, busBw, "GB/s", "copy", c.copyBw(), Double.NaN,
                            String.format(Locale.ROOT, "busbw %s, %.1f us", formula(c.op()), c.seconds() * 1e6))
                    : new BenchRow(BENCH, name, busBw, "GB/s", cPeerName(c.op()), factor * c.bytes() / cSeconds / 1e9, Double.NaN,
                            String.format(Locale.ROOT, "busbw %s, %.1f us, copy %.2f GB/s", formula(c.op()), c.seconds() * 1e6, c.copyBw())));
        }
    }

    /**
     * The bar: FFM path / C peer (time_C / time_FFM) from 1 MiB to 64 MiB, per operation: of the medians, and of
     * the best trials; with the smallest of each.
     */
    private static void summarizeAgainstC(BenchOutput out, List<Case> cases) {
        for (String op : List.of("allReduce", "nativeAllReduce", "reduceScatter", "allGather", "allToAll")) {
            double min = Double.POSITIVE_INFINITY, bestMin = Double.POSITIVE_INFINITY;
            StringBuilder medians = new StringBuilder(), best = new StringBuilder();
            for (Case c : cases) {
                if (!c.op().equals(op) || Double.isNaN(c.cSeconds()) || c.bytes() < BAR_FROM || c.bytes() > BAR_TO) continue;
                double ratio = c.cSeconds() / c.seconds(), bestRatio = c.cBestSeconds() / c.bestSeconds();
                medians.append(String.format(Locale.ROOT, " %s %.2fx", MemoryPool.formatBytes(c.bytes()), ratio));
                best.append(String.format(Locale.ROOT, " %.2fx", bestRatio));
                min = Math.min(min, ratio);
                bestMin = Math.min(bestMin, bestRatio);
            }
            if (medians.isEmpty()) continue;
            out.info(String.format(Locale.ROOT, "mpi %s / %s, 1-64 MiB, medians:%s (min %.2fx); best trials:%s (min %.2fx); bar >= 0.9x",
                    op, cPeerName(op), medians, min, best, bestMin));
        }
    }

    /**
     * Runs on every rank; {@code out} is null except on rank 0, which times and hands each size's cases to
     * {@code sink} (allReduce first). On an {@link MpiCommunicator} it also times nativeAllReduce, and with a
     * {@code peer} each operation's C twin in alternating trials.
     */
    private static void bench(RankContext ctx, long maxBytes, BenchOutput out, Consumer<List<Case>> sink, MpiCPeer peer) {
        int n = ctx.worldSize();
        Communicator world = ctx.world();
        int maxCount = Math.toIntExact(maxBytes / 4 / n * n);
        try (Tensor a = Tensor.allocate(ctx.memory(), MemoryCategory.BUFFERS, DType.F32, maxCount);
             Tensor b = Tensor.allocate(ctx.memory(), MemoryCategory.BUFFERS, DType.F32, maxCount);
             Tensor stage = Tensor.allocate(ctx.memory(), MemoryCategory.BUFFERS, DType.F32, peer == null ? 1 : maxCount)) {
            for (long size = MIN_SIZE; size <= maxBytes; size *= 4) {
                int count = (int) (size / 4 / n * n), chunk = count / n;
                long bytes = 4L * count;
                Tensor whole = Tensor.wrap(a.segment(), DType.F32, count), whole2 = Tensor.wrap(b.segment(), DType.F32, count);
                Tensor part = Tensor.wrap(b.segment(), DType.F32, chunk);
                int[] counts = new int[n];
                Arrays.fill(counts, chunk);
                // ~16 MiB of traffic per trial; 64 MiB beside the C peer, so that a ratio is not one preemption
                int iters = (int) Math.max(1, Math.min(2000, (peer == null ? 16L << 20 : 64L << 20) / bytes));
                MemorySegment src = a.segment(), dst = b.segment();
                double copy1 = time(world, iters, ctx.globalRank() == 0 ? () -> MemorySegment.copy(src, 0, dst, 0, bytes) : () -> { });
                double copyAll = time(world, iters, () -> copyShare(ctx, src, dst, bytes));
                double copyBw = bytes / Math.min(copy1, copyAll) / 1e9;
                if (out != null && size == MIN_SIZE << 2 * ((63 - Long.numberOfLeadingZeros(maxBytes / MIN_SIZE)) / 2)) {
                    out.info(String.format(Locale.ROOT, "copy peer at %s: one thread %.2f GB/s, all %d threads %.2f GB/s",
                            MemoryPool.formatBytes(bytes), bytes / copy1 / 1e9, n * ctx.compute().threads(),
                            bytes / copyAll / 1e9));
                }
                List<Case> cases = new ArrayList<>();
                IntFunction<DoubleSupplier> c = op -> peer == null ? null : () -> peer.trial(op, a, b, stage, count, iters);
                cases.add(measure("allReduce", bytes, copyBw, world, iters, () -> world.allReduce(whole, ReduceOp.SUM),
                        c.apply(MpiCPeer.ALLREDUCE_RANK_ORDER)));
                if (world instanceof MpiCommunicator mpi) {
                    cases.add(measure("nativeAllReduce", bytes, copyBw, world, iters, () -> mpi.nativeAllReduce(whole, ReduceOp.SUM),
                            c.apply(MpiCPeer.ALLREDUCE_NATIVE)));
                }
                cases.add(measure("reduceScatter", bytes, copyBw, world, iters, () -> world.reduceScatter(part, whole, ReduceOp.SUM),
                        c.apply(MpiCPeer.REDUCESCATTER_RANK_ORDER)));
                cases.add(measure("allGather", bytes, copyBw, world, iters, () -> world.allGather(whole, part), c.apply(MpiCPeer.ALLGATHER)));
                cases.add(measure("allToAll", bytes, copyBw, world, iters, () -> world.allToAll(whole2, counts, whole, counts),
                        c.apply(MpiCPeer.ALLTOALL)));
                if (out != null) sink.accept(cases);
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

    /**
     * Median over {@value #TRIALS} trials (after one warm-up) of the time per call of {@code body}, called
     * {@code iters} times between two barriers; collective on {@code world}, meaningful on rank 0.
     */
    private static double time(Communicator world, int iters, Runnable body) {
        return measure("", 0, 0, world, iters, body, null).seconds();
    }

    /**
     * {@link #time} of {@code body}; with a {@code cTrial} (one C peer trial, seconds per call), Java and C trials
     * alternate, in turn first (the machine's load drifts; a trial's place in a pair should not favour either),
     * {@value #PAIRED_TRIALS} of each, and both medians are returned.
     */
    private static Case measure(String op, long bytes, double copyBw, Communicator world, int iters, Runnable body, DoubleSupplier cTrial) {
        int trials = cTrial == null ? TRIALS : PAIRED_TRIALS;
        double[] perCall = new double[trials], cPerCall = new double[trials];
        for (int trial = -1; trial < trials; trial++) {
            boolean cFirst = cTrial != null && (trial & 1) != 0;
            double c = cFirst ? cTrial.getAsDouble() : Double.NaN;
            world.barrier();
            long start = System.nanoTime();
            for (int i = 0; i < iters; i++) body.run();
            world.barrier();
            double seconds = (System.nanoTime() - start) / 1e9 / iters;
            if (cTrial != null && !cFirst) c = cTrial.getAsDouble();
            if (trial >= 0) {
                perCall[trial] = seconds;
                cPerCall[trial] = c;
            }
        }
        Arrays.sort(perCall);
        Arrays.sort(cPerCall);
        return new Case(op, bytes, perCall[trials / 2], cPerCall[trials / 2], copyBw, perCall[0], cPerCall[0]);
    }
}
