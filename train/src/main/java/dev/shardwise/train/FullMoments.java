package dev.shardwise.train;

import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;

/** Whole first and second moments of a rank's flat parameters in BUFFERS, allocated only around a checkpoint. */
final class FullMoments {
    private final MemoryPool pool;
    private final DType dtype;
    private final int length;
    private Tensor m, v;

    FullMoments(MemoryPool pool, DType dtype, int length) {
        this.pool = pool;
        this.dtype = dtype;
        this.length = length;
    }

    /** m and v, allocated on first use. */
    Tensor[] allocate() {
        if (m == null) {
            m = Tensor.allocate(pool, MemoryCategory.BUFFERS, dtype, length);
            v = Tensor.allocate(pool, MemoryCategory.BUFFERS, dtype, length);
        }
        return new Tensor[]{m, v};
    }

    /** The first moments, or null when not allocated. */
    Tensor m() { return m; }

    /** The second moments, or null when not allocated. */
    Tensor v() { return v; }

    /** Frees both, if allocated. */
    void release() {
        if (m != null) {
            m.close();
            v.close();
            m = v = null;
        }
    }
}
