package dev.shardwise.core.memory;

import dev.shardwise.core.exec.ComputePool;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;

import java.lang.foreign.MemorySegment;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

/**
 * The activations of forward/backward passes: tensors charged to a rank's {@link MemoryPool} (as
 * {@link MemoryCategory#ACTIVATIONS} unless another category is named) that live until {@link #reset()}.
 * A reset keeps the memory and hands it out again to the next pass's requests of the same size, so a
 * training loop that repeats the same pass touches fresh pages only once (first-touch page faults and the
 * allocator's zeroing cost more than the layers' elementwise work). {@link #allocate} zeroes a reused block
 * (for kernels that accumulate into their output); {@link #allocateForOverwrite} does not, for outputs a
 * kernel writes in full (a GEMM with beta 0, an elementwise map, a norm): the zeroing of a training step's
 * activations, some 350 MB on GPT-2-small-like shapes, is memory traffic nothing reads. {@link #close()} frees
 * everything.
 *
 * <p>A {@link Scope} ends the life of the tensors handed out inside it early. Activations requested inside a scope
 * are carved from a stack (a bump allocator over chunks charged to the pool as ACTIVATIONS, rewound when the scope
 * closes), so temporaries of any sizes share memory: a backward that opens a scope per block holds the deepest
 * block's temporaries, not every block's. The first pass may leave the stack in several chunks; the next
 * {@link #reset()} replaces them by one chunk of the stack's high-water mark, which later passes of the same shapes
 * fill exactly. Other categories requested inside a scope go back to the arena's free blocks when it closes.
 *
 * <p>{@link #allocateRows} and {@link #allocateRowsForOverwrite} serve [rows, cols] activations whose row count changes
 * from pass to pass (the tokens expert parallelism routes to a rank): a request takes the free block of that width with
 * the fewest rows that hold it (its first rows) if it has at most 1.25x the rows asked for, so a pass of a few rows
 * fewer reuses a block instead of adding one. Otherwise free blocks of that width are closed (those too small, fewest rows
 * first, then those too large, most rows first) until as many bytes are closed as the new block takes or none are
 * left, and a reset closes the blocks a whole pass left unused: what the arena holds of such blocks follows what the
 * passes use, within the larger of two consecutive passes' blocks, however the counts wander, instead of growing by a
 * block for every count seen. Callers round the counts up to a few sizes (a new block is fresh memory to touch).
 *
 * <p>Tensors from {@link #allocate} are views: do not close them. Not thread-safe: one arena belongs to one
 * rank's training thread.
 */
public final class StepArena implements AutoCloseable {
    private record Key(MemoryCategory category, DType dtype, long numel) { }

    /** A width of {@link #allocateRows} blocks: [rows, cols] activations of one dtype. */
    private record RowsKey(DType dtype, int cols) { }

    /** Bytes one task zeroes when a block is reused. */
    private static final long ZERO_PIECE_BYTES = 1 << 20;

    private final MemoryPool pool;
    private final List<Tensor> owned = new ArrayList<>();                 // every block this arena holds
    private final List<Map.Entry<Key, Tensor>> inUse = new ArrayList<>();
    private final Map<Key, ArrayDeque<Tensor>> free = new HashMap<>();
    private final Map<RowsKey, TreeMap<Integer, ArrayDeque<Tensor>>> freeRows = new HashMap<>();   // by width, then block rows
    private final List<Map.Entry<RowsKey, Tensor>> rowsInUse = new ArrayList<>();   // row blocks handed out since the last reset
    private final ArrayDeque<Scope> scopes = new ArrayDeque<>();           // open scopes, innermost first
    private final List<Tensor> chunks = new ArrayList<>();                // the scope stack's memory, F32-typed bytes
    private int chunk;                                                     // the chunk the stack's top is in
    private long top;                                                      // the top's byte offset in that chunk
    private long depth;                                                    // bytes on the stack, as one chunk holds them
    private long highWater;                                                // the most depth reached

    public StepArena(MemoryPool pool) {
        this.pool = pool;
    }

    public MemoryPool pool() { return pool; }

    /** A zeroed activation tensor that lives until {@link #reset()} or {@link #close()}. */
    public Tensor allocate(DType dtype, int... shape) {
        return allocate(MemoryCategory.ACTIVATIONS, dtype, shape);
    }

    /** A zeroed tensor charged to {@code category} that lives until {@link #reset()} or {@link #close()}. */
    public Tensor allocate(MemoryCategory category, DType dtype, int... shape) {
        return take(category, dtype, shape, true);
    }

    /**
     * An activation tensor whose contents are unspecified (whatever an earlier pass left there, or zeros), for a
     * caller that writes every element before reading any; lives until {@link #reset()} or {@link #close()}.
     */
    public Tensor allocateForOverwrite(DType dtype, int... shape) {
        return take(MemoryCategory.ACTIVATIONS, dtype, shape, false);
    }

    /**
     * A zeroed activation tensor [rows, cols] for a row count that changes from pass to pass: its block is the free one
     * of this width with the fewest rows &gt;= {@code rows} if it has at most 1.25x as many, or a new one of {@code rows}
     * rows (see the class comment);
     * lives until {@link #reset()} or {@link #close()}. Inside a {@link Scope} it is carved from the scope stack as
     * {@link #allocate} does.
     *
     * @throws IllegalArgumentException if rows or cols is not positive
     */
    public Tensor allocateRows(DType dtype, int rows, int cols) {
        return takeRows(dtype, rows, cols, true);
    }

    /** As {@link #allocateRows}, its contents unspecified, for a caller that writes every element before reading any. */
    public Tensor allocateRowsForOverwrite(DType dtype, int rows, int cols) {
        return takeRows(dtype, rows, cols, false);
    }

    private Tensor takeRows(DType dtype, int rows, int cols, boolean zeroed) {
        if (rows < 1 || cols < 1) throw new IllegalArgumentException("allocateRows needs rows and cols >= 1, got [" + rows + ", " + cols + "]");
        if (!scopes.isEmpty()) return carve(dtype, new int[] {rows, cols}, (long) rows * cols, zeroed);
        RowsKey key = new RowsKey(dtype, cols);
        TreeMap<Integer, ArrayDeque<Tensor>> free = freeRows.computeIfAbsent(key, k -> new TreeMap<>());
        Map.Entry<Integer, ArrayDeque<Tensor>> fit = free.ceilingEntry(rows);
        Tensor block;
        if (fit != null && fit.getKey() <= rows + rows / 4) {
            block = fit.getValue().pop();
            if (fit.getValue().isEmpty()) free.remove(fit.getKey());
        } else {
            // no free block holds the rows within 1.25x: close free blocks of this width, first those
            // too small, fewest rows first, then those too large, most rows first, until the new block's bytes are made up
            long toClose = (long) rows * cols;
            while (toClose > 0 && !free.isEmpty()) {
                Map.Entry<Integer, ArrayDeque<Tensor>> victim = free.firstKey() < rows ? free.firstEntry() : free.lastEntry();
                victim.getValue().pop().close();
                toClose -= (long) victim.getKey() * cols;
                if (victim.getValue().isEmpty()) free.remove(victim.getKey());
            }
            block = Tensor.allocate(pool, MemoryCategory.ACTIVATIONS, dtype, rows, cols);
        }
        rowsInUse.add(Map.entry(key, block));
        Tensor view = block.slice(0, 0, rows);
        if (zeroed) zero(view.segment().asSlice(view.byteOffset(), (long) rows * cols * dtype.byteSize()));
        return view;
    }

    private Tensor take(MemoryCategory category, DType dtype, int[] shape, boolean zeroed) {
        long numel = 1;
        for (int s : shape) numel *= s;
        if (!scopes.isEmpty() && category == MemoryCategory.ACTIVATIONS) return carve(dtype, shape, numel, zeroed);
        Key key = new Key(category, dtype, numel);
        ArrayDeque<Tensor> reusable = free.get(key);
        Tensor block;
        if (reusable != null && !reusable.isEmpty()) {
            block = reusable.pop();
            if (zeroed) zero(block.segment().asSlice(block.byteOffset(), numel * dtype.byteSize()));
        } else {
            block = Tensor.allocate(pool, category, dtype, Math.toIntExact(numel));
            owned.add(block);
        }
        inUse.add(Map.entry(key, block));
        return block.view(shape);
    }

    /** A tensor from the scope stack: the next aligned bytes of the current chunk, or of a later or new chunk. */
    private Tensor carve(DType dtype, int[] shape, long numel, boolean zeroed) {
        long bytes = aligned(numel * dtype.byteSize());
        while (chunk < chunks.size() && top + bytes > chunks.get(chunk).numel() * 4) {
            chunk++;
            top = 0;
        }
        if (chunk == chunks.size()) chunks.add(Tensor.allocate(pool, MemoryCategory.ACTIVATIONS, DType.F32, Math.toIntExact(bytes / 4)));
        MemorySegment memory = chunks.get(chunk).segment().asSlice(top, numel * dtype.byteSize());
        if (zeroed) zero(memory);
        top += bytes;
        depth += bytes;
        highWater = Math.max(highWater, depth);
        return Tensor.wrap(memory, dtype, shape);
    }

    /** {@code bytes} rounded up to the pool's alignment (64 bytes: every carved tensor starts on a cache line). */
    private static long aligned(long bytes) {
        return Math.max(MemoryPool.ALIGNMENT, (bytes + MemoryPool.ALIGNMENT - 1) / MemoryPool.ALIGNMENT * MemoryPool.ALIGNMENT);
    }

    /** Zeroes {@code segment} on the current compute pool's threads, in 1 MiB pieces. */
    private static void zero(MemorySegment segment) {
        long size = segment.byteSize();
        int pieces = (int) ((size + ZERO_PIECE_BYTES - 1) / ZERO_PIECE_BYTES);
        ComputePool.current().parallelFor(pieces, i -> {
            long start = i * ZERO_PIECE_BYTES;
            segment.asSlice(start, Math.min(ZERO_PIECE_BYTES, size - start)).fill((byte) 0);
        });
    }

    /**
     * Opens a scope: the tensors handed out from now until it closes become invalid when it does (their memory is
     * kept for the arena's next requests); those handed out before stay valid. Scopes nest and close innermost first.
     */
    public Scope scope() {
        Scope scope = new Scope(inUse.size(), chunk, top, depth);
        scopes.push(scope);
        return scope;
    }

    /** A nested lifetime inside the arena ({@link #scope()}); closing it twice does nothing. */
    public final class Scope implements AutoCloseable {
        private final int mark;   // tensors inUse[mark..] were handed out inside it
        private final int chunk;  // the stack's top when it opened
        private final long top, depth;
        private boolean open = true;

        private Scope(int mark, int chunk, long top, long depth) {
            this.mark = mark;
            this.chunk = chunk;
            this.top = top;
            this.depth = depth;
        }

        /**
         * Returns the tensors handed out inside this scope to the arena's free blocks.
         *
         * @throws IllegalStateException if a scope opened inside this one is still open
         */
        @Override
        public void close() {
            if (!open) return;
            if (scopes.peek() != this) {
                throw new IllegalStateException("a step-arena scope opened inside this one is still open: close scopes innermost first");
            }
            scopes.pop();
            open = false;
            for (int i = inUse.size() - 1; i >= mark; i--) release(inUse.remove(i));
            StepArena.this.chunk = chunk;
            StepArena.this.top = top;
            StepArena.this.depth = depth;
        }
    }

    private void release(Map.Entry<Key, Tensor> entry) {
        free.computeIfAbsent(entry.getKey(), k -> new ArrayDeque<>()).push(entry.getValue());
    }

    /**
     * Ends a pass: every tensor handed out becomes invalid and its memory is kept for the next pass, except the
     * {@linkplain #allocateRows row blocks} this pass left unused, which are closed.
     *
     * @throws IllegalStateException if a {@link Scope} is still open
     */
    public void reset() {
        if (!scopes.isEmpty()) throw new IllegalStateException("step arena reset inside an open scope: close the scope first");
        for (Map.Entry<Key, Tensor> e : inUse) release(e);
        inUse.clear();
        // row blocks still free were left unused by the whole pass: close them; the pass's own become the free ones
        for (TreeMap<Integer, ArrayDeque<Tensor>> free : freeRows.values()) {
            for (ArrayDeque<Tensor> blocks : free.values()) for (Tensor b : blocks) b.close();
            free.clear();
        }
        for (Map.Entry<RowsKey, Tensor> e : rowsInUse) {
            freeRows.get(e.getKey()).computeIfAbsent(e.getValue().dim(0), r -> new ArrayDeque<>()).push(e.getValue());
        }
        rowsInUse.clear();
        if (chunks.size() > 1) {   // one chunk of the high-water mark from now on
            for (Tensor c : chunks) c.close();
            chunks.clear();
            chunks.add(Tensor.allocate(pool, MemoryCategory.ACTIVATIONS, DType.F32, Math.toIntExact(highWater / 4)));
        }
    }

    /** Frees every block this arena holds. */
    @Override
    public void close() {
        for (int i = owned.size() - 1; i >= 0; i--) owned.get(i).close();
        owned.clear();
        for (Map.Entry<RowsKey, Tensor> e : rowsInUse) e.getValue().close();
        rowsInUse.clear();
        for (TreeMap<Integer, ArrayDeque<Tensor>> free : freeRows.values()) {
            for (ArrayDeque<Tensor> blocks : free.values()) for (Tensor b : blocks) b.close();
        }
        freeRows.clear();
        inUse.clear();
        free.clear();
        scopes.clear();
        for (Tensor c : chunks) c.close();
        chunks.clear();
        chunk = 0;
        top = depth = highWater = 0;
    }
}
