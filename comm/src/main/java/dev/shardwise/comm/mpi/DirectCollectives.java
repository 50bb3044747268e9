package dev.shardwise.comm.mpi;

import dev.shardwise.comm.ReduceOp;
import dev.shardwise.core.tensor.Tensor;

import java.lang.foreign.MemorySegment;

import static dev.shardwise.comm.CollectiveArguments.bytes;

/**
 * The collectives that MPI runs on the tensors themselves, by address and without copies: allGather
 * (MPI_Iallgatherv), broadcast (MPI_Ibcast), allToAll with uneven counts (MPI_Ialltoallv), and Open MPI's own
 * MPI_Allreduce for {@link MpiCommunicator#nativeAllReduce}. Elements move as opaque integers of their byte size,
 * so any dtype passes unchanged. Call after the collective's rendezvous (its sequence number names the call in
 * errors).
 */
final class DirectCollectives {
    private final MpiCalls calls;
    private final CountVectors counts;

    DirectCollectives(MpiCalls calls, CountVectors counts) {
        this.calls = calls;
        this.counts = counts;
    }

    /** input [C] on rank r -> output [n·C] on every rank, rank r's at [r·C, (r+1)·C); input may be that slice. */
    void allGather(long seq, Tensor output, Tensor input) {
        int n = calls.size, rank = calls.rank;
        long c = input.numel();
        int es = input.dtype().byteSize();
        MemorySegment in = bytes(input), out = bytes(output);
        boolean inPlace = in.address() == out.address() + rank * c * es;
        if (n == 1) {
            if (!inPlace) MemorySegment.copy(in, 0, out, 0, in.byteSize());
            return;
        }
        for (int p = 0; p < n; p++) counts.receive(p, c, p * c, "allGather");
        MpiLibrary lib = calls.lib;
        MemorySegment type = lib.elementType(es), comm = calls.comm;
        MemorySegment send = inPlace ? MpiLibrary.IN_PLACE : in;
        int sendCount = inPlace ? 0 : (int) c;
        calls.collective(Collective.ALL_GATHER, seq, "MPI_Iallgatherv", request -> (int) lib.iallgatherv.invokeExact(send,
                sendCount, type, out, counts.receiveCounts, counts.receiveDispls, type, comm, request));
    }

    /** buffer [N] on {@code root} -> the same on every rank. */
    void broadcast(long seq, Tensor buffer, int root) {
        if (calls.size == 1) return;
        MemorySegment buf = bytes(buffer);
        MpiLibrary lib = calls.lib;
        MemorySegment type = lib.elementType(buffer.dtype().byteSize()), comm = calls.comm;
        int c = calls.count(buffer.numel(), "broadcast");
        calls.collective(Collective.BROADCAST, seq, "MPI_Ibcast", request -> (int) lib.ibcast.invokeExact(buf, c, type, root,
                comm, request));
    }

    /**
     * input [sum of sendCounts] -> output [sum of receiveCounts]: sendCounts[p] elements to rank p, in rank order;
     * receiveCounts[p] from rank p, in rank order.
     */
    void allToAll(long seq, Tensor output, int[] receiveCounts, Tensor input, int[] sendCounts) {
        int es = input.dtype().byteSize();
        MemorySegment in = bytes(input), out = bytes(output);
        if (calls.size == 1) {
            MemorySegment.copy(in, 0, out, 0, (long) sendCounts[0] * es);
            return;
        }
        long sentAt = 0, receivedAt = 0;
        for (int p = 0; p < calls.size; p++) {
            counts.send(p, sendCounts[p], sentAt, "allToAll");
            counts.receive(p, receiveCounts[p], receivedAt, "allToAll");
            sentAt += sendCounts[p];
            receivedAt += receiveCounts[p];
        }
        MpiLibrary lib = calls.lib;
        MemorySegment type = lib.elementType(es), comm = calls.comm;
        calls.collective(Collective.ALL_TO_ALL, seq, "MPI_Ialltoallv", request -> (int) lib.ialltoallv.invokeExact(in,
                counts.sendCounts, counts.sendDispls, type, out, counts.receiveCounts, counts.receiveDispls, type, comm, request));
    }

    /**
     * buffer [N] on every rank -> the reduction by Open MPI's MPI_Allreduce (its order of addition), in place; op is
     * SUM or MAX and the dtype F32, F64 or I32 (the caller checked).
     */
    void nativeAllReduce(long seq, Tensor buffer, ReduceOp op) {
        MpiLibrary lib = calls.lib;
        MemorySegment type = switch (buffer.dtype()) {
            case F32 -> lib.mpiFloat;
            case F64 -> lib.mpiDouble;
            case I32 -> lib.mpiInt;
            case BF16 -> throw new IllegalArgumentException("unreachable");
        };
        MemorySegment mpiOp = op == ReduceOp.MAX ? lib.opMax : lib.opSum;
        if (calls.size == 1) return;
        int c = calls.count(buffer.numel(), "nativeAllReduce");
        MemorySegment buf = bytes(buffer), comm = calls.comm;
        String where = calls.where(Collective.NATIVE_ALL_REDUCE.label + " #" + seq);
        // Blocking is safe here: every rank has arrived (the rendezvous), so it cannot wait on an absent peer.
        calls.locked(() -> lib.check((int) lib.allreduce.invokeExact(MpiLibrary.IN_PLACE, buf, c, type, mpiOp, comm),
                "MPI_Allreduce", where));
    }
}
