package dev.shardwise.parallel;

import dev.shardwise.model.Recompute;
import dev.shardwise.comm.Communicator;
import dev.shardwise.comm.ReduceOp;
import dev.shardwise.core.tensor.Tensor;
import org.junit.jupiter.api.Test;

import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.concurrent.BrokenBarrierException;
import java.util.concurrent.CyclicBarrier;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.function.Function;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class ProcessGroupsTest {

    /** What one simulated world rank asked of its world communicator. */
    record SplitCall(int color, int key, String name) {}

    /**
     * A single-process stand-in for a world of {@code size} ranks: one {@link FakeCommunicator} per rank, each
     * driven by its own thread. split is collective (MPI_Comm_split): each rank records its (color, key, name)
     * for the n-th split, waits for all ranks, then gets a fake group of the ranks with its color ordered by key
     * then world rank.
     */
    static final class FakeWorld {
        final int size;
        final CyclicBarrier barrier;
        final List<SplitCall[]> table = new ArrayList<>();
        final List<List<SplitCall>> callsByRank = new ArrayList<>();

        FakeWorld(int size) {
            this.size = size;
            this.barrier = new CyclicBarrier(size);
            for (int r = 0; r < size; r++) {
                callsByRank.add(new ArrayList<>());
            }
        }

        FakeCommunicator rank(int globalRank) {
            List<Integer> all = new ArrayList<>();
            for (int r = 0; r < size; r++) {
                all.add(r);
            }
            return new FakeCommunicator("world", globalRank, all, this);
        }

        /** Called by rank {@code worldRank} for its {@code sequence}-th split. */
        List<Integer> split(int worldRank, int sequence, SplitCall call) {
            synchronized (table) {
                while (table.size() <= sequence) {
                    table.add(new SplitCall[size]);
                }
                table.get(sequence)[worldRank] = call;
                callsByRank.get(worldRank).add(call);
            }
            await();
            SplitCall[] row;
            synchronized (table) {
                row = table.get(sequence);
            }
            List<Integer> members = new ArrayList<>();
            for (int r = 0; r < size; r++) {
                if (row[r].color() == call.color()) {
                    members.add(r);
                }
            }
            final SplitCall[] calls = row;
            members.sort(Comparator.<Integer>comparingInt(r -> calls[r].key()).thenComparingInt(r -> r));
            return members;
        }

        private void await() {
            try {
                barrier.await(10, TimeUnit.SECONDS);
            } catch (InterruptedException | BrokenBarrierException | TimeoutException e) {
                throw new IllegalStateException("simulated split did not complete on every rank", e);
            }
        }
    }

    /** A fake group: knows its members (world ranks) and whether it was closed; moves no data. */
    static class FakeCommunicator implements Communicator {
        final String name;
        final int worldRank;
        final List<Integer> members;
        final FakeWorld world;
        int splits;
        boolean closed;

        FakeCommunicator(String name, int worldRank, List<Integer> members, FakeWorld world) {
            this.name = name;
            this.worldRank = worldRank;
            this.members = List.copyOf(members);
            this.world = world;
        }

        @Override public int rank() { return members.indexOf(worldRank); }
        @Override public int size() { return members.size(); }
        @Override public String name() { return name; }

        @Override
        public Communicator split(int color, int key, String newName) {
            if (!name.equals("world")) {
                throw new UnsupportedOperationException("the fake splits only the world");
            }
            List<Integer> group = world.split(worldRank, splits++, new SplitCall(color, key, newName));
            return new FakeCommunicator(newName, worldRank, group, world);
        }

        @Override public void close() { closed = true; }

        @Override public void allReduce(Tensor buffer, ReduceOp op) { throw new UnsupportedOperationException(); }
        @Override public void reduceScatter(Tensor output, Tensor input, ReduceOp op) { throw new UnsupportedOperationException(); }
        @Override public void allGather(Tensor output, Tensor input) { throw new UnsupportedOperationException(); }
        @Override public void broadcast(Tensor buffer, int root) { throw new UnsupportedOperationException(); }
        @Override public void allToAll(Tensor output, int[] receiveCounts, Tensor input, int[] sendCounts) { throw new UnsupportedOperationException(); }
        @Override public void send(Tensor buffer, int peer, int tag) { throw new UnsupportedOperationException(); }
        @Override public void receive(Tensor buffer, int peer, int tag) { throw new UnsupportedOperationException(); }
        @Override public void barrier() { throw new UnsupportedOperationException(); }
    }

    /** Builds ProcessGroups on every rank of a fake world, one thread per rank; index = global rank. */
    static List<ProcessGroups> buildOnEveryRank(ParallelLayout layout, FakeWorld world) throws Exception {
        ExecutorService threads = Executors.newFixedThreadPool(world.size);
        try {
            List<Future<ProcessGroups>> futures = new ArrayList<>();
            for (int r = 0; r < world.size; r++) {
                FakeCommunicator worldComm = world.rank(r);
                futures.add(threads.submit(() -> new ProcessGroups(layout, worldComm)));
            }
            List<ProcessGroups> out = new ArrayList<>();
            for (Future<ProcessGroups> f : futures) {
                out.add(f.get(30, TimeUnit.SECONDS));
            }
            return out;
        } finally {
            threads.shutdownNow();
        }
    }

    @Test
    void everyRankLandsInTheLayoutsGroupsWithTheRightRanks() throws Exception {
        List<ParallelLayout> layouts = List.of(
                new ParallelLayout(2, 2, 4, 1, 2, false, 0, Recompute.NONE, 1),  // the documented 16 ranks, ep=2
                new ParallelLayout(4, 2, 1, 1, 2, true, 1, Recompute.FULL, 1),
                new ParallelLayout(2, 1, 3, 2, 1, false, 0, Recompute.NONE, 1),
                new ParallelLayout(4, 1, 2, 1, 4, false, 2, Recompute.SELECTIVE, 1),
                ParallelLayout.of(1, 1, 1));
        for (ParallelLayout layout : layouts) {
            FakeWorld world = new FakeWorld(layout.worldSize());
            List<ProcessGroups> all = buildOnEveryRank(layout, world);
            for (int g = 0; g < layout.worldSize(); g++) {
                ProcessGroups groups = all.get(g);
                String where = layout + " global rank " + g;
                assertEquals(g, groups.globalRank(), where);
                assertEquals(layout.coordinates(g), groups.coordinates(), where);
                assertEquals(List.of("tp", "dp", "pp", "ep", "edp", "mp"),
                        world.callsByRank.get(g).stream().map(c -> c.name().substring(0, c.name().indexOf('[')))
                                .toList(),
                        "split order on " + where);
                checkGroup(where, "tp", groups.tp(), layout.tensorParallelGroups(), g);
                checkGroup(where, "dp", groups.dp(), layout.dataParallelGroups(), g);
                checkGroup(where, "pp", groups.pp(), layout.pipelineGroups(), g);
                checkGroup(where, "ep", groups.ep(), layout.expertParallelGroups(), g);
                checkGroup(where, "edp", groups.expertDp(), layout.expertDataParallelGroups(), g);
                checkGroup(where, "mp", groups.modelParallel(), layout.modelParallelGroups(), g);
                assertEquals(groups.coordinates().tpRank(), groups.tp().rank(), "tpRank, " + where);
                assertEquals(groups.coordinates().dpRank(), groups.dp().rank(), "dpRank, " + where);
                assertEquals(groups.coordinates().ppStage(), groups.pp().rank(), "ppStage, " + where);
                assertEquals(groups.coordinates().epRank(), groups.ep().rank(), "epRank, " + where);
            }
        }
    }

    /** The group is named kind[i], holds exactly member list i of the layout, in order, and contains this rank. */
    private static void checkGroup(String where, String kind, Communicator group, List<List<Integer>> expected,
                                   int globalRank) {
        FakeCommunicator fake = (FakeCommunicator) group;
        String name = fake.name();
        assertTrue(name.matches(kind + "\\[\\d+]"), "name " + name + " of the " + kind + " group on " + where);
        int index = Integer.parseInt(name.substring(kind.length() + 1, name.length() - 1));
        assertEquals(expected.get(index), fake.members, "members of " + name + " on " + where);
        assertEquals(expected.get(index).indexOf(globalRank), fake.rank(), "rank in " + name + " on " + where);
    }

    @Test
    void closeClosesTheSplitGroupsButNotTheWorld() throws Exception {
        ParallelLayout layout = ParallelLayout.of(2, 2, 1);
        FakeWorld world = new FakeWorld(4);
        List<ProcessGroups> all = buildOnEveryRank(layout, world);
        for (ProcessGroups groups : all) {
            groups.close();
            groups.close();
            for (Function<ProcessGroups, Communicator> get : List.<Function<ProcessGroups, Communicator>>of(
                    ProcessGroups::tp, ProcessGroups::dp, ProcessGroups::pp, ProcessGroups::ep,
                    ProcessGroups::expertDp, ProcessGroups::modelParallel)) {
                assertTrue(((FakeCommunicator) get.apply(groups)).closed, get.apply(groups).name() + " closed");
            }
        }
    }

    @Test
    void buildingTwiceFromTheSameWorldGivesEqualIndependentGroups() throws Exception {
        ParallelLayout layout = ParallelLayout.of(2, 2, 2);
        FakeWorld world = new FakeWorld(8);
        List<ProcessGroups> first = buildOnEveryRank(layout, world);
        List<ProcessGroups> second = buildOnEveryRank(layout, world);
        for (int g = 0; g < 8; g++) {
            FakeCommunicator a = (FakeCommunicator) first.get(g).tp();
            FakeCommunicator b = (FakeCommunicator) second.get(g).tp();
            assertNotSame(a, b, "rank " + g);
            assertEquals(a.name, b.name, "rank " + g);
            assertEquals(a.members, b.members, "rank " + g);
            first.get(g).close();
            assertFalse(b.closed, "closing the first build leaves the second open, rank " + g);
        }
    }

    @Test
    void worldOfTheWrongSizeIsRejected() {
        FakeWorld world = new FakeWorld(12);
        var e = assertThrows(IllegalArgumentException.class,
                () -> new ProcessGroups(ParallelLayout.of(2, 2, 4), world.rank(0)));
        assertEquals("world size 12 does not match the layout's dp·tp·pp = 2·2·4 = 16; launch 16 ranks, or "
                + "choose tp·pp dividing 12", e.getMessage());
        assertTrue(world.callsByRank.getFirst().isEmpty(), "no split before the size check");
    }

    @Test
    void aSplitThatIgnoresTheKeyIsReportedAndEarlierGroupsAreClosed() {
        // A broken backend on world rank 1 of 2: every split hands back "rank 0 of 2".
        List<FakeCommunicator> made = new ArrayList<>();
        FakeCommunicator world = new FakeCommunicator("world", 1, List.of(0, 1), null) {
            @Override
            public Communicator split(int color, int key, String newName) {
                FakeCommunicator c = new FakeCommunicator(newName, 0, List.of(0, 1), null);
                made.add(c);
                return c;
            }
        };
        // dp=2, tp=1: the tp split (size 1) already disagrees in size, so the first group is the bad one.
        var e = assertThrows(IllegalStateException.class, () -> new ProcessGroups(ParallelLayout.of(2, 1, 1), world));
        assertEquals("split of world into tp[1] on global rank 1 returned rank 0 of 2; the layout expects rank 0 "
                + "of 1: the Communicator backend's split does not follow (color, key) ordering", e.getMessage());
        assertFalse(made.isEmpty());
        made.forEach(c -> assertTrue(c.closed, c.name + " closed after the failure"));
    }
}
