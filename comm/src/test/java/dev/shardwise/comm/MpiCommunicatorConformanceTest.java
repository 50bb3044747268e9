package dev.shardwise.comm;

import dev.shardwise.comm.mpi.Mpi;
import dev.shardwise.comm.mpi.MpiCommunicator;
import dev.shardwise.core.exec.ComputePool;
import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestInstance;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.NotSerializableException;
import java.io.ObjectInputStream;
import java.io.ObjectOutputStream;
import java.io.Serializable;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.lang.invoke.VarHandle;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * The conformance suite on the {@code mpi} backend, one rank per process: runs only inside {@code mpirun} (as
 * {@link MpiConformanceMain}, which {@link MpiConformanceTest} launches with 2 and 4 processes); elsewhere every
 * case is skipped.
 *
 * <p>How {@link #runRanks} maps the suite's threads-as-ranks onto processes: every process runs every case; a
 * case of n ranks splits a fresh world into the first n processes (its {@code world}, with the case's timeout)
 * and the rest (idle); the first n run the body; then every process's outcome (result or exception, serialized)
 * is all-gathered over a harness communicator, so every process returns the same list or throws the same
 * {@link RankFailedException} and runs the same assertions. Cases needing more ranks than processes are skipped.
 *
 * <p>Adapted: a rank that throws reports it ({@link MpiCommunicator#reportFailure}) before the outcomes are
 * gathered, which is how peers learn of it (the local backend shares one failure flag). The barrier case's
 * shared counters are a file in {@code /dev/shm} mapped by every process. The first failing rank is the lowest
 * rank whose own exception is not a {@link PeerFailedException} (processes share no clock to say which was
 * first). The large allReduce case uses 16 MiB instead of 64 MiB. Plus one case of its own: results equal the
 * local backend's bit for bit.
 */
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
class MpiCommunicatorConformanceTest extends CommunicatorConformanceTest {
    private MpiCommunicator harness;
    private long token;
    private final List<Path> sharedFiles = new ArrayList<>();

    @BeforeAll
    void joinTheMpiJob() {
        assumeTrue(Mpi.launchedByMpirun(), "runs only inside mpirun; MpiConformanceTest launches it with 2 and 4 processes");
        harness = MpiCommunicator.world(Duration.ofSeconds(120));
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment seed = arena.allocate(8);
            seed.set(ValueLayout.JAVA_LONG, 0, System.nanoTime() ^ ProcessHandle.current().pid() << 20);
            harness.broadcast(Tensor.wrap(seed, DType.I32, 2), 0);
            token = Math.abs(seed.get(ValueLayout.JAVA_LONG, 0));
        }
    }

    @AfterAll
    void leave() throws IOException {
        if (harness == null) return;
        harness.barrier();
        for (Path p : sharedFiles) Files.deleteIfExists(p);
        harness.close();
    }

    @Override
    String backend() {
        return "mpi";
    }

    /**
     * 16 MiB: still far above Open MPI's eager limit (its large-message path), without 64 MiB of element-wise
     * fill and check in every process of an oversubscribed 2-core run.
     */
    @Override
    long largeCount() {
        return 4L << 20;
    }

    /** What one process's body did: its result or its exception, as bytes. */
    private record Outcome(boolean ran, Object result, Throwable failure) implements Serializable { }

    @Override
    <T> List<T> runRanks(int ranks, Duration timeout, LocalCluster.RankBody<T> body) {
        int me = harness.rank(), processes = harness.size();
        assumeTrue(ranks <= processes, "needs " + ranks + " ranks, mpirun started " + processes + " processes");
        Outcome mine;
        try (MpiCommunicator job = MpiCommunicator.world(timeout);
             MpiCommunicator group = job.split(me < ranks ? 0 : 1, me, me < ranks ? "world" : "idle", timeout)) {
            mine = me < ranks ? run(ranks, group, body) : new Outcome(false, null, null);
        }
        List<Outcome> all = gather(mine);
        List<Integer> failed = new ArrayList<>();
        for (int r = 0; r < ranks; r++) if (all.get(r).failure() != null) failed.add(r);
        if (!failed.isEmpty()) {
            int first = failed.stream().filter(r -> !(all.get(r).failure() instanceof PeerFailedException))
                    .findFirst().orElse(failed.getFirst());
            RankFailedException e = new RankFailedException(first, ranks, all.get(first).failure());
            for (int r : failed) if (r != first) e.addSuppressed(all.get(r).failure());
            throw e;
        }
        List<T> results = new ArrayList<>();
        for (int r = 0; r < ranks; r++) {
            @SuppressWarnings("unchecked") T t = (T) all.get(r).result();
            results.add(t);
        }
        return results;
    }

    private static <T> Outcome run(int ranks, MpiCommunicator group, LocalCluster.RankBody<T> body) {
        int threads = Math.max(1, Runtime.getRuntime().availableProcessors() / ranks);
        Object[] result = new Object[1];
        Throwable[] failure = new Throwable[1];
        try (ComputePool compute = new ComputePool("rank-" + group.rank() + "-kernels", threads)) {
            RankContext ctx = new RankContext(group.rank(), ranks, group, new MemoryPool("rank " + group.rank(), MemoryPool.UNLIMITED), compute);
            ComputePool.runWith(compute, () -> {
                try {
                    result[0] = body.run(ctx);
                } catch (Throwable e) {
                    failure[0] = e;
                    group.reportFailure(e);
                }
            });
        }
        return new Outcome(true, result[0], failure[0]);
    }

    /** Every process's outcome, in harness rank order: lengths, then the bytes padded to the longest. */
    private List<Outcome> gather(Outcome mine) {
        byte[] bytes = serialize(mine);
        int n = harness.size();
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment length = arena.allocate(4), lengths = arena.allocate(4L * n);
            length.set(ValueLayout.JAVA_INT, 0, bytes.length);
            harness.allGather(Tensor.wrap(lengths, DType.I32, n), Tensor.wrap(length, DType.I32, 1));
            int max = 0;
            for (int p = 0; p < n; p++) max = Math.max(max, lengths.getAtIndex(ValueLayout.JAVA_INT, p));
            int words = (max + 3) / 4;
            MemorySegment in = arena.allocate(4L * words), out = arena.allocate(4L * words * n);
            MemorySegment.copy(bytes, 0, in, ValueLayout.JAVA_BYTE, 0, bytes.length);
            harness.allGather(Tensor.wrap(out, DType.I32, words * n), Tensor.wrap(in, DType.I32, words));
            List<Outcome> all = new ArrayList<>();
            for (int p = 0; p < n; p++) {
                byte[] b = out.asSlice(4L * words * p, lengths.getAtIndex(ValueLayout.JAVA_INT, p)).toArray(ValueLayout.JAVA_BYTE);
                all.add(deserialize(b));
            }
            return all;
        }
    }

    private static byte[] serialize(Outcome o) {
        try {
            ByteArrayOutputStream bytes = new ByteArrayOutputStream();
            try (ObjectOutputStream out = new ObjectOutputStream(bytes)) {
                out.writeObject(o);
            }
            return bytes.toByteArray();
        } catch (NotSerializableException e) {
            Throwable why = o.failure() != null ? new AssertionError("(not serializable) " + o.failure(), null)
                    : new AssertionError("the rank's result is not serializable: " + e.getMessage());
            return serialize(new Outcome(true, null, why));
        } catch (IOException e) {
            throw new IllegalStateException(e);
        }
    }

    private static Outcome deserialize(byte[] b) {
        try (ObjectInputStream in = new ObjectInputStream(new ByteArrayInputStream(b))) {
            return (Outcome) in.readObject();
        } catch (IOException | ClassNotFoundException e) {
            throw new IllegalStateException("cannot read a rank's outcome: " + e, e);
        }
    }

    /** A file in /dev/shm named after this job's token, mapped by every process (volatile int access). */
    @Override
    SharedInts sharedInts(String name, int n) {
        Path path = Path.of("/dev/shm", "shardwise-conformance-" + token + "-" + name);
        sharedFiles.add(path);
        MemorySegment ints;
        try (FileChannel ch = FileChannel.open(path, StandardOpenOption.CREATE, StandardOpenOption.READ, StandardOpenOption.WRITE)) {
            if (ch.size() < 4L * n) ch.write(java.nio.ByteBuffer.allocate((int) (4L * n - ch.size())), ch.size());
            ints = ch.map(FileChannel.MapMode.READ_WRITE, 0, 4L * n, Arena.ofAuto());
        } catch (IOException e) {
            throw new IllegalStateException("cannot map " + path + " for the ranks' shared counters: " + e, e);
        }
        VarHandle h = ValueLayout.JAVA_INT.arrayElementVarHandle();
        return new SharedInts() {
            @Override public int get(int i) { return (int) h.getVolatile(ints, 0L, (long) i); }
            @Override public void set(int i, int value) { h.setVolatile(ints, 0L, (long) i, value); }
        };
    }

    // ---------------------------------------------------------------- adapted

    /** As the suite's, skipped when mpirun started fewer than 3 processes (the suite expects a failure). */
    @Test
    @Override
    void timeoutNamesGroupOperationSequenceAndMissingRank() {
        assumeTrue(harness.size() >= 3, "needs 3 ranks, mpirun started " + harness.size() + " processes");
        super.timeoutNamesGroupOperationSequenceAndMissingRank();
    }

    /** As the suite's, skipped when mpirun started fewer than 4 processes (the suite expects a failure). */
    @Test
    @Override
    void aRankThatThrowsMakesThePeersFailFastNamingIt() {
        assumeTrue(harness.size() >= 4, "needs 4 ranks, mpirun started " + harness.size() + " processes");
        super.aRankThatThrowsMakesThePeersFailFastNamingIt();
    }

    // ---------------------------------------------------------------- mpi only

    @ParameterizedTest(name = "receive buffer of {0} elements for a message of 10")
    @ValueSource(ints = {8, 12})
    void aReceiveIntoABufferOfAnotherSizeThrowsOnTheReceiver(int receiveCount) {
        RankFailedException e = org.junit.jupiter.api.Assertions.assertThrows(RankFailedException.class, () -> runRanks(2, ctx -> {
            if (ctx.globalRank() == 0) {
                try (Tensor t = CommData.filled(ctx, DType.F32, 10, 0)) {
                    ctx.world().send(t, 1, 5);
                }
            } else {
                try (Tensor t = Tensor.allocate(ctx.memory(), MemoryCategory.BUFFERS, DType.F32, receiveCount)) {
                    ctx.world().receive(t, 0, 5);
                }
            }
            return null;
        }));
        assertEquals(1, e.rank(), "the receiver fails: " + e);
        IllegalArgumentException cause = org.junit.jupiter.api.Assertions.assertInstanceOf(IllegalArgumentException.class, e.getCause());
        assertTrue(cause.getMessage().contains("tag 5") && cause.getMessage().contains("same dtype and size"), cause.getMessage());
    }

    /**
     * The reductions' staging buffers of a world and of a group split from it are charged to the pool given to
     * {@link MpiCommunicator#world(Duration, MemoryPool)} as BUFFERS (n·C elements for a reduceScatter of C per
     * rank; n times this rank's chunk for an allReduce) and released when each communicator closes.
     */
    @Test
    void reductionStagingIsChargedToTheRanksPoolAndReleasedOnClose() {
        int n = harness.size(), rank = harness.rank(), count = 10_007, chunk = 1001;
        MemoryPool comm = MemoryPool.unlimited("rank " + rank), tensors = MemoryPool.unlimited("tensors");
        long worldStaging = 4L * n * ((long) count * (rank + 1) / n - (long) count * rank / n), groupStaging = 4L * n * chunk;
        try (Tensor t = Tensor.allocate(tensors, MemoryCategory.BUFFERS, DType.F32, count);
             Tensor in = Tensor.allocate(tensors, MemoryCategory.BUFFERS, DType.F32, n * chunk);
             Tensor out = Tensor.allocate(tensors, MemoryCategory.BUFFERS, DType.F32, chunk)) {
            MpiCommunicator world = MpiCommunicator.world(Duration.ofSeconds(60), comm);
            world.allReduce(t, ReduceOp.SUM);
            assertEquals(worldStaging, comm.liveBytes(MemoryCategory.BUFFERS), "rank " + rank + " of " + n + ": world allReduce of " + count);
            MpiCommunicator group = world.split(0, rank, "all");
            group.reduceScatter(out, in, ReduceOp.SUM);
            assertEquals(worldStaging + groupStaging, comm.liveBytes(MemoryCategory.BUFFERS),
                    "rank " + rank + " of " + n + ": the split group's reduceScatter of " + chunk + " per rank charges the same pool");
            assertEquals(comm.liveBytes(), comm.liveBytes(MemoryCategory.BUFFERS), "rank " + rank + ": only BUFFERS are charged");
            group.close();
            assertEquals(worldStaging, comm.liveBytes(), "rank " + rank + " of " + n + ": after closing the group");
            world.close();
            assertEquals(0, comm.liveBytes(), "rank " + rank + " of " + n + ": after closing the world");
            assertEquals(worldStaging + groupStaging, comm.peakBytes(MemoryCategory.BUFFERS), "rank " + rank + ": the peak stays reported");
        }
    }

    @ParameterizedTest(name = "world size {0}")
    @ValueSource(ints = {2, 3, 4})
    void allReduceAndReduceScatterEqualTheLocalBackendBitForBit(int n) {
        int count = 30_011;
        LocalCluster.RankBody<List<float[]>> body = ctx -> {
            Random random = new Random(77 + ctx.globalRank());
            List<float[]> results = new ArrayList<>();
            for (ReduceOp op : ReduceOp.values()) {
                try (Tensor t = Tensor.allocate(ctx.memory(), MemoryCategory.BUFFERS, DType.F32, count);
                     Tensor in = Tensor.allocate(ctx.memory(), MemoryCategory.BUFFERS, DType.F32, n * 1001);
                     Tensor out = Tensor.allocate(ctx.memory(), MemoryCategory.BUFFERS, DType.F32, 1001)) {
                    // magnitudes from 1e-6 to 1e6, so the order of addition shows in the bits
                    for (int i = 0; i < count; i++) t.set((random.nextFloat() - 0.5f) * Math.pow(10, random.nextInt(13) - 6), i);
                    for (int i = 0; i < n * 1001; i++) in.set((random.nextFloat() - 0.5f) * Math.pow(10, random.nextInt(13) - 6), i);
                    ctx.world().allReduce(t, op);
                    ctx.world().reduceScatter(out, in, op);
                    results.add(t.toFloatArray());
                    results.add(out.toFloatArray());
                }
            }
            return results;
        };
        List<List<float[]>> mpi = runRanks(n, body);
        List<List<float[]>> local = LocalCluster.run(n, body);
        for (int r = 0; r < n; r++) {
            for (int k = 0; k < mpi.get(r).size(); k++) {
                String what = (k % 2 == 0 ? "allReduce " : "reduceScatter ") + ReduceOp.values()[k / 2] + " f32 world " + n + " rank " + r;
                assertTrue(Arrays.equals(mpi.get(r).get(k), local.get(r).get(k)), "mpi and local differ in the bits: " + what);
            }
        }
    }
}
