package dev.shardwise.model;

import dev.shardwise.core.exec.ComputePool;

import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.concurrent.atomic.AtomicLong;

/**
 * The work list of a grouped GEMM (MegaBlocks, Gale et al. 2022; CUTLASS's grouped GEMM): independent tiles of
 * expert work (an expert's block of rows, or a block of one weight gradient's rows), each run whole on one thread of
 * {@link ComputePool#current()}, the costliest first (longest-processing-time order, so the last tiles to be claimed
 * are short and the threads finish together). Tiles of several expert groups (the routed and the shared experts) can
 * share one list, so one pass over the pool covers them all instead of one parallel split per small GEMM.
 *
 * <p>A tile's kernels run single-threaded on the thread that claimed it (the pool runs nested loops inline), so what
 * a tile computes does not depend on the thread count or on which thread ran it. Tiles must write disjoint outputs.
 * Not thread-safe: one thread fills a list and runs it.
 */
final class ExpertTiles {
    private record Tile(long cost, Runnable work) { }

    private final List<Tile> tiles = new ArrayList<>();

    /** Adds a tile of about {@code cost} multiply-adds. */
    void add(long cost, Runnable work) {
        tiles.add(new Tile(cost, work));
    }

    /**
     * Runs every tile over the compute pool, costliest first (ties in the order added), empties the list, and adds the
     * run's wall time and its tiles' running time to {@code phases}.
     */
    void run(MoePhases phases) {
        Tile[] order = tiles.toArray(new Tile[0]);
        tiles.clear();
        java.util.Arrays.sort(order, Comparator.comparingLong(Tile::cost).reversed());   // stable: ties keep their order
        if (!phases.on()) {
            ComputePool.current().parallelFor(order.length, i -> order[i].work.run());
            return;
        }
        long start = System.nanoTime();
        AtomicLong busy = new AtomicLong();
        ComputePool.current().parallelFor(order.length, i -> {
            long t = System.nanoTime();
            order[i].work.run();
            busy.addAndGet(System.nanoTime() - t);
        });
        phases.tiles(System.nanoTime() - start, busy.get());
    }

    /** Runs every tile (see {@link #run(MoePhases)}), timing nothing. */
    void run() {
        run(MoePhases.OFF);
    }
}
