package dev.shardwise.comm;

import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

import static org.junit.jupiter.api.Assertions.fail;

/**
 * Test data for communicators: element i of rank r's buffer is a fixed function of (r, i, salt) that is not
 * exactly summable (k / 7), so a reduction in the wrong order gives different bits; and the plain reference
 * reductions, computed element by element in the dtype's own arithmetic in rank order.
 */
final class CommData {
    private CommData() { }

    /** Rank {@code rank}'s element {@code i}, exact in {@code dtype}. */
    static double value(DType dtype, int rank, long i, int salt) {
        long h = Math.floorMod(i * 7919 + rank * 104729L + salt * 31L, 2001) - 1000;
        return switch (dtype) {
            case I32 -> h;
            case F32 -> (float) (h / 7.0);
            default -> h / 7.0;
        };
    }

    static Tensor filled(RankContext ctx, DType dtype, long count, int salt) {
        Tensor t = Tensor.allocate(ctx.memory(), MemoryCategory.BUFFERS, dtype, Math.toIntExact(count));
        for (long i = 0; i < count; i++) write(t, i, value(dtype, ctx.globalRank(), i, salt));
        return t;
    }

    static void write(Tensor t, long i, double v) {
        MemorySegment s = t.segment();
        long at = t.byteOffset() + i * t.dtype().byteSize();
        switch (t.dtype()) {
            case F32 -> s.set(ValueLayout.JAVA_FLOAT_UNALIGNED, at, (float) v);
            case F64 -> s.set(ValueLayout.JAVA_DOUBLE_UNALIGNED, at, v);
            case I32 -> s.set(ValueLayout.JAVA_INT_UNALIGNED, at, (int) v);
            case BF16 -> throw new IllegalArgumentException("no bf16 test data");
        }
    }

    static double read(Tensor t, long i) {
        MemorySegment s = t.segment();
        long at = t.byteOffset() + i * t.dtype().byteSize();
        return switch (t.dtype()) {
            case F32 -> s.get(ValueLayout.JAVA_FLOAT_UNALIGNED, at);
            case F64 -> s.get(ValueLayout.JAVA_DOUBLE_UNALIGNED, at);
            case I32 -> s.get(ValueLayout.JAVA_INT_UNALIGNED, at);
            case BF16 -> throw new IllegalArgumentException("no bf16 test data");
        };
    }

    /** op over ranks 0..n-1 of {@code value(dtype, rank, i, salt)}, in rank order, in the dtype's arithmetic. */
    static double reduced(DType dtype, ReduceOp op, int[] ranks, long i, int salt) {
        int n = ranks.length;
        boolean max = op == ReduceOp.MAX;
        switch (dtype) {
            case F32 -> {
                float acc = (float) value(dtype, ranks[0], i, salt);
                for (int p = 1; p < n; p++) {
                    float v = (float) value(dtype, ranks[p], i, salt);
                    acc = max ? Math.max(acc, v) : acc + v;
                }
                return op == ReduceOp.AVG ? acc / (float) n : acc;
            }
            case F64 -> {
                double acc = value(dtype, ranks[0], i, salt);
                for (int p = 1; p < n; p++) {
                    double v = value(dtype, ranks[p], i, salt);
                    acc = max ? Math.max(acc, v) : acc + v;
                }
                return op == ReduceOp.AVG ? acc / n : acc;
            }
            case I32 -> {
                int acc = (int) value(dtype, ranks[0], i, salt);
                for (int p = 1; p < n; p++) {
                    int v = (int) value(dtype, ranks[p], i, salt);
                    acc = max ? Math.max(acc, v) : acc + v;
                }
                return op == ReduceOp.AVG ? acc / n : acc;
            }
            default -> throw new IllegalArgumentException(dtype.label());
        }
    }

    static int[] range(int n) {
        int[] r = new int[n];
        for (int i = 0; i < n; i++) r[i] = i;
        return r;
    }

    /** Elementwise expectation, given index -> expected value. */
    interface Expected {
        double at(long i);
    }

    /** Fails at the first element of {@code t} [count] whose bits differ from {@code expected}, naming the case. */
    static void assertBits(String what, Tensor t, long count, Expected expected) {
        for (long i = 0; i < count; i++) {
            double want = expected.at(i), got = read(t, i);
            if (Double.doubleToLongBits(want) != Double.doubleToLongBits(got)) {
                fail(what + ": element " + i + " of " + count + " is " + got + ", expected " + want
                        + " (diff " + (got - want) + ", bit-exact comparison)");
            }
        }
    }
}
