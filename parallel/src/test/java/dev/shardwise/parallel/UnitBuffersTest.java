package dev.shardwise.parallel;

import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;
import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotSame;
import static org.junit.jupiter.api.Assertions.assertSame;

class UnitBuffersTest {

    @Test
    void aGivenBackBufferServesTheNextTakerOfItsSizeZeroedWhenAskedAndStaysChargedUntilClose() {
        MemoryPool pool = MemoryPool.unlimited("rank 0");
        try (UnitBuffers buffers = new UnitBuffers(pool, DType.F32)) {
            Tensor a = buffers.take(1000, true);
            a.copyFrom(new float[1000]);
            a.set(7.0, 3);
            buffers.give(a);
            assertEquals(4000, pool.liveBytes(MemoryCategory.BUFFERS), "kept for the next taker");
            Tensor again = buffers.take(1000, true);
            assertSame(a, again, "the same buffer, no fresh memory");
            assertEquals(0.0, again.getDouble(3), "zeroed for a gradient");
            Tensor other = buffers.take(500, false);
            assertNotSame(a, other, "another size is another buffer");
            assertEquals(6000, pool.liveBytes(MemoryCategory.BUFFERS));
            buffers.give(again);
            buffers.give(other);
        }
        assertEquals(0, pool.liveBytes(MemoryCategory.BUFFERS), "close frees what was given back");
    }
}
