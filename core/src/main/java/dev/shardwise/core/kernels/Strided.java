package dev.shardwise.core.kernels;

import dev.shardwise.core.tensor.Tensor;

import java.lang.foreign.MemorySegment;

/**
 * Addressing of a rank-3 or rank-4 tensor whose last dimension is unit-stride: the byte offset of the row
 * {@code [i0, i1, i2, :]} (rank 4) or the element {@code [i0, i1, i2]} (rank 3). Precondition (checked by the
 * public kernel classes): the tensor's last stride is 1 or its last dimension has size 1.
 */
record Strided(MemorySegment segment, long offset, long s0, long s1, long s2, long elementBytes) {

    static Strided of(Tensor x) {
        return new Strided(x.segment(), x.offset(), x.stride(0), x.stride(1), x.stride(2), x.dtype().byteSize());
    }

    /** Byte offset of row {@code [i0, i1, i2, 0]} of a rank-4 tensor, or of element {@code [i0, i1, i2]}. */
    long at(int i0, int i1, int i2) {
        return (offset + i0 * s0 + i1 * s1 + i2 * s2) * elementBytes;
    }
}
