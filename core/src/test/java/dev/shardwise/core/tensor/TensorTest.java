package dev.shardwise.core.tensor;

import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.memory.MemoryPool;
import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.*;

class TensorTest {
    private final MemoryPool pool = MemoryPool.unlimited("rank 0");

    @Test
    void allocationIsChargedAndFreedByCategory() {
        Tensor t = Tensor.allocate(pool, MemoryCategory.ACTIVATIONS, DType.F32, 3, 7);
        assertEquals(3 * 7 * 4, pool.liveBytes(MemoryCategory.ACTIVATIONS));
        Tensor b = Tensor.allocate(pool, MemoryCategory.PARAMETERS, DType.BF16, 33);
        assertEquals(66, pool.liveBytes(MemoryCategory.PARAMETERS));
        t.close();
        b.close();
        assertEquals(0, pool.liveBytes());
    }

    @Test
    void viewsShareMemoryWithoutCopying() {
        try (Tensor t = Tensor.allocate(pool, MemoryCategory.ACTIVATIONS, DType.F32, 2, 3, 4)) {
            double[] values = new double[24];
            for (int i = 0; i < 24; i++) values[i] = i;
            t.copyFrom(values);
            long live = pool.liveBytes();

            Tensor flat = t.view(6, -1);
            assertArrayEquals(new int[]{6, 4}, flat.shape());
            assertEquals(9.0, flat.getDouble(2, 1));

            Tensor sliced = t.slice(2, 1, 2);                  // [2, 3, 2]
            assertEquals(13.0, sliced.getDouble(1, 0, 0));
            assertFalse(sliced.isContiguous());
            assertTrue(sliced.hasUnitInnerStride());

            Tensor row = t.select(0, 1);                        // [3, 4]
            assertEquals(23.0, row.getDouble(2, 3));

            Tensor transposed = t.transpose(1, 2);              // [2, 4, 3]
            assertEquals(t.getDouble(1, 2, 3), transposed.getDouble(1, 3, 2));
            assertFalse(transposed.hasUnitInnerStride());

            row.set(-1.5, 0, 0);
            assertEquals(-1.5, t.getDouble(1, 0, 0), "a write through a view reaches the owner");
            assertEquals(live, pool.liveBytes(), "views allocate nothing");
            assertThrows(IllegalStateException.class, row::close);
        }
    }

    /** The contiguous f32/f64 fast paths of the bulk copies agree with element reads on views at an offset and strided ones. */
    @Test
    void bulkCopiesReadAndWriteTheViewsElements() {
        for (DType dtype : new DType[]{DType.F32, DType.F64, DType.BF16}) {
            try (Tensor t = Tensor.allocate(pool, MemoryCategory.ACTIVATIONS, dtype, 4, 6)) {
                double[] values = new double[24];
                for (int i = 0; i < 24; i++) values[i] = i * 0.5 - 3;
                t.copyFrom(values);
                assertArrayEquals(values, t.toDoubleArray(), dtype + ": whole tensor");
                Tensor rows = t.slice(0, 1, 2);                      // contiguous, at an offset
                assertArrayEquals(java.util.Arrays.copyOfRange(values, 6, 18), rows.toDoubleArray(), dtype + ": rows 1-2");
                Tensor cols = t.slice(1, 2, 3);                      // strided
                double[] got = cols.toDoubleArray();
                for (int r = 0; r < 4; r++) {
                    for (int c = 0; c < 3; c++) assertEquals(values[r * 6 + 2 + c], got[r * 3 + c], dtype + ": column view");
                }
                rows.copyFrom(new double[12]);
                cols.copyFrom(new double[]{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12});
                assertEquals(values[5], t.getDouble(0, 5), dtype + ": outside both views unchanged");
                assertEquals(0.0, t.getDouble(1, 0), dtype + ": rows written");
                assertEquals(4.0, t.getDouble(1, 2), dtype + ": columns written");
                assertEquals(12.0, t.getDouble(3, 4), dtype + ": last column element written");
                assertEquals(values[23], t.getDouble(3, 5), dtype + ": last element unchanged");
            }
        }
    }

    @Test
    void badViewsAndIndicesNameTheShape() {
        try (Tensor t = Tensor.allocate(pool, MemoryCategory.BUFFERS, DType.F32, 3, 5)) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> t.view(4, 4));
            assertTrue(e.getMessage().contains("f32[3, 5]"), e.getMessage());
            assertThrows(IllegalArgumentException.class, () -> t.transpose(0, 1).view(15));
            assertThrows(IndexOutOfBoundsException.class, () -> t.getDouble(3, 0));
            assertThrows(IndexOutOfBoundsException.class, () -> t.slice(1, 4, 2));
        }
    }

    @Test
    void bf16RoundsToNearestEven() {
        assertEquals(1.0f, BFloat16.toFloat(BFloat16.fromFloat(1.0f)));
        // 1 + 2^-8 is exactly halfway between bf16 1.0 and 1 + 2^-7: ties go to the even mantissa (1.0)
        assertEquals(1.0f, BFloat16.toFloat(BFloat16.fromFloat(1.0f + 0x1p-8f)));
        // 1 + 3·2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6 (even)
        assertEquals(1.0f + 0x1p-6f, BFloat16.toFloat(BFloat16.fromFloat(1.0f + 3 * 0x1p-8f)));
        assertTrue(Float.isNaN(BFloat16.toFloat(BFloat16.fromFloat(Float.NaN))));
        assertEquals(Float.POSITIVE_INFINITY, BFloat16.toFloat(BFloat16.fromFloat(Float.POSITIVE_INFINITY)));
        try (Tensor t = Tensor.allocate(pool, MemoryCategory.PARAMETERS, DType.BF16, 2)) {
            t.copyFrom(new float[]{3.140625f, -2.5f});
            assertArrayEquals(new float[]{3.140625f, -2.5f}, t.toFloatArray());
        }
    }
}
