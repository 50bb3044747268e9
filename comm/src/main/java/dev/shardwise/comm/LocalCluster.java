package dev.shardwise.comm;

import dev.shardwise.core.exec.ComputePool;
import dev.shardwise.core.memory.MemoryPool;

import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

/**
 * Runs a job of N ranks as N threads of this JVM: the {@code local} communication backend. Each rank runs the
 * same body with its own {@link RankContext}: the {@code world} communicator, its own {@link MemoryPool} and its
 * own {@link ComputePool} of {@code max(1, cores / N)} threads (bound for the body, so ranks together never
 * oversubscribe the machine).
 *
 * <p>Collectives read peers' buffers directly (no staging copies), reduce in rank order 0..n-1 (bit-identical
 * on every rank and every run) and fail rather than hang: a rank waiting longer than
 * {@link Options#timeout()} throws {@link CommTimeoutException}; once any rank's body throws, every other rank's
 * pending or next collective throws {@link PeerFailedException} naming it.
 *
 * <p>{@link #run} blocks until every rank has returned or thrown, then closes the ranks' communicators and
 * compute pools, and every group's point-to-point staging (see {@link StagingPool}: held by the groups, up to
 * 64 MiB per sender-receiver pair, charged to no rank's pool). Memory the bodies allocated and did not free is
 * theirs to free; pools are only accounting.
 */
public final class LocalCluster {
    private LocalCluster() { }

    /** One rank's work; runs on the rank's own thread. */
    @FunctionalInterface
    public interface RankBody<T> {
        T run(RankContext rank) throws Exception;
    }

    /**
     * How a local job runs.
     *
     * @param timeout           how long a rank waits in a collective or receive for its peers (default 60 s)
     * @param memoryBudgetBytes each rank's memory budget, or {@link MemoryPool#UNLIMITED} (the default)
     * @param threadsPerRank    kernel threads per rank, or 0 for {@code max(1, cores / ranks)} (the default)
     */
    public record Options(Duration timeout, long memoryBudgetBytes, int threadsPerRank) {
        /** Timeout of collectives unless configured: long enough for any step, short enough to notice a hang. */
        public static final Duration DEFAULT_TIMEOUT = Duration.ofSeconds(60);

        /**
         * @throws IllegalArgumentException if the timeout is not positive, the budget is not positive or
         *                                  threadsPerRank is negative
         */
        public Options {
            if (timeout == null || timeout.isNegative() || timeout.isZero()) {
                throw new IllegalArgumentException("local cluster: timeout must be positive, got " + timeout);
            }
            if (memoryBudgetBytes <= 0) {
                throw new IllegalArgumentException("local cluster: memory budget per rank must be positive, got " + memoryBudgetBytes);
            }
            if (threadsPerRank < 0) {
                throw new IllegalArgumentException("local cluster: threads per rank must be >= 0 (0 = cores / ranks), got " + threadsPerRank);
            }
        }

        /** 60 s timeout, unlimited memory, cores / ranks threads per rank. */
        public static Options defaults() {
            return new Options(DEFAULT_TIMEOUT, MemoryPool.UNLIMITED, 0);
        }

        public Options withTimeout(Duration t) { return new Options(t, memoryBudgetBytes, threadsPerRank); }
        public Options withMemoryBudget(long bytes) { return new Options(timeout, bytes, threadsPerRank); }
        public Options withThreadsPerRank(int threads) { return new Options(timeout, memoryBudgetBytes, threads); }
    }

    /** {@link #run(int, Options, RankBody)} with {@link Options#defaults()}. */
    public static <T> List<T> run(int ranks, RankBody<T> body) {
        return run(ranks, Options.defaults(), body);
    }

    /**
     * Runs {@code body} on {@code ranks} threads and returns each rank's result, in rank order.
     *
     * @throws IllegalArgumentException if {@code ranks < 1}
     * @throws RankFailedException      if any rank threw: names the first rank that failed, with its exception as
     *                                  the cause and the other ranks' exceptions suppressed
     */
    public static <T> List<T> run(int ranks, Options options, RankBody<T> body) {
        return run(ranks, options, StagingPool.DEFAULT_BOUND_BYTES, body);
    }

    /** {@link #run(int, Options, RankBody)} with each sender-receiver pair's staging pool bounded to the given bytes. */
    static <T> List<T> run(int ranks, Options options, long stagingBytesPerPair, RankBody<T> body) {
        if (ranks < 1) throw new IllegalArgumentException("local cluster: ranks must be >= 1, got " + ranks);
        int threads = options.threadsPerRank() > 0 ? options.threadsPerRank()
                : Math.max(1, Runtime.getRuntime().availableProcessors() / ranks);
        LocalJob job = new LocalJob(ranks, options.timeout().toNanos(), stagingBytesPerPair);
        int[] worldRanks = new int[ranks];
        Arrays.setAll(worldRanks, i -> i);
        LocalGroup world = new LocalGroup(job, "world", worldRanks);

        Object[] results = new Object[ranks];
        Throwable[] failures = new Throwable[ranks];
        Thread[] rankThreads = new Thread[ranks];
        for (int r = 0; r < ranks; r++) {
            int rank = r;
            rankThreads[r] = Thread.ofPlatform().name("shardwise-rank-" + r).daemon(true).unstarted(() -> {
                try (ComputePool compute = new ComputePool("rank-" + rank + "-kernels", threads);
                     LocalCommunicator comm = new LocalCommunicator(world, rank)) {
                    RankContext ctx = new RankContext(rank, ranks, comm,
                            new MemoryPool("rank " + rank, options.memoryBudgetBytes()), compute);
                    ComputePool.runWith(compute, () -> {
                        try {
                            results[rank] = body.run(ctx);
                        } catch (Throwable e) {
                            failures[rank] = e;
                            job.fail(rank, e);
                        }
                    });
                } catch (Throwable e) {   // the pool or communicator failed to open or close
                    if (failures[rank] == null) failures[rank] = e;
                    job.fail(rank, e);
                }
            });
            job.setThread(r, rankThreads[r]);
        }
        for (Thread t : rankThreads) t.start();
        boolean interrupted = false;
        for (Thread t : rankThreads) {
            while (true) {
                try {
                    t.join();
                    break;
                } catch (InterruptedException e) {
                    // Make every rank give up at its next collective, then keep waiting for them to end.
                    interrupted = true;
                    job.fail(-1, new InterruptedException("the thread running the local cluster was interrupted"));
                }
            }
        }
        job.closeGroups();
        if (interrupted) Thread.currentThread().interrupt();

        LocalJob.Failure first = job.failure();
        if (first != null) {
            int firstRank = first.worldRank();
            RankFailedException e = new RankFailedException(firstRank, ranks, first.cause());
            for (int r = 0; r < ranks; r++) {
                if (failures[r] != null && failures[r] != first.cause()) e.addSuppressed(failures[r]);
            }
            throw e;
        }
        List<T> out = new ArrayList<>(ranks);
        for (Object o : results) {
            @SuppressWarnings("unchecked") T t = (T) o;
            out.add(t);
        }
        return out;
    }
}
