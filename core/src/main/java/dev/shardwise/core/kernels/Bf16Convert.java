package dev.shardwise.core.kernels;

import dev.shardwise.core.tensor.BFloat16;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;
import jdk.incubator.vector.IntVector;
import jdk.incubator.vector.ShortVector;
import jdk.incubator.vector.VectorMask;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorSpecies;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

import static dev.shardwise.core.kernels.Kernels.LE;

/**
 * Bulk conversion between bfloat16 storage and float32 compute, bit for bit as {@link BFloat16}: widening is
 * exact; narrowing rounds to nearest, ties to even, and keeps NaN a (quiet) NaN with its sign.
 * Shapes: {@code out} and {@code in} share one shape, both contiguous. F64 is accepted on the float side
 * (through float32, as {@link Tensor#set} does). Elementwise, so bit-identical for any thread count.
 */
public final class Bf16Convert {
    private Bf16Convert() { }

    private static final VectorSpecies<Integer> I = IntVector.SPECIES_512;
    private static final VectorSpecies<Short> S = ShortVector.SPECIES_256;

    /**
     * {@code out (f32 or f64) = in (bf16)}, exact.
     *
     * @throws IllegalArgumentException if dtypes or shapes are wrong or a tensor is not contiguous
     */
    public static void toFloat(Tensor out, Tensor in) {
        String op = "Bf16Convert.toFloat";
        Rows[] r = check(op, out, in, "out", "in");
        MemorySegment os = r[0].segment(), is = r[1].segment();
        if (out.dtype() == DType.F32) {
            Kernels.forStrips((oo, io, z2, z3, z4, len) -> {
                int i = 0;
                for (; i <= len - 16; i += 16) {
                    ShortVector h = ShortVector.fromMemorySegment(S, is, io + 2L * i, LE);
                    IntVector w = ((IntVector) h.convertShape(VectorOperators.S2I, I, 0)).lanewise(VectorOperators.LSHL, 16);
                    w.intoMemorySegment(os, oo + 4L * i, LE);
                }
                for (; i < len; i++) {
                    os.set(ValueLayout.JAVA_FLOAT_UNALIGNED, oo + 4L * i, BFloat16.toFloat(is.get(ValueLayout.JAVA_SHORT_UNALIGNED, io + 2L * i)));
                }
            }, r);
        } else {
            Kernels.forStrips((oo, io, z2, z3, z4, len) -> {
                for (int i = 0; i < len; i++) {
                    os.set(ValueLayout.JAVA_DOUBLE_UNALIGNED, oo + 8L * i, BFloat16.toFloat(is.get(ValueLayout.JAVA_SHORT_UNALIGNED, io + 2L * i)));
                }
            }, r);
        }
    }

    /**
     * {@code out (bf16) = in (f32 or f64)}, rounding to nearest even; NaN stays NaN.
     *
     * @throws IllegalArgumentException if dtypes or shapes are wrong or a tensor is not contiguous
     */
    public static void fromFloat(Tensor out, Tensor in) {
        String op = "Bf16Convert.fromFloat";
        Rows[] r = check(op, in, out, "in", "out");
        MemorySegment fs = r[0].segment(), hs = r[1].segment();
        if (in.dtype() == DType.F32) {
            Kernels.forStrips((fo, ho, z2, z3, z4, len) -> {
                int i = 0;
                for (; i <= len - 16; i += 16) {
                    IntVector bits = IntVector.fromMemorySegment(I, fs, fo + 4L * i, LE);
                    IntVector rounded = bits.add(bits.lanewise(VectorOperators.LSHR, 16).and(1).add(0x7fff))
                            .lanewise(VectorOperators.LSHR, 16);
                    VectorMask<Integer> nan = bits.and(0x7fffffff).compare(VectorOperators.GT, 0x7f800000);
                    IntVector quiet = bits.lanewise(VectorOperators.LSHR, 16).or(0x0040);
                    IntVector h = rounded.blend(quiet, nan);
                    ((ShortVector) h.convertShape(VectorOperators.I2S, S, 0)).intoMemorySegment(hs, ho + 2L * i, LE);
                }
                for (; i < len; i++) {
                    hs.set(ValueLayout.JAVA_SHORT_UNALIGNED, ho + 2L * i, BFloat16.fromFloat(fs.get(ValueLayout.JAVA_FLOAT_UNALIGNED, fo + 4L * i)));
                }
            }, r);
        } else {
            Kernels.forStrips((fo, ho, z2, z3, z4, len) -> {
                for (int i = 0; i < len; i++) {
                    float v = (float) fs.get(ValueLayout.JAVA_DOUBLE_UNALIGNED, fo + 8L * i);
                    hs.set(ValueLayout.JAVA_SHORT_UNALIGNED, ho + 2L * i, BFloat16.fromFloat(v));
                }
            }, r);
        }
    }

    /** Returns {float side, bf16 side} as rows of flat views. */
    private static Rows[] check(String op, Tensor f, Tensor h, String fName, String hName) {
        if (f.dtype() != DType.F32 && f.dtype() != DType.F64) {
            throw new IllegalArgumentException(op + ": " + fName + " is " + f.describe() + " but must be f32 (or f64)");
        }
        if (h.dtype() != DType.BF16) {
            throw new IllegalArgumentException(op + ": " + hName + " is " + h.describe() + " but must be bf16");
        }
        if (!java.util.Arrays.equals(f.shape(), h.shape())) {
            throw new IllegalArgumentException(op + ": " + fName + " " + f.describe() + " and " + hName + " " + h.describe()
                    + " must have the same shape");
        }
        Kernels.contiguous(op, fName, f);
        Kernels.contiguous(op, hName, h);
        return new Rows[]{Rows.of(op, fName, f.view(-1)), Rows.of(op, hName, h.view(-1))};
    }
}
