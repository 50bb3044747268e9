package dev.shardwise.train;

import dev.shardwise.model.Parameter;
import dev.shardwise.model.ParameterSet;

import java.util.ArrayList;
import java.util.List;

/**
 * Where a rank's local elements of a parameter sit in the global tensor, as runs of row-major global element
 * offsets: the identity for a whole tensor, and through its {@link ParameterSet.Slice} under tensor parallelism
 * (each piece of the split dimension is one run per outer index; padding rows map to no global element).
 * Checkpoint pieces are described this way, so any layout reads what overlaps its own elements.
 */
final class GlobalRuns {
    private GlobalRuns() { }

    /** {@code length} consecutive local elements from {@code localStart} are the global elements from {@code globalStart}. */
    record Run(long globalStart, long localStart, long length) { }

    /** The global tensor's shape: the slice's when the parameter is sliced, else its own. */
    static int[] globalShape(Parameter p) {
        return p.slice() == null ? p.shape() : p.slice().globalShape();
    }

    /**
     * The runs of local elements [localFrom, localFrom + length) of {@code p} (row-major in its local shape), in
     * local order; padding rows are left out.
     */
    static List<Run> of(Parameter p, long localFrom, long length) {
        return of(p.slice(), p.shape(), localFrom, length);
    }

    static List<Run> of(ParameterSet.Slice slice, int[] localShape, long localFrom, long length) {
        List<Run> runs = new ArrayList<>();
        long localTo = localFrom + length;
        if (length <= 0) return runs;
        if (slice == null) {
            runs.add(new Run(localFrom, localFrom, length));
            return runs;
        }
        int dim = slice.dim();
        int[] global = slice.globalShape();
        long inner = 1, outer = 1;
        for (int d = dim + 1; d < global.length; d++) inner *= global[d];
        for (int d = 0; d < dim; d++) outer *= global[d];
        long localRows = localShape[dim];
        long blockSize = localRows * inner;   // local elements per outer index
        long firstOuter = localFrom / blockSize, lastOuter = Math.min(outer - 1, (localTo - 1) / blockSize);
        for (long o = firstOuter; o <= lastOuter; o++) {
            long row = 0;
            for (int k = 0; k < slice.starts().length; k++) {
                long localStart = (o * localRows + row) * inner, n = slice.lengths()[k] * inner;
                long from = Math.max(localStart, localFrom), to = Math.min(localStart + n, localTo);
                if (from < to) {
                    long globalStart = (o * global[dim] + slice.starts()[k]) * inner;
                    runs.add(new Run(globalStart + (from - localStart), from, to - from));
                }
                row += slice.lengths()[k];
            }
        }
        return runs;
    }
}
