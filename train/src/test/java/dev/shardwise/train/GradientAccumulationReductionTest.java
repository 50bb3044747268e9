package dev.shardwise.train;

import dev.shardwise.comm.Communicator;
import dev.shardwise.comm.LocalCluster;
import dev.shardwise.comm.ReduceOp;
import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;
import dev.shardwise.model.Gpt;
import dev.shardwise.model.optim.AdamWOptimizer;
import dev.shardwise.parallel.DataParallel;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.List;

import static org.junit.jupiter.api.Assertions.*;

/**
 * Overlapped data parallelism reduces gradients only on the last micro-batch of an accumulated step: the number
 * of gradient elements all-reduced per step is P whatever the number of micro-batches.
 */
class GradientAccumulationReductionTest {

    /** Forwards every call to {@code inner}, counting the elements all-reduced (the loss mean's 1 included). */
    static final class Counting implements Communicator {
        final Communicator inner;
        long allReducedElements;

        Counting(Communicator inner) { this.inner = inner; }

        public int rank() { return inner.rank(); }
        public int size() { return inner.size(); }
        public String name() { return inner.name(); }
        public void allReduce(Tensor buffer, ReduceOp op) {
            allReducedElements += buffer.numel();
            inner.allReduce(buffer, op);
        }
        public void reduceScatter(Tensor output, Tensor input, ReduceOp op) { inner.reduceScatter(output, input, op); }
        public void allGather(Tensor output, Tensor input) { inner.allGather(output, input); }
        public void broadcast(Tensor buffer, int root) { inner.broadcast(buffer, root); }
        public void allToAll(Tensor output, int[] receiveCounts, Tensor input, int[] sendCounts) {
            inner.allToAll(output, receiveCounts, input, sendCounts);
        }
        public void send(Tensor buffer, int peer, int tag) { inner.send(buffer, peer, tag); }
        public void receive(Tensor buffer, int peer, int tag) { inner.receive(buffer, peer, tag); }
        public void barrier() { inner.barrier(); }
        public Communicator split(int color, int key, String name) { return inner.split(color, key, name); }
        public void close() { }
    }

    @ParameterizedTest(name = "micro-batches={0}")
    @ValueSource(ints = {1, 3})
    void overlappedReductionRunsOnlyOnTheLastMicroBatch(int microBatches) {
        List<long[]> counts = LocalCluster.run(2, ctx -> {
            MemoryPool pool = ctx.memory();
            Counting group = new Counting(ctx.world());
            try (Gpt model = Gpt.create(DataParallelParityTest.MODEL, pool, DType.F32, 7);
                 AdamWOptimizer adam = new AdamWOptimizer(model.parameters(), pool, AdamWOptimizer.Settings.gpt());
                 DataParallel dp = new DataParallel(group, 3000, pool, model.parameters());
                 TrainStep step = new TrainStep(model, adam, pool, 1.0, dp);
                 Tensor batch = Tensor.allocate(pool, MemoryCategory.BUFFERS, DType.I32, 2, DataParallelParityTest.SEQ + 1)) {
                int[] tokens = DataParallelParityTest.globalBatch(0);
                step.run(batch, microBatches, b -> MemorySegment.copy(tokens, 0, b.segment(), ValueLayout.JAVA_INT,
                        b.byteOffset(), 2 * (DataParallelParityTest.SEQ + 1)), 1e-3);
                return new long[]{group.allReducedElements, model.parameters().paddedCount()};
            }
        });
        for (long[] c : counts) {
            assertEquals(c[1] + 1, c[0], microBatches + " micro-batches: gradients all-reduced once (P elements) plus the "
                    + "loss mean, not once per micro-batch");
        }
    }
}
