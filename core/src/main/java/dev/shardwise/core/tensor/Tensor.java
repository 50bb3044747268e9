package dev.shardwise.core.tensor;

import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.memory.MemoryPool;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Arrays;

/**
 * An n-dimensional array in off-heap memory: a {@link MemorySegment}, an element offset, a shape and
 * element strides. Views ({@link #view}, {@link #slice}, {@link #select}, {@link #transpose}) share the
 * memory of the tensor they come from and copy nothing.
 *
 * <p>Ownership: a tensor made by {@link #allocate} owns its memory, which is charged to a
 * {@link MemoryPool}; {@link #close()} frees it (once) and returns the bytes to the pool. Views and
 * tensors made by {@link #wrap} own nothing, and closing them throws {@link IllegalStateException};
 * they must not be used after the owner is closed.
 *
 * <p>Element access ({@link #getDouble}, {@link #set}) is for tests, setup and small work; kernels read the
 * segment directly. Not thread-safe for concurrent writes to the same elements; disjoint writes are fine.
 */
public final class Tensor implements AutoCloseable {
    private final DType dtype;
    private final int[] shape;
    private final long[] strides;     // in elements
    private final long offset;        // in elements, from the start of segment
    private final MemorySegment segment;
    private final MemoryPool.Allocation allocation;  // null unless this tensor owns its memory

    private Tensor(DType dtype, int[] shape, long[] strides, long offset, MemorySegment segment,
                   MemoryPool.Allocation allocation) {
        this.dtype = dtype;
        this.shape = shape;
        this.strides = strides;
        this.offset = offset;
        this.segment = segment;
        this.allocation = allocation;
    }

    /**
     * Allocates a zero-filled, contiguous (row-major) tensor charged to {@code pool} under {@code category}.
     *
     * @throws dev.shardwise.core.memory.MemoryBudgetExceededException if the pool's budget would be exceeded
     * @throws IllegalArgumentException if a dimension is negative
     */
    public static Tensor allocate(MemoryPool pool, MemoryCategory category, DType dtype, int... shape) {
        int[] s = checkShape(shape);
        long bytes = count(s) * dtype.byteSize();
        MemoryPool.Allocation allocation = pool.allocate(category, bytes);
        return new Tensor(dtype, s, contiguousStrides(s), 0, allocation.segment(), allocation);
    }

    /**
     * A contiguous tensor over memory the caller owns (not charged to any pool).
     *
     * @throws IllegalArgumentException if the segment is smaller than the shape needs
     */
    public static Tensor wrap(MemorySegment segment, DType dtype, int... shape) {
        int[] s = checkShape(shape);
        long bytes = count(s) * dtype.byteSize();
        if (segment.byteSize() < bytes) {
            throw new IllegalArgumentException("segment of " + segment.byteSize() + " bytes is too small for "
                    + dtype.label() + Arrays.toString(s) + " (" + bytes + " bytes)");
        }
        return new Tensor(dtype, s, contiguousStrides(s), 0, segment, null);
    }

    public DType dtype() { return dtype; }
    /** Number of dimensions. */
    public int rank() { return shape.length; }
    /** A copy of the shape. */
    public int[] shape() { return shape.clone(); }
    /** Size of dimension {@code d}; negative {@code d} counts from the end. */
    public int dim(int d) { return shape[axis(d)]; }
    /** Stride of dimension {@code d} in elements; negative {@code d} counts from the end. */
    public long stride(int d) { return strides[axis(d)]; }
    /** Offset of element [0, ..., 0] from the start of {@link #segment()}, in elements. */
    public long offset() { return offset; }
    /** Offset of element [0, ..., 0] in bytes. */
    public long byteOffset() { return offset * dtype.byteSize(); }
    /** The whole underlying segment (also memory outside this view). */
    public MemorySegment segment() { return segment; }
    /** Number of elements. */
    public long numel() { return count(shape); }
    /** Whether this tensor owns (and must close) its memory. */
    public boolean ownsMemory() { return allocation != null; }

    /** True if elements are laid out row-major without gaps. */
    public boolean isContiguous() {
        long expected = 1;
        for (int d = shape.length - 1; d >= 0; d--) {
            if (shape[d] != 1 && strides[d] != expected) return false;
            expected *= shape[d];
        }
        return true;
    }

    /** True if the last dimension is unit-stride (rows may be padded: a leading dimension). */
    public boolean hasUnitInnerStride() {
        return shape.length == 0 || shape[shape.length - 1] <= 1 || strides[shape.length - 1] == 1;
    }

    /**
     * The same elements with another shape; one dimension may be -1 (inferred). Needs a contiguous tensor.
     *
     * @throws IllegalArgumentException if element counts differ or the tensor is not contiguous
     */
    public Tensor view(int... newShape) {
        int[] s = newShape.clone();
        int inferred = -1;
        long known = 1;
        for (int d = 0; d < s.length; d++) {
            if (s[d] == -1) {
                if (inferred >= 0) throw new IllegalArgumentException("view: only one dimension may be -1");
                inferred = d;
            } else {
                known *= s[d];
            }
        }
        if (inferred >= 0) {
            if (known == 0 || numel() % known != 0) {
                throw new IllegalArgumentException("view: cannot infer -1 in " + Arrays.toString(newShape)
                        + " from " + describe());
            }
            s[inferred] = (int) (numel() / known);
        }
        checkShape(s);
        if (count(s) != numel()) {
            throw new IllegalArgumentException("view: " + Arrays.toString(newShape) + " has " + count(s)
                    + " elements but " + describe() + " has " + numel());
        }
        if (!isContiguous()) throw new IllegalArgumentException("view: " + describe() + " is not contiguous; copy it first");
        return new Tensor(dtype, s, contiguousStrides(s), offset, segment, null);
    }

    /** Elements {@code start .. start+length-1} along dimension {@code d}. */
    public Tensor slice(int d, int start, int length) {
        int a = axis(d);
        if (start < 0 || length < 0 || start + length > shape[a]) {
            throw new IndexOutOfBoundsException("slice: [" + start + ", " + (start + length) + ") is outside dimension "
                    + a + " of " + describe());
        }
        int[] s = shape.clone();
        s[a] = length;
        return new Tensor(dtype, s, strides.clone(), offset + start * strides[a], segment, null);
    }

    /** The sub-tensor at {@code index} of dimension {@code d}, which is dropped. */
    public Tensor select(int d, int index) {
        int a = axis(d);
        if (index < 0 || index >= shape[a]) {
            throw new IndexOutOfBoundsException("select: index " + index + " is outside dimension " + a + " of " + describe());
        }
        int[] s = new int[shape.length - 1];
        long[] st = new long[shape.length - 1];
        for (int i = 0, j = 0; i < shape.length; i++) {
            if (i == a) continue;
            s[j] = shape[i];
            st[j++] = strides[i];
        }
        return new Tensor(dtype, s, st, offset + index * strides[a], segment, null);
    }

    /** Swaps dimensions {@code d0} and {@code d1} (a strided view, no copy). */
    public Tensor transpose(int d0, int d1) {
        int a = axis(d0), b = axis(d1);
        int[] s = shape.clone();
        long[] st = strides.clone();
        s[a] = shape[b]; s[b] = shape[a];
        st[a] = strides[b]; st[b] = strides[a];
        return new Tensor(dtype, s, st, offset, segment, null);
    }

    /** Element at {@code index} as a double (any dtype). */
    public double getDouble(int... index) {
        return read(elementOffset(index));
    }

    /** Element at {@code index} as a float (any dtype). */
    public float getFloat(int... index) {
        return (float) read(elementOffset(index));
    }

    /** Stores {@code value} at {@code index}, rounding to this dtype. */
    public void set(double value, int... index) {
        write(elementOffset(index), value);
    }

    /** All elements in row-major order as doubles. */
    public double[] toDoubleArray() {
        double[] out = new double[Math.toIntExact(numel())];
        if (isContiguous() && dtype == DType.F32) {   // the common case without the per-element index walk
            long at = byteOffset();
            for (int i = 0; i < out.length; i++) out[i] = segment.get(ValueLayout.JAVA_FLOAT, at + 4L * i);
            return out;
        }
        if (isContiguous() && dtype == DType.F64) {
            MemorySegment.copy(segment, ValueLayout.JAVA_DOUBLE, byteOffset(), out, 0, out.length);
            return out;
        }
        int[] index = new int[shape.length];
        for (int i = 0; i < out.length; i++) {
            out[i] = read(elementOffset(index));
            increment(index);
        }
        return out;
    }

    /** All elements in row-major order as floats. */
    public float[] toFloatArray() {
        double[] d = toDoubleArray();
        float[] out = new float[d.length];
        for (int i = 0; i < d.length; i++) out[i] = (float) d[i];
        return out;
    }

    /** Copies {@code values} (row-major) into this tensor, rounding to its dtype. */
    public Tensor copyFrom(double[] values) {
        checkLength(values.length);
        if (isContiguous() && dtype == DType.F32) {   // the common case without the per-element index walk
            long at = byteOffset();
            for (int i = 0; i < values.length; i++) segment.set(ValueLayout.JAVA_FLOAT, at + 4L * i, (float) values[i]);
            return this;
        }
        if (isContiguous() && dtype == DType.F64) {
            MemorySegment.copy(values, 0, segment, ValueLayout.JAVA_DOUBLE, byteOffset(), values.length);
            return this;
        }
        int[] index = new int[shape.length];
        for (double v : values) {
            write(elementOffset(index), v);
            increment(index);
        }
        return this;
    }

    /** Copies {@code values} (row-major) into this tensor, rounding to its dtype. */
    public Tensor copyFrom(float[] values) {
        checkLength(values.length);
        int[] index = new int[shape.length];
        for (float v : values) {
            write(elementOffset(index), v);
            increment(index);
        }
        return this;
    }

    /** Sets every element to {@code value}. */
    public Tensor fill(double value) {
        int[] index = new int[shape.length];
        for (long i = 0, n = numel(); i < n; i++) {
            write(elementOffset(index), value);
            increment(index);
        }
        return this;
    }

    /** e.g. {@code f32[4, 768]}. */
    public String describe() {
        return dtype.label() + Arrays.toString(shape);
    }

    @Override
    public String toString() {
        return "Tensor " + describe();
    }

    /**
     * Frees the memory of a tensor that owns it.
     *
     * @throws IllegalStateException if this tensor is a view or wraps caller-owned memory, or was closed
     */
    @Override
    public void close() {
        if (allocation == null) {
            throw new IllegalStateException("close: " + describe() + " is a view and owns no memory; close its owner");
        }
        allocation.close();
    }

    // ---- helpers ----

    private int axis(int d) {
        int a = d < 0 ? d + shape.length : d;
        if (a < 0 || a >= shape.length) {
            throw new IndexOutOfBoundsException("dimension " + d + " does not exist in " + describe());
        }
        return a;
    }

    private long elementOffset(int[] index) {
        if (index.length != shape.length) {
            throw new IllegalArgumentException("index " + Arrays.toString(index) + " has " + index.length
                    + " coordinates but " + describe() + " has " + shape.length);
        }
        long off = offset;
        for (int d = 0; d < index.length; d++) {
            if (index[d] < 0 || index[d] >= shape[d]) {
                throw new IndexOutOfBoundsException("index " + Arrays.toString(index) + " is outside " + describe());
            }
            off += index[d] * strides[d];
        }
        return off;
    }

    private void increment(int[] index) {
        for (int d = index.length - 1; d >= 0; d--) {
            if (++index[d] < shape[d]) return;
            index[d] = 0;
        }
    }

    private double read(long element) {
        long at = element * dtype.byteSize();
        return switch (dtype) {
            case F32 -> segment.get(ValueLayout.JAVA_FLOAT, at);
            case F64 -> segment.get(ValueLayout.JAVA_DOUBLE, at);
            case BF16 -> BFloat16.toFloat(segment.get(ValueLayout.JAVA_SHORT, at));
            case I32 -> segment.get(ValueLayout.JAVA_INT, at);
        };
    }

    private void write(long element, double value) {
        long at = element * dtype.byteSize();
        switch (dtype) {
            case F32 -> segment.set(ValueLayout.JAVA_FLOAT, at, (float) value);
            case F64 -> segment.set(ValueLayout.JAVA_DOUBLE, at, value);
            case BF16 -> segment.set(ValueLayout.JAVA_SHORT, at, BFloat16.fromFloat((float) value));
            case I32 -> {
                if (value != Math.rint(value) || value < Integer.MIN_VALUE || value > Integer.MAX_VALUE) {
                    throw new IllegalArgumentException(value + " is not an i32 value");
                }
                segment.set(ValueLayout.JAVA_INT, at, (int) value);
            }
        }
    }

    private void checkLength(int length) {
        if (length != numel()) {
            throw new IllegalArgumentException("copyFrom: " + length + " values for " + describe() + " (" + numel() + " elements)");
        }
    }

    private static int[] checkShape(int[] shape) {
        for (int s : shape) {
            if (s < 0) throw new IllegalArgumentException("negative dimension in shape " + Arrays.toString(shape));
        }
        return shape.clone();
    }

    private static long count(int[] shape) {
        long n = 1;
        for (int s : shape) n *= s;
        return n;
    }

    private static long[] contiguousStrides(int[] shape) {
        long[] strides = new long[shape.length];
        long stride = 1;
        for (int d = shape.length - 1; d >= 0; d--) {
            strides[d] = stride;
            stride *= shape[d];
        }
        return strides;
    }
}
