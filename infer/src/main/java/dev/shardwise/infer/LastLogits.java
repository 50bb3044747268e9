package dev.shardwise.infer;

import dev.shardwise.core.tensor.Tensor;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

/** The next-token distribution's logits: the last row of a model's f32 logits [T, V], copied out. */
final class LastLogits {
    private LastLogits() { }

    /** Row T-1 of contiguous f32 logits [T, V] as a new array [V]. */
    static float[] of(Tensor logits) {
        int rows = logits.dim(0), vocab = logits.dim(1);
        float[] out = new float[vocab];
        MemorySegment.copy(logits.segment(), ValueLayout.JAVA_FLOAT, logits.byteOffset() + 4L * (rows - 1) * vocab, out, 0, vocab);
        return out;
    }
}
