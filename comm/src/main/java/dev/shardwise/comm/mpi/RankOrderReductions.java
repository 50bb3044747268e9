package dev.shardwise.comm.mpi;

import dev.shardwise.comm.ReduceKernels;
import dev.shardwise.comm.ReduceOp;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;

import java.lang.foreign.MemorySegment;

import static dev.shardwise.comm.CollectiveArguments.bytes;

/**
 * allReduce and reduceScatter in rank order: allReduce as a reduce-scatter followed by an all-gather (Rabenseifner
 * 2004), with MPI only moving bytes and Shardwise adding in rank order 0..n-1 ({@link ReduceKernels}), so results
 * are bit-identical to the {@code local} backend's and repeat from run to run.
 *
 * <p>Chunk p of a buffer of N elements is elements [N·p/n, N·(p+1)/n), as {@code local} splits it. allReduce:
 * MPI_Ialltoallv sends chunk p of every rank's buffer to rank p, into a {@link StagingBuffer} of about N elements
 * (n - 1 peers' chunks); rank p reduces the n contributions into its own chunk; MPI_Iallgatherv (in place) spreads
 * the reduced chunks. Each rank sends and receives about 2N·(n-1)/n elements. reduceScatter: the first half, into
 * the output. Call after the collective's rendezvous (its sequence number names the call in errors).
 */
final class RankOrderReductions {
    private final MpiCalls calls;
    private final CountVectors counts;
    private final StagingBuffer staging;

    RankOrderReductions(MpiCalls calls, CountVectors counts, StagingBuffer staging) {
        this.calls = calls;
        this.counts = counts;
        this.staging = staging;
    }

    /** buffer [N] on every rank -> the reduction of all ranks' buffers, on every rank. */
    void allReduce(long seq, Tensor buffer, ReduceOp op) {
        int n = calls.size, rank = calls.rank;
        if (n == 1) return;
        long count = buffer.numel();
        int es = buffer.dtype().byteSize();
        MemorySegment buf = bytes(buffer);
        long mine = chunk(count, rank + 1) - chunk(count, rank);
        MemorySegment stage = staging.atLeast(n * mine * es);
        for (int p = 0; p < n; p++) {
            long lo = chunk(count, p), len = chunk(count, p + 1) - lo;
            counts.send(p, p == rank ? 0 : len, lo, "allReduce");
            counts.receive(p, p == rank ? 0 : mine, p * mine, "allReduce");
        }
        MemorySegment own = buf.asSlice(chunk(count, rank) * es, mine * es);
        exchangeAndReduce(seq, Collective.ALL_REDUCE, buffer.dtype(), op, buf, stage, own, own, mine);
        for (int p = 0; p < n; p++) {
            long lo = chunk(count, p);
            counts.receive(p, chunk(count, p + 1) - lo, lo, "allReduce");
        }
        MpiLibrary lib = calls.lib;
        MemorySegment type = lib.elementType(es), comm = calls.comm;
        calls.collective(Collective.ALL_REDUCE, seq, "MPI_Iallgatherv", request -> (int) lib.iallgatherv.invokeExact(
                MpiLibrary.IN_PLACE, 0, type, buf, counts.receiveCounts, counts.receiveDispls, type, comm, request));
    }

    /** input [n·C] on every rank -> output [C] on rank r: the reduction of chunk r of all ranks' inputs. */
    void reduceScatter(long seq, Tensor output, Tensor input, ReduceOp op) {
        int n = calls.size, rank = calls.rank;
        long c = output.numel();
        int es = input.dtype().byteSize();
        MemorySegment in = bytes(input), out = bytes(output);
        MemorySegment own = in.asSlice(rank * c * es, c * es);
        if (n == 1) {
            ReduceKernels.reduceOnPool(input.dtype(), op, new MemorySegment[] {own}, 0, new MemorySegment[] {out}, 0, c);
            return;
        }
        MemorySegment stage = staging.atLeast(n * c * es);
        for (int p = 0; p < n; p++) {
            counts.send(p, p == rank ? 0 : c, p * c, "reduceScatter");
            counts.receive(p, p == rank ? 0 : c, p * c, "reduceScatter");
        }
        exchangeAndReduce(seq, Collective.REDUCE_SCATTER, input.dtype(), op, in, stage, own, out, c);
    }

    /**
     * MPI_Ialltoallv of {@code send} into {@code stage} (slot p: rank p's contribution, {@code chunk} elements;
     * this rank's own slot unused), then the rank-order reduction of the contributions, {@code own} in this rank's
     * place, into {@code result}.
     */
    private void exchangeAndReduce(long seq, Collective op, DType dtype, ReduceOp reduceOp, MemorySegment send,
                                   MemorySegment stage, MemorySegment own, MemorySegment result, long chunk) {
        MpiLibrary lib = calls.lib;
        int es = dtype.byteSize(), n = calls.size;
        MemorySegment type = lib.elementType(es), comm = calls.comm;
        calls.collective(op, seq, "MPI_Ialltoallv", request -> (int) lib.ialltoallv.invokeExact(send, counts.sendCounts,
                counts.sendDispls, type, stage, counts.receiveCounts, counts.receiveDispls, type, comm, request));
        MemorySegment[] sources = new MemorySegment[n];
        for (int p = 0; p < n; p++) sources[p] = p == calls.rank ? own : stage.asSlice(p * chunk * es, chunk * es);
        ReduceKernels.reduceOnPool(dtype, reduceOp, sources, 0, new MemorySegment[] {result}, 0, chunk);
    }

    /** Element index where chunk p of a buffer of {@code count} elements starts: count·p/n, as local does. */
    private long chunk(long count, int p) {
        return count * p / calls.size;
    }
}
