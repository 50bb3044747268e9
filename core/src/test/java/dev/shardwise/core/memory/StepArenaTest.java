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

    private static long address(Tensor t) {
        return t.segment().address() + t.byteOffset();
    }
}
