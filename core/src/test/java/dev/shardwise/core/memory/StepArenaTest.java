package dev.shardwise.core.memory;

import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;
import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.*;

/** StepArena: memory reused across resets, zeroed by allocate and left as it is by allocateForOverwrite. */
class StepArenaTest {

    @Test
    void aResetHandsTheSameMemoryOutAgainZeroedOnlyByAllocate() {
        MemoryPool pool = MemoryPool.unlimited("rank 0");
        try (StepArena arena = new StepArena(pool)) {
            Tensor first = arena.allocate(DType.F32, 3, 5);
            first.fill(7);
            long live = pool.liveBytes();
            arena.reset();
            Tensor overwrite = arena.allocateForOverwrite(DType.F32, 5, 3);
            assertEquals(address(first), address(overwrite), "same-sized request reuses the block");
            assertEquals(7.0, overwrite.getDouble(4, 2), "allocateForOverwrite leaves the old contents");
            arena.reset();
            Tensor zeroed = arena.allocate(DType.F32, 15);
            assertEquals(address(first), address(zeroed), "same-sized request reuses the block");
            for (int i = 0; i < 15; i++) assertEquals(0.0, zeroed.getDouble(i), "allocate zeroes reused element " + i);
            assertEquals(live, pool.liveBytes(), "reuse charges nothing more to the pool");
        }
        assertEquals(0, pool.liveBytes(), "close frees every block");
    }

    private static long address(Tensor t) {
        return t.segment().address() + t.byteOffset();
    }
}
