package dev.shardwise.parallel.tensor;

import dev.shardwise.comm.Communicator;
import dev.shardwise.comm.ReduceOp;
import dev.shardwise.core.kernels.Vectors;
import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.tensor.Tensor;
import dev.shardwise.model.Parameter;
import dev.shardwise.model.ParameterSet;

import java.util.ArrayList;
import java.util.List;

/**
 * Sums over the tensor-parallel group the gradients each tp rank computes only a part of, once per step before the
 * norm and the update (Megatron's finalize-model-grads): the {@linkplain Parameter#sequenceParallel sequence-parallel}
 * parameters (norms under Korthikanti et al. 2022's sequence parallelism: each rank sums over its T/tp positions) over
 * the whole group, and the {@linkplain ParameterSet.Slice#replicas replicated pieces} of sliced parameters (GQA's kv
 * heads when kvHeads &lt; tp) over the ranks that share each piece.
 *
 * <p>How: one all-reduce over the tp group of a buffer with a slot per group of sharing ranks; each rank copies its
 * elements into its group's slot, zeros elsewhere, and reads its slot back. The communicator adds in rank order and
 * x + 0 = x exactly, so each slot holds the sharing ranks' sum in rank order and every sharer gets the same bits.
 * Elements per step: Σ over sequence-parallel parameters of their size, plus the replicated pieces' global size
 * (2·NKV·HS·C per attention layer), per rank and step. The buffer is allocated once (BUFFERS) and reused.
 *
 * <p>Every tp rank of a stage has the same flat layout (slices of equal shape), so the ranks of a group walk the same
 * ranges in the same order. Used by the rank's thread from the update ({@code StageGradients}).
 */
public final class TensorParallelGradients implements AutoCloseable {
    /** Local flat elements [from, to) summed over the ranks of group {@code group} of {@code groups}. */
    private record Range(long from, long to, int groups, int group) { }

    private final Communicator tensor;
    private final List<Range> ranges = new ArrayList<>();
    private final MemoryPool pool;
    private Tensor buffer;

    /** Over {@code tensor}, this rank's tp group, for {@code params} (laid out alike on every rank of the group). */
    public TensorParallelGradients(Communicator tensor, ParameterSet params, MemoryPool pool) {
        this.tensor = tensor;
        this.pool = pool;
        int tp = tensor.size(), tpRank = tensor.rank();
        for (Parameter p : params.parameters()) {
            long offset = params.offsetOf(p);
            if (p.sequenceParallel()) ranges.add(new Range(offset, offset + p.numel(), 1, 0));
            ParameterSet.Slice slice = p.slice();
            if (slice == null || !slice.replicated()) continue;
            for (long[] piece : pieces(slice)) {
                int k = (int) piece[2];
                if (k > 1) ranges.add(new Range(offset + piece[0], offset + piece[1], tp / k, tpRank / k));
            }
        }
        ranges.sort(java.util.Comparator.comparingLong(Range::from));
    }

    /**
     * The local elements of each piece of {@code slice}, relative to the parameter: {from, to, replicas}, one per piece
     * and index of the dimensions before the split one.
     */
    static List<long[]> pieces(ParameterSet.Slice slice) {
        int[] local = slice.localShape(), global = slice.globalShape();
        long inner = 1, outer = 1;
        for (int d = slice.dim() + 1; d < global.length; d++) inner *= global[d];
        for (int d = 0; d < slice.dim(); d++) outer *= global[d];
        List<long[]> out = new ArrayList<>();
        for (long o = 0; o < outer; o++) {
            long at = o * local[slice.dim()] * inner;
            for (int i = 0; i < slice.starts().length; i++) {
                long n = slice.lengths()[i] * inner;
                out.add(new long[]{at, at + n, slice.replicas()[i]});
                at += n;
            }
        }
        return out;
    }

    /** Whether any gradient needs summing: false when the stage has no sequence-parallel or replicated parameter. */
    public boolean active() {
        return !ranges.isEmpty();
    }

    /**
     * Sums the partial gradients in a gradient shard made of {@code lengths.length} segments, segment i holding flat
     * elements [flatStarts[i], flatStarts[i] + lengths[i]) at shard offset shardOffsets[i] (the whole flat gradients:
     * one segment from 0). Collective over the tp group: every rank of the group calls it with the same segments.
     */
    public void sum(Tensor shard, long[] flatStarts, int[] shardOffsets, int[] lengths) {
        if (ranges.isEmpty()) return;
        List<long[]> parts = new ArrayList<>();   // {shard offset, length, groups, group}
        long total = 0;
        for (int i = 0; i < lengths.length; i++) {
            long from = flatStarts[i], end = from + lengths[i];
            for (Range r : ranges) {
                long a = Math.max(from, r.from), b = Math.min(end, r.to);
                if (a >= b) continue;
                parts.add(new long[]{shardOffsets[i] + a - from, b - a, r.groups, r.group});
                total += (b - a) * r.groups;
            }
        }
        if (total == 0) return;   // the same on every rank of the group: same layout, same segments
        Tensor all = buffer(shard, total).slice(0, 0, Math.toIntExact(total));
        Vectors.zero(all);
        long at = 0;
        for (long[] part : parts) {
            int n = Math.toIntExact(part[1]);
            Vectors.copy(all.slice(0, Math.toIntExact(at + part[3] * n), n), shard.slice(0, Math.toIntExact(part[0]), n));
            at += part[2] * n;
        }
        tensor.allReduce(all, ReduceOp.SUM);
        at = 0;
        for (long[] part : parts) {
            int n = Math.toIntExact(part[1]);
            Vectors.copy(shard.slice(0, Math.toIntExact(part[0]), n), all.slice(0, Math.toIntExact(at + part[3] * n), n));
            at += part[2] * n;
        }
    }

    /** A contiguous buffer of at least {@code size} elements of the shard's dtype, grown as needed. */
    private Tensor buffer(Tensor shard, long size) {
        if (buffer == null || buffer.numel() < size || buffer.dtype() != shard.dtype()) {
            if (buffer != null) buffer.close();
            buffer = Tensor.allocate(pool, MemoryCategory.BUFFERS, shard.dtype(), Math.toIntExact(size));
        }
        return buffer;
    }

    /**
     * Local flat ranges [from, to) this rank leaves out of its Σg² because another rank of the group counts them:
     * the replicated pieces on every rank but the first of their group. (Sequence-parallel parameters are whole on
     * every rank and are left out on tp ranks other than 0 with the other replicated parameters.)
     */
    public List<long[]> uncountedReplicas(ParameterSet params) {
        List<long[]> out = new ArrayList<>();
        int tpRank = tensor.rank();
        for (Parameter p : params.parameters()) {
            ParameterSet.Slice slice = p.slice();
            if (slice == null || !slice.replicated()) continue;
            long offset = params.offsetOf(p);
            for (long[] piece : pieces(slice)) {
                if (piece[2] > 1 && tpRank % piece[2] != 0) out.add(new long[]{offset + piece[0], offset + piece[1]});
            }
        }
        return out;
    }

    @Override
    public void close() {
        if (buffer != null) buffer.close();
    }
}
