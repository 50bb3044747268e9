package dev.shardwise.comm;

import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;
import org.junit.jupiter.api.Test;

import java.util.concurrent.atomic.AtomicReference;

import static dev.shardwise.comm.CommData.assertBits;
import static dev.shardwise.comm.CommData.filled;
import static dev.shardwise.comm.CommData.value;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The local backend's staging of messages sent before their receive is posted ({@link StagingPool} per sender and
 * receiver): bounded, reused, freed with the group. A barrier between the sends and the receives makes every
 * receive late, so every message is staged.
 */
class LocalStagingTest {
    private static final LocalCluster.Options OPTIONS = LocalCluster.Options.defaults();

    private static LocalGroup groupOf(Communicator comm) {
        return ((LocalCommunicator) comm).group();
    }

    @Test
    void sendsFarAheadOfTheirReceivesArriveIntactAndInOrderBeyondThePoolBound() {
        long bound = 64 * 1024;
        int messages = 40;                                          // 40 x 4 KiB + 40 x 2 KiB = 240 KiB ahead
        LocalCluster.run(2, OPTIONS, bound, ctx -> {
            Communicator world = ctx.world();
            for (int round = 0; round < 2; round++) {
                if (ctx.globalRank() == 0) {
                    for (int k = 0; k < messages; k++) {            // two tags interleaved, each in its own order
                        try (Tensor a = filled(ctx, DType.F32, 1024, 100 * round + k);
                             Tensor b = filled(ctx, DType.I32, 512, 500 + 100 * round + k)) {
                            world.send(a, 1, 1);
                            world.send(b, 1, 2);
                        }
                    }
                    world.barrier();
                } else {
                    world.barrier();
                    try (Tensor a = Tensor.allocate(ctx.memory(), MemoryCategory.BUFFERS, DType.F32, 1024);
                         Tensor b = Tensor.allocate(ctx.memory(), MemoryCategory.BUFFERS, DType.I32, 512)) {
                        for (int k = 0; k < messages; k++) {        // tag 2 first: tags do not wait on each other
                            int salt = 500 + 100 * round + k;
                            world.receive(b, 0, 2);
                            assertBits("round " + round + " tag 2 message " + k, b, 512, i -> value(DType.I32, 0, i, salt));
                        }
                        for (int k = 0; k < messages; k++) {
                            int salt = 100 * round + k;
                            world.receive(a, 0, 1);
                            assertBits("round " + round + " tag 1 message " + k, a, 1024, i -> value(DType.F32, 0, i, salt));
                        }
                    }
                    StagingPool.Stats s = groupOf(world).stagingStats(1, 0);
                    assertTrue(s.retainedBytes() <= bound, "round " + round + ": pool retains " + s + " within " + bound + " bytes");
                    assertEquals(bound, s.retainedBytes(), "round " + round + ": 4 KiB and 2 KiB classes fill the bound exactly");
                    assertTrue(s.oneOffAllocations() > 0, "round " + round + ": messages beyond the bound went one-off: " + s);
                    assertEquals(2L * messages * (round + 1), s.pooledAllocations() + s.reuses() + s.oneOffAllocations(),
                            "round " + round + ": every message was staged once: " + s);
                    if (round == 1) {
                        assertEquals(0, s.evictedClasses(), "both classes stayed in use: " + s);
                    }
                }
                world.barrier();
            }
            return null;
        });
    }

    @Test
    void lateRoundTripsOfOneSizeReuseOneSegmentPerDirection() {
        int trips = 1000, count = 64 * 64;                           // the pipeline bench's 16 KiB message
        LocalCluster.run(2, ctx -> {
            Communicator world = ctx.world();
            int me = ctx.globalRank(), peer = 1 - me;
            LocalGroup group = groupOf(world);
            try (Tensor out = Tensor.allocate(ctx.memory(), MemoryCategory.BUFFERS, DType.F32, count);
                 Tensor in = Tensor.allocate(ctx.memory(), MemoryCategory.BUFFERS, DType.F32, count)) {
                for (int trip = 0; trip < trips; trip++) {
                    CommData.write(out, 0, trip);
                    CommData.write(out, count - 1, -trip - me);
                    world.send(out, peer, 3);
                    world.barrier();                                // the message is staged before its receive
                    world.receive(in, peer, 3);
                    assertEquals(trip, CommData.read(in, 0), "trip " + trip + " first element at rank " + me);
                    assertEquals(-trip - peer, CommData.read(in, count - 1), "trip " + trip + " last element at rank " + me);
                    if (trip == 9 || trip == trips - 1) {
                        StagingPool.Stats s = group.stagingStats(me, peer);
                        assertEquals(1, s.pooledAllocations(), "fresh segments after " + (trip + 1) + " trips at rank " + me + ": " + s);
                        assertEquals(trip, s.reuses(), "every later trip reused it: " + s);
                        assertEquals(0, s.oneOffAllocations(), s.toString());
                        assertEquals(count * 4L, s.retainedBytes(), s.toString());
                    }
                    world.barrier();                                // one message in flight per direction at a time
                }
            }
            return null;
        });
    }

    @Test
    void closingTheLastCommunicatorOfAGroupFreesItsStaging() {
        AtomicReference<LocalGroup> pair = new AtomicReference<>(), world = new AtomicReference<>();
        LocalCluster.run(2, ctx -> {
            world.set(groupOf(ctx.world()));
            Communicator split = ctx.world().split(0, 0, "pair");
            LocalGroup group = groupOf(split);
            pair.set(group);
            try (Tensor t = filled(ctx, DType.F64, 1000, 7)) {
                if (ctx.globalRank() == 0) {
                    split.send(t, 1, 1);                           // received late: its segment goes back to the pool
                    split.send(t, 1, 2);                           // never received
                    ctx.world().send(t, 1, 1);                     // never received, freed when the world closes
                }
                ctx.world().barrier();
                if (ctx.globalRank() == 1) split.receive(t, 0, 1);
            }
            ctx.world().barrier();
            assertEquals(2 * StagingPool.sizeClass(8000), group.stagingStats(1, 0).retainedBytes(), "two messages staged");
            split.close();
            ctx.world().barrier();
            assertTrue(group.closed(), "both ranks closed the pair");
            StagingPool.Stats s = group.stagingStats(1, 0);
            assertEquals(0, s.retainedBytes(), "closing the group freed its pool: " + s);
            assertFalse(world.get().closed(), "the world is still open at rank " + ctx.globalRank());
            try (Tensor t = Tensor.allocate(ctx.memory(), MemoryCategory.BUFFERS, DType.F64, 1000)) {
                IllegalStateException e = assertThrows(IllegalStateException.class, () -> split.receive(t, 1 - ctx.globalRank(), 2));
                assertTrue(e.getMessage().contains("pair is closed; receive"), e.getMessage());
            }
            return null;
        });
        assertTrue(pair.get().closed());
        assertTrue(world.get().closed(), "the world closes with the ranks' world communicators");
        assertEquals(0, world.get().stagingStats(1, 0).retainedBytes(), "the undelivered world message is freed");
    }

    @Test
    void aClosedCommunicatorRefusesSends() {
        RankFailedException e = assertThrows(RankFailedException.class, () -> LocalCluster.run(2, ctx -> {
            Communicator split = ctx.world().split(0, 0, "pair");
            split.close();
            try (Tensor t = filled(ctx, DType.F32, 10, 1)) {
                split.send(t, 1 - ctx.globalRank(), 0);
            }
            return null;
        }));
        assertInstanceOf(IllegalStateException.class, e.getCause());
        assertTrue(e.getCause().getMessage().contains("pair is closed; send"), e.getCause().getMessage());
    }
}
