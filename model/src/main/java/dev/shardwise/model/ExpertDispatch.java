package dev.shardwise.model;

import dev.shardwise.core.memory.StepArena;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;

/**
 * Expert parallelism's dispatch and combine (GShard, Lepikhin et al. 2020; FastMoE, He et al. 2021): a rank's
 * routed tokens, sorted by global expert, go to the ranks that hold their experts by one uneven all-to-all over the
 * expert-parallel group; each rank reorders what it received from source-major to expert-major, runs its E/ep
 * experts as one grouped product, and sends the outputs back by the reverse all-to-all. Backward runs the same two
 * all-to-alls on the gradients. Per MoE block and micro-batch: forward one all-to-all of ep·(E/ep) counts and two of
 * [rows, C] (dispatch, combine), backward two of [rows, C]; rows are this rank's kept assignments out and the
 * assignments routed to its experts in.
 */
final class ExpertDispatch {
    private final GroupedExperts local;   // this rank's E/ep experts
    private final ExpertParallel ep;
    private final int perRank;            // E/ep

    /**
     * What backward reads.
     *
     * @param sendRows  rows this rank sent to each rank [ep]
     * @param recvRows  rows it received from each rank [ep]
     * @param order     expert-major row i of xe is source-major row order[i] of what was received [R]
     * @param offsets   local expert l owns rows [offsets[l], offsets[l+1]) of xe [E/ep + 1]
     * @param xe        the received tokens, expert-major [R, C] (null when R = 0)
     * @param experts   the local experts' saved activations, or null when R = 0
     * @param ys        the experts' outputs for this rank's own assignments, in its dispatch order [M, C]
     */
    record Saved(int[] sendRows, int[] recvRows, int[] order, int[] offsets, Tensor xe, GroupedExperts.Saved experts, Tensor ys) { }

    ExpertDispatch(GroupedExperts local, ExpertParallel ep) {
        this.local = local;
        this.ep = ep;
        this.perRank = local.count();
    }

    /** xs [M, C] sorted by global expert (expert e owns rows [offsets[e], offsets[e+1]), E + 1 offsets) -> ys [M, C]. */
    Saved forward(StepArena arena, Tensor xs, int m, int c, DType dtype, int[] offsets) {
        int p = ep.size();
        // how many rows this rank sends to each of the destination's experts, then what each source sends here
        Tensor sendCounts = arena.allocateForOverwrite(DType.I32, p * perRank);
        for (int e = 0; e < p * perRank; e++) sendCounts.set(offsets[e + 1] - offsets[e], e);
        Tensor recvCounts = arena.allocateForOverwrite(DType.I32, p * perRank);
        int[] each = new int[p];
        java.util.Arrays.fill(each, perRank);
        ep.allToAll(ExpertParallel.Exchange.COUNTS, recvCounts, each, sendCounts, each);
        int[] sendRows = new int[p], recvRows = new int[p];
        int[][] received = new int[p][perRank];   // [source][local expert]
        for (int r = 0; r < p; r++) {
            sendRows[r] = offsets[(r + 1) * perRank] - offsets[r * perRank];
            for (int l = 0; l < perRank; l++) {
                received[r][l] = (int) recvCounts.getDouble(r * perRank + l);
                recvRows[r] += received[r][l];
            }
        }
        int rows = 0;
        for (int n : recvRows) rows += n;
        // source-major (source, expert, token) -> expert-major (expert, source, token)
        int[] sourceStart = new int[p];
        for (int r = 1; r < p; r++) sourceStart[r] = sourceStart[r - 1] + recvRows[r - 1];
        int[] localOffsets = new int[perRank + 1], order = new int[rows];
        for (int l = 0; l < perRank; l++) {
            int at = localOffsets[l];
            for (int r = 0; r < p; r++) {
                int from = sourceStart[r];
                for (int j = 0; j < l; j++) from += received[r][j];
                for (int i = 0; i < received[r][l]; i++) order[at++] = from + i;
            }
            localOffsets[l + 1] = at;
        }
        int capacity = bufferRows(rows);
        Tensor xr = exchange(ExpertParallel.Exchange.DISPATCH, arena, xs, sendRows, recvRows, capacity, c, dtype);
        Tensor xe = null, ye = null;
        GroupedExperts.Saved saved = null;
        if (rows > 0) {
            xe = arena.allocateRowsForOverwrite(dtype, capacity, c);   // rows past `rows` belong to no expert: never read
            MoeRows.gather(xe.slice(0, 0, rows), xr.slice(0, 0, rows), order);
            saved = local.forward(arena, xe, localOffsets);
            ye = saved.out();
        }
        Tensor ys = exchange(ExpertParallel.Exchange.COMBINE, arena, sourceMajor(arena, ye, order, rows, capacity, c, dtype),
                recvRows, sendRows, m, c, dtype);
        return new Saved(sendRows, recvRows, order, localOffsets, xe, saved, ys);
    }

    /** dys [M, C] in dispatch order -> dxs [M, C]; accumulates the local experts' gradients (queued on {@code weights}). */
    Tensor backward(StepArena arena, Tensor dys, int m, int c, Saved saved, WeightGradients weights) {
        int rows = saved.order.length, capacity = bufferRows(rows);
        DType dtype = dys.dtype();
        Tensor dyr = exchange(ExpertParallel.Exchange.COMBINE_GRADIENT, arena, dys, saved.sendRows, saved.recvRows, capacity, c, dtype);
        Tensor dxe = null;
        if (rows > 0) {
            Tensor dye = arena.allocateRowsForOverwrite(dtype, capacity, c);
            MoeRows.gather(dye.slice(0, 0, rows), dyr.slice(0, 0, rows), saved.order);
            dxe = arena.allocateRowsForOverwrite(dtype, capacity, c);
            local.backward(arena, dxe, dye, saved.xe, saved.offsets, saved.experts, weights);
        }
        return exchange(ExpertParallel.Exchange.DISPATCH_GRADIENT, arena,
                sourceMajor(arena, dxe, saved.order, rows, capacity, c, dtype), saved.recvRows, saved.sendRows, m, c, dtype);
    }

    /**
     * Rows of a buffer for {@code rows} received rows: the smallest size class holding them, where the classes are 1 to
     * 4 rows, then four per power of two (rows in (2^j, 2^(j+1)] take a multiple of 2^(j-2)), so a buffer is less than
     * 1.25 times its rows, as {@code comm}'s StagingPool sizes messages. The count changes with the routing from step to
     * step; the buffers are the arena's row blocks ({@link StepArena#allocateRows}), which a later pass of as many rows
     * or fewer reuses and which are replaced when the rows outgrow them, so the classes bound how often a block is
     * replaced (fresh memory to touch) while keeping what a block holds beyond its rows small. (Powers of two wasted up
     * to half a buffer, and a balanced share sitting on a power of two took one size or twice it by a single row.)
     */
    static int bufferRows(int rows) {
        if (rows <= 4) return Math.max(rows, 1);
        int step = Integer.highestOneBit(rows - 1) >> 2;
        return Math.ceilDiv(rows, step) * step;
    }

    /** Expert-major rows back to source-major: out[order[i]] = in[i], in a buffer of {@code capacity} rows, over the compute pool. */
    private static Tensor sourceMajor(StepArena arena, Tensor in, int[] order, int rows, int capacity, int c, DType dtype) {
        Tensor out = arena.allocateRowsForOverwrite(dtype, capacity, c);
        if (rows > 0) MoeRows.scatter(out.slice(0, 0, rows), in.slice(0, 0, rows), order);
        return out;
    }

    /** One uneven all-to-all of rows: sends[r] rows of {@code in} to rank r, receives[r] from it, into [max(total, 1), C]. */
    private Tensor exchange(ExpertParallel.Exchange what, StepArena arena, Tensor in, int[] sends, int[] receives, int total,
                            int c, DType dtype) {
        Tensor out = arena.allocateRowsForOverwrite(dtype, Math.max(total, 1), c);
        int[] sendElements = new int[sends.length], receiveElements = new int[receives.length];
        for (int r = 0; r < sends.length; r++) {
            sendElements[r] = sends[r] * c;
            receiveElements[r] = receives[r] * c;
        }
        ep.allToAll(what, out, receiveElements, in, sendElements);
        return out;
    }
}
