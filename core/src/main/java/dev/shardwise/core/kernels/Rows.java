package dev.shardwise.core.kernels;

import dev.shardwise.core.tensor.Tensor;

import java.lang.foreign.MemorySegment;

/**
 * A tensor seen as {@code rows} rows of {@code cols} unit-stride elements, rows {@code rowStride} bytes
 * apart (a padded leading dimension is allowed). Leading dimensions must collapse into one row index.
 *
 * @param segment   the tensor's memory
 * @param base      byte offset of element [0, 0]
 * @param rowStride bytes from one row to the next
 * @param elemSize  bytes per element
 */
record Rows(MemorySegment segment, long base, long rowStride, int rows, int cols, int elemSize) {

    /** Byte offset of element {@code [row, 0]}. */
    long row(long row) {
        return base + row * rowStride;
    }

    /** Whether the rows follow each other without gaps (the whole tensor is one span). */
    boolean dense() {
        return rows <= 1 || rowStride == (long) cols * elemSize;
    }

    /**
     * Views {@code t} as rows of its last dimension.
     *
     * @throws IllegalArgumentException if the last dimension is not unit-stride or the leading dimensions
     *                                  cannot be flattened into one row index
     */
    static Rows of(String op, String arg, Tensor t) {
        int rank = t.rank();
        int cols = rank == 0 ? 1 : t.dim(-1);
        if (!t.hasUnitInnerStride()) {
            throw new IllegalArgumentException(op + ": " + arg + " " + t.describe() + " has inner stride " + t.stride(-1)
                    + "; kernels need a unit-stride last dimension (copy it to a contiguous tensor first)");
        }
        long rows = 1;
        for (int d = 0; d < rank - 1; d++) rows *= t.dim(d);
        long rowStride = rank >= 2 ? t.stride(-2) : cols;
        // leading dimensions must be a single arithmetic sequence of rows
        long expect = rowStride;
        for (int d = rank - 2; d >= 1; d--) {
            expect *= t.dim(d);
            if (t.dim(d - 1) > 1 && t.stride(d - 1) != expect) {
                throw new IllegalArgumentException(op + ": " + arg + " " + t.describe() + " has dimension " + (d - 1)
                        + " with stride " + t.stride(d - 1) + " where " + expect + " was needed to flatten it into rows;"
                        + " pass a tensor whose leading dimensions are contiguous");
            }
        }
        if (rows > 1 && cols > 0 && rowStride < cols) {
            throw new IllegalArgumentException(op + ": " + arg + " " + t.describe() + " has row stride " + rowStride
                    + " smaller than its row length " + cols + " (rows overlap)");
        }
        if (rows > Integer.MAX_VALUE) {
            throw new IllegalArgumentException(op + ": " + arg + " " + t.describe() + " has " + rows + " rows, more than 2^31-1");
        }
        int es = t.dtype().byteSize();
        return new Rows(t.segment(), t.byteOffset(), rowStride * es, (int) rows, cols, es);
    }
}
