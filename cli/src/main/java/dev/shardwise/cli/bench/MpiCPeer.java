package dev.shardwise.cli.bench;

import dev.shardwise.core.tensor.Tensor;

import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.SymbolLookup;
import java.lang.invoke.MethodHandle;
import java.nio.file.Path;

import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_DOUBLE;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

/**
 * Open MPI driven from C: the shared library built from {@code mpi_collectives_peer.c}, called from the
 * benchmark's own MPI processes between the Java backend's trials (one C trial = barrier, {@code iters} calls,
 * barrier, timed in C).
 */
final class MpiCPeer {
    /** Operation codes of {@code shardwise_peer_trial}. */
    static final int ALLREDUCE_NATIVE = 0, ALLREDUCE_RANK_ORDER = 1, REDUCESCATTER_RANK_ORDER = 2, ALLGATHER = 3, ALLTOALL = 4;

    private final MethodHandle trial;

    MpiCPeer(Path library) {
        SymbolLookup lib = SymbolLookup.libraryLookup(library, Arena.global());
        MemorySegment fn = lib.find("shardwise_peer_trial")
                .orElseThrow(() -> new IllegalStateException(library + " lacks shardwise_peer_trial; rebuild it from mpi_collectives_peer.c"));
        trial = Linker.nativeLinker().downcallHandle(fn,
                FunctionDescriptor.of(JAVA_DOUBLE, JAVA_INT, ADDRESS, ADDRESS, ADDRESS, JAVA_LONG, JAVA_INT));
    }

    /**
     * One trial of {@code op} on f32 buffers a [count], b and stage [count]; collective over MPI_COMM_WORLD;
     * returns this rank's seconds per call.
     */
    double trial(int op, Tensor a, Tensor b, Tensor stage, long count, int iters) {
        try {
            return (double) trial.invokeExact(op, a.segment(), b.segment(), stage.segment(), count, iters);
        } catch (Throwable t) {
            throw new IllegalStateException("C peer trial of op " + op + " failed: " + t, t);
        }
    }
}
