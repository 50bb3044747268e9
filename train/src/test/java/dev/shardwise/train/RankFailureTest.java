package dev.shardwise.train;

import dev.shardwise.comm.LocalCluster;
import dev.shardwise.comm.PeerFailedException;
import dev.shardwise.comm.RankFailedException;
import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;
import dev.shardwise.model.Gpt;
import dev.shardwise.model.ParameterSet;
import dev.shardwise.model.optim.AdamWOptimizer;
import dev.shardwise.model.optim.ParameterUpdate;
import dev.shardwise.parallel.ZeroStage;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.time.Duration;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.function.Supplier;

import static org.junit.jupiter.api.Assertions.*;

/**
 * A rank that throws in the middle of a step, on its own thread or on the helper thread that runs its overlapped
 * forward (ZeRO 3) or backward, must make the whole job fail at once naming that rank, while its peers wait inside collectives: never a
 * hang until the communicator's timeout.
 */
class RankFailureTest {
    static final int RANKS = 4, FAILING_RANK = 1, FAILING_STEP = 2;
    static final Duration TIMEOUT = Duration.ofSeconds(30);

    /**
     * Makes rank {@link #FAILING_RANK}'s forward or backward ({@code pass}) throw, on the helper thread where the
     * update overlaps that pass, at {@link #FAILING_STEP}: forward fails as its first block finishes (the next
     * block's gather already posted), backward as it ends.
     */
    record FailingPass(ParameterUpdate delegate, String pass, AtomicBoolean armed) implements ParameterUpdate {
        public Gpt.Hooks hooks() {
            Gpt.Hooks inner = delegate.hooks();
            if (!pass.equals("forward")) return inner;
            return new Gpt.Hooks() {
                public void beforeForward(ParameterSet.Unit unit) { inner.beforeForward(unit); }
                public void afterForward(ParameterSet.Unit unit) {
                    inner.afterForward(unit);
                    if (armed.get() && unit.index() == 1) throw new IllegalStateException("injected failure in forward");
                }
                public void beforeBackward(ParameterSet.Unit unit) { inner.beforeBackward(unit); }
                public void afterBackward(ParameterSet.Unit unit) { inner.afterBackward(unit); }
            };
        }
        public void beginMicroBatch(int index, int count) { delegate.beginMicroBatch(index, count); }
        public <T> T forward(Supplier<T> forward) { return delegate.forward(forward); }
        public void backward(Runnable backward) {
            delegate.backward(() -> {
                backward.run();
                if (armed.get() && pass.equals("backward")) throw new IllegalStateException("injected failure in backward");
            });
        }
        public Applied apply(double lr, double maxNorm) { return delegate.apply(lr, maxNorm); }
        public double mean(double value) { return delegate.mean(value); }
        public long steps() { return delegate.steps(); }
        public void close() { delegate.close(); }
    }

    @ParameterizedTest(name = "zero={0}, fails in {1}")
    @CsvSource({"0, fill", "0, backward", "2, backward", "3, fill", "3, forward", "3, backward"})
    void aRankFailingMidStepFailsTheJobAtOnceNamingIt(int stage, String where) {
        long start = System.nanoTime();
        RankFailedException e = assertThrows(RankFailedException.class, () -> LocalCluster.run(RANKS,
                LocalCluster.Options.defaults().withTimeout(TIMEOUT), ctx -> {
            MemoryPool pool = ctx.memory();
            int rank = ctx.world().rank();
            AtomicBoolean armed = new AtomicBoolean();
            ZeroStage zero = ZeroStage.of(stage);
            try (Gpt model = new Gpt(DataParallelParityTest.MODEL, zero.allocate(Gpt.declare(DataParallelParityTest.MODEL),
                         pool, DType.F32, RANKS));
                 ZeroStage.Update built = zero.build(model.parameters(), ctx.world(), pool, AdamWOptimizer.Settings.gpt(),
                         ZeroStage.Options.defaults().withBucketElements(3000));   // stage 0: many overlapped buckets
                 TrainStep step = new TrainStep(model, pool, 1.0, rank == FAILING_RANK && !where.equals("fill")
                         ? new FailingPass(built.update(), where, armed) : built.update());
                 Tensor batch = Tensor.allocate(pool, MemoryCategory.BUFFERS, DType.I32, 2, DataParallelParityTest.SEQ + 1)) {
                built.initialize(7);
                for (int s = 0; s < 5; s++) {
                    int[] tokens = DataParallelParityTest.globalBatch(s);
                    boolean fail = rank == FAILING_RANK && s == FAILING_STEP;
                    armed.set(fail);
                    step.run(batch, 1, b -> {
                        if (fail && where.equals("fill")) throw new IllegalStateException("injected failure in fill");
                        MemorySegment.copy(tokens, rank * 2 * (DataParallelParityTest.SEQ + 1), b.segment(), ValueLayout.JAVA_INT,
                                b.byteOffset(), 2 * (DataParallelParityTest.SEQ + 1));
                    }, 1e-3);
                }
                return true;
            }
        }));
        double seconds = (System.nanoTime() - start) / 1e9;
        assertEquals(FAILING_RANK, e.rank(), "zero=" + stage + " failing in " + where + ": the job names the rank that threw: " + e);
        assertTrue(e.getCause().getMessage().contains("injected failure in " + where), "zero=" + stage + ": cause " + e.getCause());
        for (Throwable other : e.getSuppressed()) {
            assertInstanceOf(PeerFailedException.class, rootOrPeer(other), "zero=" + stage + ": a peer reports " + other);
        }
        assertTrue(seconds < TIMEOUT.toSeconds() / 2.0, "zero=" + stage + " failing in " + where + ": took " + seconds
                + " s; peers must fail at once, not at the " + TIMEOUT.toSeconds() + " s timeout");
    }

    /** The PeerFailedException in {@code t}'s cause chain, or {@code t}. */
    private static Throwable rootOrPeer(Throwable t) {
        for (Throwable c = t; c != null; c = c.getCause()) if (c instanceof PeerFailedException) return c;
        return t;
    }
}
