package dev.shardwise.model;

import dev.shardwise.core.kernels.Embedding;
import dev.shardwise.core.kernels.Vectors;
import dev.shardwise.core.memory.StepArena;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;

import java.lang.foreign.ValueLayout;

/**
 * Vocabulary-parallel token embedding (Shoeybi et al. 2019): rank r of tp holds rows [r·V'/tp, (r+1)·V'/tp) of wte,
 * V' = V rounded up to a multiple of tp (the rows past V are padding that no token id reaches and no logit wins);
 * each rank looks up the ids that fall in its rows, writes zero rows for the others, and an all-reduce over the tp
 * group sums the ranks' partial embeddings into the whole one: out[n] = Σ_r [id_n ∈ rows_r]·wte_r[id_n - r·V'/tp].
 *
 * <p>Shapes: ids i32 [N], table [V'/tp, C] -> out [N, C]. Communication: forward, g
 * ({@link TensorParallel#reduceFromRegionForward}), an all-reduce of [N, C] (2·(tp-1)/tp·N·C elements per rank);
 * backward, g's backward is the identity: each rank scatter-adds the (whole, replicated) output gradient into its own
 * rows only. The sum adds exact zeros, so the embedding is bit-identical to the single rank's.
 */
final class VocabParallelEmbedding {
    private final TensorParallel tp;
    private final int first;   // this rank's first global row, r·V'/tp
    private final int held;    // rows of this rank below V

    /** What backward reads: ids clamped into this rank's rows (0 where not held) and which rows it holds. */
    record Lookup(Tensor localIds, boolean[] held) { }

    VocabParallelEmbedding(TensorParallel tp, int vocab) {
        this.tp = tp;
        int rows = rowsPerRank(vocab, tp);
        this.first = tp.tpRank() * rows;
        this.held = Math.max(0, Math.min(rows, vocab - first));
    }

    /** V'/tp: rows of wte per rank, ⌈V/tp⌉. */
    static int rowsPerRank(int vocab, TensorParallel tp) {
        return (vocab + tp.size() - 1) / tp.size();
    }

    /** Rank {@code tp.tpRank()}'s slice of the global wte [V, C]: its real rows, then zero padding up to ⌈V/tp⌉ rows. */
    static ParameterSet.Slice slice(int vocab, int hidden, TensorParallel tp) {
        int rows = rowsPerRank(vocab, tp), first = tp.tpRank() * rows;
        int real = Math.max(0, Math.min(rows, vocab - first));
        return new ParameterSet.Slice(0, new int[]{vocab, hidden}, new int[]{Math.min(first, vocab)}, new int[]{real}, rows - real);
    }

    /** First global row of this rank's slice. */
    int first() { return first; }

    /** Rows of this rank's slice that hold real tokens (the rest is padding). */
    int held() { return held; }

    /** out [N, C] = wte[ids] summed over the tp group (written, not accumulated); the lookup goes in {@code arena}. */
    Lookup forward(StepArena arena, Tensor out, Tensor ids, Tensor table) {
        Lookup lookup = partial(arena, out, ids, table);
        tp.reduceFromRegionForward(out);
        return lookup;
    }

    /**
     * Under sequence parallelism (Korthikanti et al. 2022): {@code shard} [N/tp, C] = this rank's positions of
     * wte[ids] [N, C], the ranks' partial embeddings reduce-scattered along the {@code sequences} sequences in place of
     * the all-reduce ((tp-1)/tp·N·C elements per rank); the partial embedding [N, C] lives in a scratch arena, the
     * lookup in {@code arena}. Backward then takes the whole output gradient, all-gathered from the shards.
     */
    Lookup forwardToSequenceShard(StepArena arena, Tensor shard, Tensor ids, Tensor table, int sequences) {
        try (StepArena scratch = new StepArena(arena.pool())) {
            Tensor partial = scratch.allocateForOverwrite(shard.dtype(), Math.toIntExact(ids.numel()), shard.dim(1));
            Lookup lookup = partial(arena, partial, ids, table);
            tp.reduceScatterToSequenceRegionForward(shard, partial, sequences);
            return lookup;
        }
    }

    /** out [N, C] = this rank's rows of wte[ids], zero for the ids other ranks hold. */
    private Lookup partial(StepArena arena, Tensor out, Tensor ids, Tensor table) {
        int n = Math.toIntExact(ids.numel());
        Tensor local = arena.allocateForOverwrite(DType.I32, n);
        boolean[] mine = new boolean[n];
        for (int i = 0; i < n; i++) {
            int id = ids.segment().get(ValueLayout.JAVA_INT, ids.byteOffset() + 4L * i) - first;
            mine[i] = id >= 0 && id < held;
            local.segment().set(ValueLayout.JAVA_INT, local.byteOffset() + 4L * i, mine[i] ? id : 0);
        }
        Embedding.forward(out, local, table, false);
        for (int i = 0; i < n; i++) if (!mine[i]) Vectors.zero(out.slice(0, i, 1));
        return new Lookup(local, mine);
    }

    /** dtable [V'/tp, C] += the rows of dout [N, C] whose ids this rank holds; a masked copy of dout goes in {@code arena}. */
    void backward(StepArena arena, Tensor dtable, Tensor dout, Lookup lookup) {
        Tensor masked = arena.allocateForOverwrite(dout.dtype(), dout.shape());
        Vectors.copy(masked, dout);
        for (int i = 0; i < lookup.held.length; i++) if (!lookup.held[i]) Vectors.zero(masked.slice(0, i, 1));
        Embedding.backward(dtable, masked, lookup.localIds);
    }
}
