package dev.shardwise.comm;

import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import java.time.Duration;
import java.util.Arrays;
import java.util.List;
import java.util.Random;

import static dev.shardwise.comm.CommData.assertBits;
import static dev.shardwise.comm.CommData.filled;
import static dev.shardwise.comm.CommData.range;
import static dev.shardwise.comm.CommData.read;
import static dev.shardwise.comm.CommData.reduced;
import static dev.shardwise.comm.CommData.value;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The behaviour every {@link Communicator} backend must have, checked against plain references computed here
 * element by element: every collective for world sizes 1 to 4, SUM/AVG/MAX over F32/F64/I32, odd and large
 * sizes, subgroups from split working concurrently, uneven all-to-all, tagged send/receive out of order,
 * bit-identical reruns, and the timeout and peer-failure errors. A backend's test class extends this one and
 * says how to run ranks ({@link #runRanks}).
 */
abstract class CommunicatorConformanceTest {
    static final DType[] DTYPES = {DType.F32, DType.F64, DType.I32};
    static final long[] COUNTS = {1, 3, 1000};

    /**
     * Runs {@code body} on {@code ranks} ranks of the backend under test, collectives timing out after
     * {@code timeout}; returns each rank's result, or throws {@link RankFailedException} naming the first rank
     * that failed.
     */
    abstract <T> List<T> runRanks(int ranks, Duration timeout, LocalCluster.RankBody<T> body);

    /** Backend name for failure messages. */
    abstract String backend();

    /**
     * {@code n} ints every rank of {@link #runRanks} sees and writes (volatile semantics), all 0 at first: an
     * array shared by the rank threads for {@code local}, shared memory between the processes for {@code mpi}.
     * Lets a test observe other ranks' progress without going through the communicator under test.
     */
    abstract SharedInts sharedInts(String name, int n);

    /** Ints shared by the ranks of a test (see {@link #sharedInts}). */
    interface SharedInts {
        int get(int i);

        void set(int i, int value);
    }

    <T> List<T> runRanks(int ranks, LocalCluster.RankBody<T> body) {
        return runRanks(ranks, Duration.ofSeconds(30), body);
    }

    // ---------------------------------------------------------------- reductions

    @ParameterizedTest(name = "world size {0}")
    @ValueSource(ints = {1, 2, 3, 4})
    void allReduceMatchesRankOrderReferenceForEveryOpAndDtype(int n) {
        List<Integer> cases = runRanks(n, ctx -> {
            int done = 0;
            for (DType dtype : DTYPES) {
                for (ReduceOp op : ReduceOp.values()) {
                    for (long count : COUNTS) {
                        int salt = done;
                        try (Tensor t = filled(ctx, dtype, count, salt)) {
                            ctx.world().allReduce(t, op);
                            assertBits(backend() + " allReduce " + op + " " + dtype.label() + "[" + count + "] world " + n
                                    + " rank " + ctx.globalRank(), t, count, i -> reduced(dtype, op, range(n), i, salt));
                        }
                        done++;
                    }
                }
            }
            return done;
        });
        assertEquals(DTYPES.length * 3 * COUNTS.length, cases.getFirst(), "cases run on rank 0");
    }

    @ParameterizedTest(name = "world size {0}")
    @ValueSource(ints = {2, 3, 4})
    void allReduceOfAMillionAndThreeElementsMatchesReference(int n) {
        long count = 1_000_003;
        runRanks(n, ctx -> {
            try (Tensor t = filled(ctx, DType.F32, count, 5)) {
                ctx.world().allReduce(t, ReduceOp.SUM);
                assertBits(backend() + " allReduce SUM f32[" + count + "] world " + n + " rank " + ctx.globalRank(), t, count,
                        i -> reduced(DType.F32, ReduceOp.SUM, range(n), i, 5));
            }
            return null;
        });
    }

    /** Elements of f32 in the large allReduce case: 16 Mi (64 MiB) unless a backend needs it smaller to stay fast. */
    long largeCount() {
        return 16L << 20;
    }

    @Test
    void allReduceOfALargeBufferMatchesReference() {
        long count = largeCount();
        runRanks(2, ctx -> {
            try (Tensor t = filled(ctx, DType.F32, count, 9)) {
                ctx.world().allReduce(t, ReduceOp.SUM);
                assertBits(backend() + " allReduce SUM f32[" + count + "] world 2 rank " + ctx.globalRank(), t, count,
                        i -> reduced(DType.F32, ReduceOp.SUM, range(2), i, 9));
            }
            return null;
        });
    }

    @ParameterizedTest(name = "world size {0}")
    @ValueSource(ints = {1, 2, 3, 4})
    void reduceScatterLeavesEachRankItsReducedChunk(int n) {
        runRanks(n, ctx -> {
            int r = ctx.globalRank();
            for (DType dtype : DTYPES) {
                for (ReduceOp op : ReduceOp.values()) {
                    for (long chunk : new long[] {1, 3, 1001}) {
                        try (Tensor in = filled(ctx, dtype, n * chunk, 1);
                             Tensor out = Tensor.allocate(ctx.memory(), MemoryCategory.BUFFERS, dtype, (int) chunk)) {
                            ctx.world().reduceScatter(out, in, op);
                            assertBits(backend() + " reduceScatter " + op + " " + dtype.label() + "[" + chunk + "] per rank, world "
                                    + n + " rank " + r, out, chunk, i -> reduced(dtype, op, range(n), r * chunk + i, 1));
                        }
                    }
                }
            }
            return null;
        });
    }

    // ---------------------------------------------------------------- copies

    @ParameterizedTest(name = "world size {0}")
    @ValueSource(ints = {1, 2, 3, 4})
    void allGatherConcatenatesInputsInRankOrder(int n) {
        runRanks(n, ctx -> {
            for (DType dtype : DTYPES) {
                for (long chunk : new long[] {1, 3, 1001}) {
                    try (Tensor in = filled(ctx, dtype, chunk, 2);
                         Tensor out = Tensor.allocate(ctx.memory(), MemoryCategory.BUFFERS, dtype, (int) (n * chunk))) {
                        ctx.world().allGather(out, in);
                        assertBits(backend() + " allGather " + dtype.label() + "[" + chunk + "] per rank, world " + n + " rank "
                                + ctx.globalRank(), out, n * chunk, i -> value(dtype, (int) (i / chunk), i % chunk, 2));
                    }
                }
            }
            return null;
        });
    }

    @ParameterizedTest(name = "world size {0}")
    @ValueSource(ints = {2, 3})
    void allGatherInPlaceFromOwnChunkOfTheOutput(int n) {
        long chunk = 1001;
        runRanks(n, ctx -> {
            int r = ctx.globalRank();
            try (Tensor out = Tensor.allocate(ctx.memory(), MemoryCategory.BUFFERS, DType.F32, (int) (n * chunk))) {
                Tensor mine = out.slice(0, (int) (r * chunk), (int) chunk);
                for (long i = 0; i < chunk; i++) CommData.write(mine, i, value(DType.F32, r, i, 3));
                ctx.world().allGather(out, mine);
                assertBits(backend() + " in-place allGather world " + n + " rank " + r, out, n * chunk,
                        i -> value(DType.F32, (int) (i / chunk), i % chunk, 3));
            }
            return null;
        });
    }

    @ParameterizedTest(name = "world size {0}")
    @ValueSource(ints = {1, 2, 3, 4})
    void broadcastCopiesTheRootsBufferFromEveryRoot(int n) {
        runRanks(n, ctx -> {
            for (int root = 0; root < n; root++) {
                for (DType dtype : DTYPES) {
                    int salt = root;
                    try (Tensor t = filled(ctx, dtype, 1003, salt)) {
                        ctx.world().broadcast(t, root);
                        int from = root;
                        assertBits(backend() + " broadcast " + dtype.label() + " root " + root + " world " + n + " rank "
                                + ctx.globalRank(), t, 1003, i -> value(dtype, from, i, salt));
                    }
                }
            }
            return null;
        });
    }

    /** Elements rank {@code from} sends rank {@code to}: 0 to 3, zero for several pairs. */
    static int sendCount(int from, int to) {
        return (from * 3 + to * 5 + 1) % 4;
    }

    @ParameterizedTest(name = "world size {0}")
    @ValueSource(ints = {1, 2, 3, 4})
    void allToAllDeliversUnevenChunksIncludingEmptyOnes(int n) {
        runRanks(n, ctx -> {
            int r = ctx.globalRank();
            int[] send = new int[n], receive = new int[n];
            for (int p = 0; p < n; p++) {
                send[p] = sendCount(r, p);
                receive[p] = sendCount(p, r);
            }
            int sent = Arrays.stream(send).sum(), received = Arrays.stream(receive).sum();
            for (DType dtype : DTYPES) {
                try (Tensor in = Tensor.allocate(ctx.memory(), MemoryCategory.BUFFERS, dtype, Math.max(1, sent));
                     Tensor out = Tensor.allocate(ctx.memory(), MemoryCategory.BUFFERS, dtype, Math.max(1, received))) {
                    // element j of the chunk for peer p encodes (sender, receiver, j)
                    int at = 0;
                    for (int p = 0; p < n; p++) {
                        for (int j = 0; j < send[p]; j++) CommData.write(in, at++, 100 * r + 10 * p + j);
                    }
                    ctx.world().allToAll(out, receive, in, send);
                    at = 0;
                    for (int p = 0; p < n; p++) {
                        for (int j = 0; j < receive[p]; j++, at++) {
                            assertEquals(100 * p + 10 * r + j, read(out, at), backend() + " allToAll " + dtype.label() + " world " + n
                                    + ": rank " + r + " element " + j + " from rank " + p + " (counts " + Arrays.toString(receive) + ")");
                        }
                    }
                }
            }
            return null;
        });
    }

    // ---------------------------------------------------------------- point to point and barrier

    @ParameterizedTest(name = "world size {0}")
    @ValueSource(ints = {2, 3, 4})
    void sendAndReceiveMatchTagsReceivedOutOfOrder(int n) {
        runRanks(n, ctx -> {
            int r = ctx.globalRank(), next = (r + 1) % n, prev = (r + n - 1) % n;
            try (Tensor a = filled(ctx, DType.F32, 17, 1);
                 Tensor b = filled(ctx, DType.I32, 1_000_003, 2);
                 Tensor gotA = Tensor.allocate(ctx.memory(), MemoryCategory.BUFFERS, DType.F32, 17);
                 Tensor gotB = Tensor.allocate(ctx.memory(), MemoryCategory.BUFFERS, DType.I32, 1_000_003)) {
                ctx.world().send(a, next, 1);
                ctx.world().send(b, next, 2);
                ctx.world().receive(gotB, prev, 2);
                ctx.world().receive(gotA, prev, 1);
                assertBits(backend() + " tag 1 at rank " + r + " from " + prev, gotA, 17, i -> value(DType.F32, prev, i, 1));
                assertBits(backend() + " tag 2 at rank " + r + " from " + prev, gotB, 1_000_003, i -> value(DType.I32, prev, i, 2));
            }
            return null;
        });
    }

    @Test
    void receivePostedBeforeTheSendGetsTheMessage() {
        runRanks(2, ctx -> {
            try (Tensor t = Tensor.allocate(ctx.memory(), MemoryCategory.BUFFERS, DType.F64, 4096)) {
                if (ctx.globalRank() == 0) {
                    ctx.world().receive(t, 1, 7);
                    assertBits(backend() + " late send", t, 4096, i -> value(DType.F64, 1, i, 4));
                } else {
                    Thread.sleep(50);   // let rank 0 wait first
                    try (Tensor src = filled(ctx, DType.F64, 4096, 4)) {
                        ctx.world().send(src, 0, 7);
                    }
                }
            }
            ctx.world().barrier();
            return null;
        });
    }

    @ParameterizedTest(name = "world size {0}")
    @ValueSource(ints = {1, 2, 3, 4})
    void barrierReturnsOnlyAfterEveryRankArrived(int n) {
        SharedInts arrived = sharedInts("barrier-arrivals-" + n, n);
        runRanks(n, ctx -> {
            for (int round = 1; round <= 20; round++) {
                if ((ctx.globalRank() + round) % n == 0) Thread.sleep(2);
                arrived.set(ctx.globalRank(), round);
                ctx.world().barrier();
                for (int p = 0; p < n; p++) {
                    assertTrue(arrived.get(p) >= round, backend() + " barrier round " + round + ": rank " + ctx.globalRank()
                            + " passed before rank " + p + " arrived");
                }
                ctx.world().barrier();
            }
            return null;
        });
    }

    // ---------------------------------------------------------------- split

    @ParameterizedTest(name = "world size {0}")
    @ValueSource(ints = {1, 2, 3, 4})
    void splitByParityGivesGroupsThatReduceConcurrently(int n) {
        runRanks(n, ctx -> {
            int r = ctx.globalRank();
            try (Communicator parity = ctx.world().split(r % 2, r, r % 2 == 0 ? "even" : "odd")) {
                int[] members = java.util.stream.IntStream.range(0, n).filter(p -> p % 2 == r % 2).toArray();
                assertEquals(members.length, parity.size(), "size of " + parity.name() + " at rank " + r);
                assertEquals(r / 2, parity.rank(), "rank in " + parity.name() + " of world rank " + r);
                assertEquals(r % 2 == 0 ? "even" : "odd", parity.name());
                for (int round = 0; round < 5; round++) {
                    int salt = 10 + round;
                    try (Tensor t = filled(ctx, DType.F32, 10_001, salt)) {
                        parity.allReduce(t, ReduceOp.SUM);
                        assertBits(backend() + " allReduce in " + parity.name() + " round " + round + " world rank " + r, t, 10_001,
                                i -> reduced(DType.F32, ReduceOp.SUM, members, i, salt));
                    }
                }
            }
            return null;
        });
    }

    @Test
    void splitOrdersNewRanksByKeyThenOldRank() {
        List<Integer> newRanks = runRanks(4, ctx -> {
            try (Communicator reversed = ctx.world().split(0, -ctx.globalRank() / 2, "reversed-pairs")) {
                return reversed.rank();
            }
        });
        assertEquals(List.of(2, 3, 0, 1), newRanks, "keys 0, 0, -1, -1: pairs swap, ties keep world order");
    }

    @Test
    void gridSplitBothWaysRunsCollectivesInRowsAndColumnsConcurrently() {
        // 2x2 grid: world rank = 2 * row + column
        runRanks(4, ctx -> {
            int r = ctx.globalRank(), row = r / 2, col = r % 2;
            try (Communicator rowGroup = ctx.world().split(row, col, "row[" + row + "]");
                 Communicator colGroup = ctx.world().split(col, row, "col[" + col + "]")) {
                assertEquals(col, rowGroup.rank(), "rank in row of world rank " + r);
                assertEquals(row, colGroup.rank(), "rank in column of world rank " + r);
                int[] rowMembers = {2 * row, 2 * row + 1}, colMembers = {col, 2 + col};
                for (int round = 0; round < 5; round++) {
                    int salt = 20 + round;
                    try (Tensor a = filled(ctx, DType.F64, 3001, salt);
                         Tensor in = filled(ctx, DType.I32, 7, salt);
                         Tensor gathered = Tensor.allocate(ctx.memory(), MemoryCategory.BUFFERS, DType.I32, 14)) {
                        rowGroup.allReduce(a, ReduceOp.AVG);
                        colGroup.allReduce(a, ReduceOp.MAX);
                        colGroup.allGather(gathered, in);
                        // rows first: a = avg over the row; then max over the column of the row averages
                        assertBits(backend() + " grid round " + round + " world rank " + r, a, 3001, i -> Math.max(
                                reduced(DType.F64, ReduceOp.AVG, new int[] {0, 1}, i, salt),
                                reduced(DType.F64, ReduceOp.AVG, new int[] {2, 3}, i, salt)));
                        assertBits(backend() + " column gather round " + round + " world rank " + r, gathered, 14,
                                i -> value(DType.I32, colMembers[(int) (i / 7)], i % 7, salt));
                        assertEquals(2, rowMembers.length);
                    }
                }
            }
            return null;
        });
    }

    // ---------------------------------------------------------------- reproducibility and errors

    @Test
    void allReduceIsBitIdenticalAcrossRunsAndRanks() {
        int n = 3;
        long count = 1_000_003;
        LocalCluster.RankBody<float[]> body = ctx -> {
            Random random = new Random(1234 + ctx.globalRank());
            try (Tensor t = Tensor.allocate(ctx.memory(), MemoryCategory.BUFFERS, DType.F32, (int) count)) {
                // magnitudes from 1e-6 to 1e6, so the order of addition shows in the bits
                for (long i = 0; i < count; i++) CommData.write(t, i, (random.nextFloat() - 0.5f) * Math.pow(10, random.nextInt(13) - 6));
                ctx.world().allReduce(t, ReduceOp.SUM);
                return t.toFloatArray();
            }
        };
        List<float[]> first = runRanks(n, body), second = runRanks(n, body);
        for (int r = 0; r < n; r++) {
            assertTrue(Arrays.equals(first.get(0), first.get(r)), backend() + ": rank " + r + " differs from rank 0 in run 1");
            assertTrue(Arrays.equals(first.get(r), second.get(r)), backend() + ": rank " + r + " differs between runs");
        }
    }

    @Test
    void timeoutNamesGroupOperationSequenceAndMissingRank() {
        RankFailedException e = assertThrows(RankFailedException.class, () -> runRanks(3, Duration.ofMillis(200), ctx -> {
            ctx.world().barrier();                          // #1
            if (ctx.globalRank() != 2) {
                try (Tensor t = filled(ctx, DType.F32, 8, 0)) {
                    ctx.world().allReduce(t, ReduceOp.SUM);  // #2: rank 2 never calls it
                }
            }
            return null;
        }));
        CommTimeoutException timeout = assertInstanceOf(CommTimeoutException.class, e.getCause(), "cause of " + e);
        assertEquals("world", timeout.group());
        assertEquals("allReduce", timeout.operation());
        assertEquals(2, timeout.sequence());
        assertEquals(List.of(2), timeout.missingRanks());
        String message = timeout.getMessage();
        for (String part : List.of("world", "allReduce", "#2", "[2]", "200 ms")) {
            assertTrue(message.contains(part), "timeout message lacks '" + part + "': " + message);
        }
    }

    @Test
    void aRankThatThrowsMakesThePeersFailFastNamingIt() {
        long start = System.nanoTime();
        RankFailedException e = assertThrows(RankFailedException.class, () -> runRanks(4, Duration.ofSeconds(60), ctx -> {
            for (int step = 0; step < 3; step++) {
                if (step == 1 && ctx.globalRank() == 2) throw new IllegalStateException("rank 2 broke in step 1");
                try (Tensor t = filled(ctx, DType.F32, 1000, step)) {
                    ctx.world().allReduce(t, ReduceOp.SUM);
                }
            }
            return null;
        }));
        double seconds = (System.nanoTime() - start) / 1e9;
        assertEquals(2, e.rank(), "first failing rank in " + e);
        assertTrue(e.getMessage().contains("rank 2"), e.getMessage());
        assertEquals("rank 2 broke in step 1", e.getCause().getMessage());
        assertEquals(3, e.getSuppressed().length, "the three peers' failures are suppressed: " + Arrays.toString(e.getSuppressed()));
        for (Throwable s : e.getSuppressed()) {
            PeerFailedException peer = assertInstanceOf(PeerFailedException.class, s);
            assertEquals(2, peer.failedRank(), peer.getMessage());
        }
        assertTrue(seconds < 30, "peers waited " + seconds + " s instead of failing fast (timeout 60 s)");
    }

    @Test
    void mismatchedSizesAcrossRanksAreReportedOnEveryRank() {
        RankFailedException e = assertThrows(RankFailedException.class, () -> runRanks(2, ctx -> {
            try (Tensor t = filled(ctx, DType.F32, 10 + ctx.globalRank(), 0)) {
                ctx.world().allReduce(t, ReduceOp.SUM);
            }
            return null;
        }));
        Throwable cause = e.getCause();
        assertInstanceOf(IllegalArgumentException.class, cause, "cause of " + e);
        assertTrue(cause.getMessage().contains("allReduce(f32[10], SUM)") && cause.getMessage().contains("allReduce(f32[11], SUM)"),
                cause.getMessage());
    }
}
