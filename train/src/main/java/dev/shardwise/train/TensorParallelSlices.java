package dev.shardwise.train;

import dev.shardwise.comm.Communicator;
import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.tensor.Tensor;
import dev.shardwise.model.Parameter;
import dev.shardwise.model.ParameterSet;

import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.function.IntFunction;

/**
 * Undoes tensor parallelism's split (Shoeybi et al. 2019) for a layout-independent checkpoint: on saving, the tp
 * ranks of a pipeline stage send their flat parameter values and AdamW moments to tp rank 0, which puts each
 * parameter's {@link ParameterSet.Slice} back into its global tensor (a padded vocabulary's padding rows dropped);
 * on loading, each rank reads the global tensors and takes its own slice (padding rows zero). Parameters every tp
 * rank holds whole (norms, row-parallel biases, wpe) are taken from tp rank 0.
 *
 * <p>This is the one place the checkpoint gathers tp slices; a format that stores each rank's slices as they are
 * (keyed by global name and slice) replaces it. Memory on tp rank 0 while saving: the stage's global values and
 * moments (3·4Ψ_stage bytes) plus one other rank's flat buffers at a time, as BUFFERS.
 */
final class TensorParallelSlices {
    /** No tensor parallelism: every parameter is whole, nothing to gather. */
    static final TensorParallelSlices NONE = new TensorParallelSlices(null, null, null);

    private static final int TAG = 32_000;

    private final Communicator tensor;                  // null for NONE
    private final IntFunction<ParameterSet> layoutOf;   // tp rank -> that rank's flat layout (no memory)
    private final ParameterSet global;                  // the stage's global flat layout (no memory), padding 1

    /**
     * @param tensor   the rank's tensor-parallel group (rank = tpRank)
     * @param layoutOf the flat layout (names, slices, offsets; no memory) of any tp rank of this stage
     * @param global   the stage's parameters as the single-rank model declares them, a flat layout without memory
     */
    TensorParallelSlices(Communicator tensor, IntFunction<ParameterSet> layoutOf, ParameterSet global) {
        this.tensor = tensor;
        this.layoutOf = layoutOf;
        this.global = global;
    }

    /** Whether the stage is split over more than one tp rank. */
    boolean active() {
        return tensor != null;
    }

    /** The stage's global flat layout, which {@link #gather}'s tensors follow. */
    ParameterSet globalLayout() {
        return global;
    }

    /**
     * Collective over the tp group: every rank passes its flat tensors ({@code flat[k]} [P'] laid out as
     * {@code local}); tp rank 0 gets the same tensors whole, flat in {@link #globalLayout}, as new BUFFERS the caller
     * closes; the other ranks get null.
     */
    Tensor[] gather(ParameterSet local, Tensor[] flat, MemoryPool pool) {
        if (tensor.rank() != 0) {
            for (int k = 0; k < flat.length; k++) tensor.send(flat[k], 0, TAG + k);
            return null;
        }
        int size = Math.toIntExact(global.paddedCount());
        Tensor[] whole = new Tensor[flat.length];
        try {
            for (int k = 0; k < flat.length; k++) whole[k] = Tensor.allocate(pool, MemoryCategory.BUFFERS, flat[k].dtype(), size);
            place(local, flat, whole, true);
            for (int r = 1; r < tensor.size(); r++) {
                try (ParameterSet theirs = layoutOf.apply(r)) {
                    Tensor[] received = new Tensor[flat.length];
                    try {
                        for (int k = 0; k < flat.length; k++) {
                            received[k] = Tensor.allocate(pool, MemoryCategory.BUFFERS, flat[k].dtype(),
                                    Math.toIntExact(theirs.paddedCount()));
                            tensor.receive(received[k], r, TAG + k);
                        }
                        place(theirs, received, whole, false);
                    } finally {
                        for (Tensor t : received) if (t != null) t.close();
                    }
                }
            }
            return whole;
        } catch (RuntimeException e) {
            for (Tensor t : whole) if (t != null) t.close();
            throw e;
        }
    }

    /** Copies {@code layout}'s sliced parameters (and, with {@code replicated}, its whole ones) from {@code flat} into {@code whole}. */
    private void place(ParameterSet layout, Tensor[] flat, Tensor[] whole, boolean replicated) {
        for (Parameter p : layout.parameters()) {
            if (p.slice() == null && !replicated) continue;
            Parameter g = global.get(p.name());
            for (int k = 0; k < flat.length; k++) {
                Tensor from = region(flat[k], layout, p), to = region(whole[k], global, g);
                if (p.slice() == null) {
                    MemorySegment.copy(from.segment(), from.byteOffset(), to.segment(), to.byteOffset(),
                            from.numel() * from.dtype().byteSize());
                } else {
                    copy(p.slice(), from, to, true);
                }
            }
        }
    }

    /**
     * Fills {@code wanted} (checkpoint name -> a rank's local tensor, named {@code kind/parameter}) from checkpoint
     * {@code dir}: whole parameters directly, sliced ones through a global-shaped buffer, one tensor at a time, whose
     * slice is taken (padding rows set to zero).
     *
     * @throws IOException naming the tensor that is missing, mismatched or damaged
     */
    void read(Path dir, ParameterSet local, Map<String, Tensor> wanted, MemoryPool pool) throws IOException {
        Map<String, Tensor> whole = new LinkedHashMap<>();
        Map<String, Tensor> sliced = new LinkedHashMap<>();
        for (Map.Entry<String, Tensor> e : wanted.entrySet()) {
            Parameter p = local.get(e.getKey().substring(e.getKey().indexOf('/') + 1));
            (p.slice() == null ? whole : sliced).put(e.getKey(), e.getValue());
        }
        Checkpoint.read(dir, whole);
        for (Map.Entry<String, Tensor> e : sliced.entrySet()) {
            Tensor mine = e.getValue();
            ParameterSet.Slice slice = local.get(e.getKey().substring(e.getKey().indexOf('/') + 1)).slice();
            try (Tensor buffer = Tensor.allocate(pool, MemoryCategory.BUFFERS, mine.dtype(), slice.globalShape())) {
                Checkpoint.read(dir, Map.of(e.getKey(), buffer));
                copy(slice, mine, buffer, false);
            }
        }
    }

    /** Parameter {@code p}'s elements in a flat tensor laid out as {@code layout}. */
    private static Tensor region(Tensor flat, ParameterSet layout, Parameter p) {
        return flat.slice(0, Math.toIntExact(layout.offsetOf(p)), Math.toIntExact(p.numel()));
    }

    /**
     * Between a rank's local tensor and the global one (both contiguous, row-major): with {@code toGlobal} the
     * slice's pieces go into their places in {@code global} (padding rows skipped); else they are taken from it
     * and the padding rows of {@code local} are zeroed.
     */
    static void copy(ParameterSet.Slice slice, Tensor local, Tensor global, boolean toGlobal) {
        int[] shape = slice.globalShape();
        int dim = slice.dim();
        long inner = 1, outer = 1;
        for (int d = dim + 1; d < shape.length; d++) inner *= shape[d];
        for (int d = 0; d < dim; d++) outer *= shape[d];
        long bytes = local.dtype().byteSize();
        long at = 0;   // elements into local
        for (long o = 0; o < outer; o++) {
            for (int i = 0; i < slice.starts().length; i++) {
                long n = slice.lengths()[i] * inner, g = (o * shape[dim] + slice.starts()[i]) * inner;
                if (toGlobal) {
                    MemorySegment.copy(local.segment(), local.byteOffset() + at * bytes, global.segment(),
                            global.byteOffset() + g * bytes, n * bytes);
                } else {
                    MemorySegment.copy(global.segment(), global.byteOffset() + g * bytes, local.segment(),
                            local.byteOffset() + at * bytes, n * bytes);
                }
                at += n;
            }
            long padding = slice.paddingRows() * inner;
            if (!toGlobal && padding > 0) local.segment().asSlice(local.byteOffset() + at * bytes, padding * bytes).fill((byte) 0);
            at += padding;
        }
        if (at != local.numel()) {
            throw new IllegalStateException("slice " + slice + " covers " + at + " elements but the local tensor has " + local.numel());
        }
    }
}
