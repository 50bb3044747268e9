package dev.shardwise.model;

import dev.shardwise.core.memory.StepArena;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;

import java.lang.foreign.ValueLayout;

/**
 * Vocabulary-parallel cross-entropy (Shoeybi et al. 2019): each rank holds the logits of its vocabulary slice
 * [N, V'/tp] (the tied head's product with its rows of wte) and the loss is computed without ever gathering the
 * whole logits: per row n, M = max over the group of the local maxima, S = Σ over the group of Σ_j exp(l_nj - M),
 * l_t = the target's logit (held by one rank, 0 elsewhere, summed over the group); loss_n = log S + M - l_t and
 * dl_nj = (exp(l_nj - M)/S - [j is the target])·scale. Padding columns (rows of wte past V) are excluded: they
 * take no part in the max or the sum and get gradient 0, so the loss and gradients equal the unpadded model's.
 * A target of -1 excludes a row (loss 0, gradient 0), as {@code CrossEntropy} does.
 *
 * <p>Communication: forward three all-reduces of [N] over the tp group (max, Σexp, target logit), 3·2·(tp-1)/tp·N
 * float64 elements per rank; none backward (the gradient is formed here, with the forward).
 *
 * <p>The arithmetic is float64, one row at a time in a fixed order (a reference path, not yet a fast kernel: it reads
 * each row three times on the calling thread); logits of an F32 model are rounded back to F32 when the gradient is
 * written.
 */
final class VocabParallelCrossEntropy {
    private final TensorParallel tp;
    private final int first;   // global vocabulary index of local column 0
    private final int held;    // real (non-padding) local columns

    VocabParallelCrossEntropy(TensorParallel tp, VocabParallelEmbedding slice) {
        this.tp = tp;
        this.first = slice.first();
        this.held = slice.held();
    }

    /**
     * Writes losses [N] from logits [N, V'/tp] and targets i32 [N]; with {@code withGradient} overwrites the logits
     * with d(loss·scale)/d(logits). Temporaries go in {@code arena}.
     */
    void forward(StepArena arena, Tensor losses, Tensor logits, Tensor targets, double scale, boolean withGradient) {
        int n = logits.dim(0), cols = logits.dim(1);
        double[] row = new double[cols];   // one row at a time: never a [N, V/tp] double copy
        Tensor max = arena.allocateForOverwrite(DType.F64, n);
        Tensor sum = arena.allocateForOverwrite(DType.F64, n);
        Tensor target = arena.allocateForOverwrite(DType.F64, n);
        int[] y = new int[n];
        for (int i = 0; i < n; i++) {
            y[i] = targets.segment().get(ValueLayout.JAVA_INT, targets.byteOffset() + 4L * i);
            readRow(logits, i, row);
            double m = Double.NEGATIVE_INFINITY;
            for (int j = 0; j < held; j++) m = Math.max(m, row[j]);
            max.set(m, i);
            int local = y[i] - first;
            target.set(y[i] >= 0 && local >= 0 && local < held ? row[local] : 0, i);
        }
        tp.allReduceMax(max);
        for (int i = 0; i < n; i++) {
            readRow(logits, i, row);
            double m = max.getDouble(i), s = 0;
            for (int j = 0; j < held; j++) s += Math.exp(row[j] - m);
            sum.set(s, i);
        }
        tp.allReduceSum(sum);
        tp.allReduceSum(target);
        for (int i = 0; i < n; i++) {
            double m = max.getDouble(i), s = sum.getDouble(i);
            losses.set(y[i] < 0 ? 0 : Math.log(s) + m - target.getDouble(i), i);
            if (!withGradient) continue;
            readRow(logits, i, row);
            int local = y[i] - first;
            for (int j = 0; j < cols; j++) {
                row[j] = y[i] < 0 || j >= held ? 0 : (Math.exp(row[j] - m) / s - (j == local ? 1 : 0)) * scale;
            }
            writeRow(logits, i, row);
        }
    }

    /** row[j] = t[i, j] for a [N, V/tp] tensor (F32 and F64 with unit inner stride read the segment directly). */
    private static void readRow(Tensor t, int i, double[] row) {
        long base = t.byteOffset() + (long) i * t.stride(0) * t.dtype().byteSize();
        if (t.hasUnitInnerStride() && t.dtype() == DType.F32) {
            for (int j = 0; j < row.length; j++) row[j] = t.segment().get(ValueLayout.JAVA_FLOAT_UNALIGNED, base + 4L * j);
        } else if (t.hasUnitInnerStride() && t.dtype() == DType.F64) {
            for (int j = 0; j < row.length; j++) row[j] = t.segment().get(ValueLayout.JAVA_DOUBLE_UNALIGNED, base + 8L * j);
        } else {
            for (int j = 0; j < row.length; j++) row[j] = t.getDouble(i, j);
        }
    }

    /** t[i, j] = row[j], rounded to t's dtype. */
    private static void writeRow(Tensor t, int i, double[] row) {
        long base = t.byteOffset() + (long) i * t.stride(0) * t.dtype().byteSize();
        if (t.hasUnitInnerStride() && t.dtype() == DType.F32) {
            for (int j = 0; j < row.length; j++) t.segment().set(ValueLayout.JAVA_FLOAT_UNALIGNED, base + 4L * j, (float) row[j]);
        } else if (t.hasUnitInnerStride() && t.dtype() == DType.F64) {
            for (int j = 0; j < row.length; j++) t.segment().set(ValueLayout.JAVA_DOUBLE_UNALIGNED, base + 8L * j, row[j]);
        } else {
            for (int j = 0; j < row.length; j++) t.set(row[j], i, j);
        }
    }
}
