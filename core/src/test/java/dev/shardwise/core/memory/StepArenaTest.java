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

    @Test
    void aClosedScopeHandsItsTensorsToTheNextRequestsAndKeepsTheOnesBeforeIt() {
        MemoryPool pool = MemoryPool.unlimited("rank 0");
        try (StepArena arena = new StepArena(pool)) {
            Tensor before = arena.allocate(DType.F32, 8);
            long inside;
            try (StepArena.Scope scope = arena.scope()) {
                inside = address(arena.allocate(DType.F32, 8));
                arena.allocate(DType.F32, 4);
            }
            long live = pool.liveBytes();
            for (int round = 0; round < 3; round++) {
                try (StepArena.Scope scope = arena.scope()) {
                    Tensor again = arena.allocateForOverwrite(DType.F32, 2, 4);
                    assertEquals(inside, address(again), "round " + round + ": the scope's block is reused");
                    assertNotEquals(address(before), address(again), "round " + round + ": the tensor from before the scope stays in use");
                    arena.allocate(DType.F32, 4);
                }
            }
            assertEquals(live, pool.liveBytes(), "scoped temporaries of repeated rounds take no more memory than one round's");
            arena.reset();
            assertEquals(live, pool.liveBytes(), "a reset keeps the memory");
        }
        assertEquals(0, pool.liveBytes(), "close frees every block");
    }

    @Test
    void scopesOfDifferentShapesShareTheStackAndALaterPassFitsOneChunkOfItsHighWaterMark() {
        MemoryPool pool = MemoryPool.unlimited("rank 0");
        try (StepArena arena = new StepArena(pool)) {
            for (int pass = 0; pass < 3; pass++) {
                long before = pool.liveBytes();
                try (StepArena.Scope block = arena.scope()) {
                    arena.allocate(DType.F32, 16, 4);                       // 256 bytes, e.g. a branch's input gradient
                    try (StepArena.Scope mlp = arena.scope()) {
                        Tensor wide = arena.allocate(DType.F32, 16, 16);    // 1024 bytes
                        wide.fill(3);
                    }
                    try (StepArena.Scope attention = arena.scope()) {
                        Tensor a = arena.allocate(DType.F32, 16, 4), b = arena.allocate(DType.BF16, 16, 24);   // 256 + 768
                        for (int i = 0; i < 64; i++) assertEquals(0.0, a.getDouble(i / 4, i % 4), "pass " + pass + ": allocate zeroes carved memory");
                        assertEquals(0.0, b.getDouble(15, 23), "pass " + pass);
                    }
                }
                long stack = pool.liveBytes() - before;
                // pass 0 grows the stack in chunks (256, then 1024; the attention scope fits the 1024 one); a reset
                // makes it one chunk of the 1280-byte high-water mark, which every later pass fills exactly
                assertEquals(pass == 0 ? 1280 : 0, stack, "pass " + pass + ": new stack memory");
                arena.reset();
                assertEquals(1280, pool.liveBytes(), "pass " + pass + ": the stack after a reset is one chunk of its high-water mark");
            }
        }
        assertEquals(0, pool.liveBytes(), "close frees the stack");
    }

    @Test
    void scopesCloseInnermostFirstAndNoResetRunsInsideOne() {
        MemoryPool pool = MemoryPool.unlimited("rank 0");
        try (StepArena arena = new StepArena(pool)) {
            StepArena.Scope outer = arena.scope();
            StepArena.Scope inner = arena.scope();
            assertThrows(IllegalStateException.class, outer::close, "outer closed while inner is open");
            assertThrows(IllegalStateException.class, arena::reset, "reset inside an open scope");
            inner.close();
            outer.close();
            outer.close();   // twice: nothing
            arena.reset();
        }
    }

    @Test
    void rowBlocksAreReusedByAFewRowsFewerReplacedOtherwiseAndClosedWhenAPassLeavesThemUnused() {
        MemoryPool pool = MemoryPool.unlimited("rank 0");
        int cols = 4;
        long row = 4L * cols;   // bytes of one f32 row
        try (StepArena arena = new StepArena(pool)) {
            Tensor a = arena.allocateRowsForOverwrite(DType.F32, 10, cols), b = arena.allocateRowsForOverwrite(DType.F32, 12, cols);
            a.fill(5);
            assertArrayEquals(new int[] {10, cols}, a.shape(), "the rows asked for");
            long blockA = address(a), blockB = address(b);
            arena.reset();
            assertEquals(22 * row, pool.liveBytes(), "a reset keeps the blocks the pass used");
            // fewer rows: the block with the fewest rows that holds them
            Tensor c = arena.allocateRowsForOverwrite(DType.F32, 9, cols);
            assertEquals(blockA, address(c), "9 rows take the 10-row block");
            assertEquals(5.0, c.getDouble(8, 3), "allocateRowsForOverwrite leaves the old contents");
            Tensor d = arena.allocateRows(DType.F32, 11, cols);
            assertEquals(blockB, address(d), "11 rows take the 12-row block");
            for (int i = 0; i < 11 * cols; i++) assertEquals(0.0, d.getDouble(i / cols, i % cols), "allocateRows zeroes element " + i);
            assertEquals(22 * row, pool.liveBytes(), "reuse charges nothing more");
            arena.reset();
            // more rows than any block: the smaller free blocks are closed before the new one is charged
            pool.resetPeaks();
            Tensor e = arena.allocateRowsForOverwrite(DType.F32, 14, cols);
            assertEquals(14 * row, pool.liveBytes(), "the 14-row block's bytes were made up by closing the 10- and 12-row blocks");
            assertTrue(pool.peakBytes() <= 22 * row, "closed before charging: peak " + pool.peakBytes() + " > " + 22 * row);
            arena.allocateRowsForOverwrite(DType.F32, 3, 8);   // another width: its own blocks
            arena.reset();
            assertEquals(14 * row + 3 * 8 * 4, pool.liveBytes(), "the pass's blocks are kept");
            assertEquals(address(e), address(arena.allocateRowsForOverwrite(DType.F32, 12, cols)), "12 rows take the 14-row block");
            arena.reset();
            assertEquals(14 * row, pool.liveBytes(), "a reset closes the row blocks its pass left unused (the 3x8 one)");
            // far fewer rows than the only block: it is closed for one of their size rather than a quarter of it wasted
            arena.allocateRowsForOverwrite(DType.F32, 2, cols);
            assertEquals(2 * row, pool.liveBytes(), "2 rows do not hold the 14-row block: it is closed for a 2-row one");
            arena.reset();
            // inside a scope, rows are carved from the stack like any other activation
            long before = pool.liveBytes();
            try (StepArena.Scope scope = arena.scope()) {
                Tensor carved = arena.allocateRows(DType.F32, 20, cols);
                assertEquals(0.0, carved.getDouble(19, 3));
            }
            assertEquals(before + aligned(20 * row), pool.liveBytes(), "the scope's rows went to the stack, not a row block");
            assertThrows(IllegalArgumentException.class, () -> arena.allocateRows(DType.F32, 0, cols));
        }
        assertEquals(0, pool.liveBytes(), "close frees every block");
    }

    private static long aligned(long bytes) {
        return (bytes + MemoryPool.ALIGNMENT - 1) / MemoryPool.ALIGNMENT * MemoryPool.ALIGNMENT;
    }

    private static long address(Tensor t) {
        return t.segment().address() + t.byteOffset();
    }
}
