package dev.shardwise.parallel;

import dev.shardwise.comm.Communicator;
import dev.shardwise.comm.ReduceOp;
import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;

/** A per-rank double reduced over a group (loss means, squared-norm sums), through an 8-byte f64 buffer it owns. */
final class ScalarReduction implements AutoCloseable {
    private final Communicator group;
    private final Tensor buffer;   // [1] f64

    ScalarReduction(Communicator group, MemoryPool pool) {
        this.group = group;
        this.buffer = Tensor.allocate(pool, MemoryCategory.BUFFERS, DType.F64, 1);
    }

    /** {@code op} over the group of every rank's {@code value}; every rank gets the same result. */
    double reduce(double value, ReduceOp op) {
        buffer.set(value, 0);
        group.allReduce(buffer, op);
        return buffer.getDouble(0);
    }

    @Override
    public void close() {
        buffer.close();
    }
}
