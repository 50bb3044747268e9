package dev.shardwise.train;

import dev.shardwise.comm.Communicator;
import dev.shardwise.comm.LocalCluster;
import dev.shardwise.comm.ReduceOp;
import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;
import dev.shardwise.model.Gpt;
import dev.shardwise.model.ParameterSet;
import dev.shardwise.model.optim.AdamWOptimizer;
import dev.shardwise.model.optim.ParameterUpdate;
import dev.shardwise.parallel.ShardMoments;
import dev.shardwise.parallel.ZeroShardedUpdate;
import dev.shardwise.parallel.ZeroStage;
import org.junit.jupiter.api.Test;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.function.Supplier;

import static org.junit.jupiter.api.Assertions.*;

/**
 * ZeRO stage 3 prefetches in forward (DeepSpeed's parameter prefetch): unit l+1's all-gather is issued on the
 * rank's thread while unit l is still in forward on the helper thread, at most two units' gathered values are alive
 * at once, and only the rank's thread calls the communicator. Checked through the order of hook and collective
 * calls, not timings: at the end of every unit's forward (but the last) the hook waits until the next unit's gather
 * has been issued, which a forward that gathers only as a unit opens would never do.
 */
class ZeroForwardPrefetchTest {
    static final int RANKS = 2, STEPS = 3;
    static final long WAIT_SECONDS = 20;   // a bound on a hang, not a timing check: the gather is issued or never

    /** Counts the all-gathers issued and notes any collective called from a thread other than the rank's. */
    static final class Watching implements Communicator {
        final Communicator inner;
        final Thread rankThread = Thread.currentThread();
        private int gathersIssued;
        volatile String wrongThread;

        Watching(Communicator inner) { this.inner = inner; }

        synchronized int gathersIssued() { return gathersIssued; }

        synchronized void resetGathers() { gathersIssued = 0; }

        /** Waits until at least {@code n} all-gathers were issued since the last reset; false if not within the bound. */
        synchronized boolean awaitGathers(int n) throws InterruptedException {
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(WAIT_SECONDS);
            while (gathersIssued < n) {
                long left = deadline - System.nanoTime();
                if (left <= 0) return false;
                TimeUnit.NANOSECONDS.timedWait(this, left);
            }
            return true;
        }

        private void check(String op) {
            if (Thread.currentThread() != rankThread && wrongThread == null) {
                wrongThread = op + " called on " + Thread.currentThread().getName() + ", not the rank thread " + rankThread.getName();
            }
        }

        public int rank() { return inner.rank(); }
        public int size() { return inner.size(); }
        public String name() { return inner.name(); }
        public void allReduce(Tensor buffer, ReduceOp op) { check("allReduce"); inner.allReduce(buffer, op); }
        public void reduceScatter(Tensor output, Tensor input, ReduceOp op) {
            check("reduceScatter");
            inner.reduceScatter(output, input, op);
        }
        public void allGather(Tensor output, Tensor input) {
            check("allGather");
            synchronized (this) {
                gathersIssued++;
                notifyAll();
            }
            inner.allGather(output, input);
        }
        public void broadcast(Tensor buffer, int root) { check("broadcast"); inner.broadcast(buffer, root); }
        public void allToAll(Tensor output, int[] receiveCounts, Tensor input, int[] sendCounts) {
            check("allToAll");
            inner.allToAll(output, receiveCounts, input, sendCounts);
        }
        public void send(Tensor buffer, int peer, int tag) { check("send"); inner.send(buffer, peer, tag); }
        public void receive(Tensor buffer, int peer, int tag) { check("receive"); inner.receive(buffer, peer, tag); }
        public void barrier() { check("barrier"); inner.barrier(); }
        public Communicator split(int color, int key, String name) { return inner.split(color, key, name); }
        public void close() { }
    }

    /**
     * Wraps the update: in each training forward after the first (the one that records the unit order), the end of
     * the unit opened p-th waits for the (p+2)-th all-gather of the pass, the gather of the unit opened next.
     */
    static final class WaitingForPrefetch implements ParameterUpdate {
        final ParameterUpdate delegate;
        final Watching group;
        final MemoryPool pool;
        final Thread rankThread = Thread.currentThread();
        int forwards, opensInFirstForward, opens, prefetchedWhileComputing, helperHookCalls;
        long buffersAtStart, peakBuffersInForward;
        String missing;

        WaitingForPrefetch(ParameterUpdate delegate, Watching group, MemoryPool pool) {
            this.delegate = delegate;
            this.group = group;
            this.pool = pool;
        }

        public Gpt.Hooks hooks() {
            Gpt.Hooks inner = delegate.hooks();
            return new Gpt.Hooks() {
                public void beforeForward(ParameterSet.Unit unit) {
                    inner.beforeForward(unit);
                    if (Thread.currentThread() != rankThread) helperHookCalls++;
                    opens++;
                }

                public void afterForward(ParameterSet.Unit unit) {
                    int position = opens - 1;
                    if (forwards > 1 && missing == null && position + 1 < opensInFirstForward) {
                        try {
                            if (group.awaitGathers(position + 2)) prefetchedWhileComputing++;
                            else if (missing == null) missing = "unit " + unit.name() + " (opened at position " + position + ") finished "
                                    + "forward without the next unit's gather issued (" + group.gathersIssued() + " gathers)";
                        } catch (InterruptedException e) {
                            Thread.currentThread().interrupt();
                            throw new IllegalStateException(e);
                        }
                    }
                    peakBuffersInForward = Math.max(peakBuffersInForward, pool.liveBytes(MemoryCategory.BUFFERS) - buffersAtStart);
                    inner.afterForward(unit);
                }

                public void beforeBackward(ParameterSet.Unit unit) { inner.beforeBackward(unit); }
                public void afterBackward(ParameterSet.Unit unit) { inner.afterBackward(unit); }
            };
        }

        public <T> T forward(Supplier<T> forward) {
            forwards++;
            opens = 0;
            group.resetGathers();
            buffersAtStart = pool.liveBytes(MemoryCategory.BUFFERS);
            T result = delegate.forward(forward);
            if (forwards == 1) opensInFirstForward = opens;
            return result;
        }

        public void beginMicroBatch(int index, int count) { delegate.beginMicroBatch(index, count); }
        public void backward(Runnable backward) { delegate.backward(backward); }
        public Applied apply(double lr, double maxNorm) { return delegate.apply(lr, maxNorm); }
        public double mean(double value) { return delegate.mean(value); }
        public long steps() { return delegate.steps(); }
        public void close() { }   // the delegate is closed by its owner
    }

    record Seen(int opens, int prefetched, int helperHookCalls, String missing, String wrongThread, long peakBuffers,
                long largestUnitBytes) { }

    @Test
    void nextUnitsGatherIsIssuedWhileTheCurrentUnitRunsForward() {
        List<Seen> ranks = LocalCluster.run(RANKS, ctx -> {
            MemoryPool pool = ctx.memory();
            Watching group = new Watching(ctx.world());
            int rank = group.rank();
            try (Gpt model = new Gpt(DataParallelParityTest.MODEL, ZeroStage.PARAMETERS.allocate(
                         Gpt.declare(DataParallelParityTest.MODEL), pool, DType.F32, RANKS));
                 ZeroShardedUpdate zero = new ZeroShardedUpdate(3, model.parameters(), group, pool, AdamWOptimizer.Settings.gpt(),
                         ShardMoments.resident());
                 WaitingForPrefetch update = new WaitingForPrefetch(zero, group, pool);
                 TrainStep step = new TrainStep(model, pool, 1.0, update);
                 Tensor batch = Tensor.allocate(pool, MemoryCategory.BUFFERS, DType.I32, 2, DataParallelParityTest.SEQ + 1)) {
                zero.initialize(7);
                for (int s = 0; s < STEPS; s++) {
                    int[] tokens = DataParallelParityTest.globalBatch(s);
                    step.run(batch, 1, b -> MemorySegment.copy(tokens, rank * 2 * (DataParallelParityTest.SEQ + 1), b.segment(),
                            ValueLayout.JAVA_INT, b.byteOffset(), 2 * (DataParallelParityTest.SEQ + 1)), 1e-3);
                }
                long largest = 0;
                for (ParameterSet.Unit u : model.parameters().units()) largest = Math.max(largest, 4L * u.size());
                return new Seen(update.opensInFirstForward, update.prefetchedWhileComputing, update.helperHookCalls,
                        update.missing, group.wrongThread, update.peakBuffersInForward, largest);
            }
        });
        for (int r = 0; r < RANKS; r++) {
            Seen seen = ranks.get(r);
            assertNull(seen.missing(), "rank " + r + ": " + seen.missing());
            assertNull(seen.wrongThread(), "rank " + r + ": the communicator has one calling thread: " + seen.wrongThread());
            assertEquals((STEPS - 1) * (seen.opens() - 1), seen.prefetched(), "rank " + r + ": every unit but the last of "
                    + seen.opens() + " opened per forward saw the next one's gather issued, in the " + (STEPS - 1)
                    + " forwards after the first");
            assertEquals(STEPS * seen.opens(), seen.helperHookCalls(), "rank " + r + ": forward's hooks ran on the helper thread");
            assertTrue(seen.peakBuffers() <= 2 * seen.largestUnitBytes(), "rank " + r + ": at most two units' values gathered "
                    + "at once in forward, but BUFFERS grew by " + seen.peakBuffers() + " bytes (largest unit "
                    + seen.largestUnitBytes() + ")");
        }
    }
}
