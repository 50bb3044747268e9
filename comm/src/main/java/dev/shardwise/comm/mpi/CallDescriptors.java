package dev.shardwise.comm.mpi;

import dev.shardwise.comm.ReduceOp;
import dev.shardwise.core.tensor.DType;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;

import static java.lang.foreign.ValueLayout.JAVA_LONG;

/**
 * The rendezvous half of every {@link MpiCommunicator} collective: what each rank tells each peer about its call
 * (sequence number, operation, dtype, count, reduce op, root, split color and key, and for allToAll the counts of
 * that pair), and the check, run alike on every rank, that the calls match. One rank's descriptor is
 * {@value #LONGS} longs; the communicator moves them with MPI and this class reads them.
 *
 * <p>Layout: {@code outgoing(p)} is what this rank sends rank p; {@code incoming(p)} is what rank p sent (for
 * p = this rank, its own call). Every rank compares rank 0's call with each rank's, so all throw the same error.
 */
final class CallDescriptors {
    /** Longs per rank's descriptor. */
    static final int LONGS = 12;
    private static final int SEQ = 0, OP = 1, DTYPE = 2, REDUCE = 3, COUNT = 4, ROOT = 5, COLOR = 6, KEY = 7,
            NAME_HASH = 8, SENDS_TO = 9, RECEIVES_FROM = 10;

    private final String name;
    private final int rank, size;
    private final MemorySegment sendDesc, recvDesc;   // [size][LONGS] each

    CallDescriptors(Arena arena, String name, int rank, int size) {
        this.name = name;
        this.rank = rank;
        this.size = size;
        this.sendDesc = arena.allocate(8L * LONGS * size, 64);
        this.recvDesc = arena.allocate(8L * LONGS * size, 64);
    }

    /** Writes this rank's call into every outgoing descriptor and its own incoming one; null counts mean none. */
    void fill(long seq, Collective op, DType dtype, ReduceOp reduceOp, long count, int root, int color, int key,
              int nameHash, int[] sendCounts, int[] receiveCounts) {
        for (int p = 0; p < size; p++) {
            long at = (long) p * LONGS * 8;
            MemorySegment d = p == rank ? recvDesc : sendDesc;
            d.set(JAVA_LONG, at + 8L * SEQ, seq);
            d.set(JAVA_LONG, at + 8L * OP, op.ordinal());
            d.set(JAVA_LONG, at + 8L * DTYPE, dtype.ordinal());
            d.set(JAVA_LONG, at + 8L * REDUCE, reduceOp == null ? -1 : reduceOp.ordinal());
            d.set(JAVA_LONG, at + 8L * COUNT, count);
            d.set(JAVA_LONG, at + 8L * ROOT, root);
            d.set(JAVA_LONG, at + 8L * COLOR, color);
            d.set(JAVA_LONG, at + 8L * KEY, key);
            d.set(JAVA_LONG, at + 8L * NAME_HASH, nameHash);
            d.set(JAVA_LONG, at + 8L * SENDS_TO, sendCounts == null ? 0 : sendCounts[p]);
            d.set(JAVA_LONG, at + 8L * RECEIVES_FROM, receiveCounts == null ? 0 : receiveCounts[p]);
        }
    }

    /** The {@value #LONGS} longs this rank sends rank p. */
    MemorySegment outgoing(int p) {
        return sendDesc.asSlice((long) p * LONGS * 8, 8L * LONGS);
    }

    /** Where rank p's {@value #LONGS} longs are received. */
    MemorySegment incoming(int p) {
        return recvDesc.asSlice((long) p * LONGS * 8, 8L * LONGS);
    }

    /** Rank p's split color. */
    long color(int p) { return desc(p, COLOR); }

    /** The hash of the name rank p passed to split. */
    long nameHash(int p) { return desc(p, NAME_HASH); }

    private long desc(int p, int slot) {
        return recvDesc.get(JAVA_LONG, ((long) p * LONGS + slot) * 8);
    }

    private long mine(int p, int slot) {
        return sendDesc.get(JAVA_LONG, ((long) p * LONGS + slot) * 8);
    }

    /**
     * Checks that every rank is at collective {@code seq} and made the same call as rank 0 (for allToAll, that
     * this rank's pairs agree on their counts).
     *
     * @throws IllegalArgumentException naming the ranks and their calls when they differ
     */
    void check(Collective op, long seq) {
        for (int p = 0; p < size; p++) {
            if (desc(p, SEQ) != seq) {
                throw new IllegalArgumentException(name + ": rank " + rank + " is at collective #" + seq + " (" + op.label
                        + ") but rank " + p + " is at #" + desc(p, SEQ) + " (" + describe(p) + "); every rank of a group must "
                        + "call the same collectives in the same order");
            }
        }
        for (int p = 1; p < size; p++) {
            String why = differs(0, p);
            if (why != null) {
                throw new IllegalArgumentException(name + ": collective #" + seq + " does not match across ranks: rank 0 called "
                        + describe(0) + " but rank " + p + " called " + describe(p) + " (" + why + "); every rank of a group "
                        + "must call the same collectives in the same order with matching arguments");
            }
        }
        if (op == Collective.ALL_TO_ALL) {
            // Each rank knows its own pairs: what q sends me must be what I expect from q, and the reverse.
            for (int q = 0; q < size; q++) {
                if (q == rank) continue;
                long qSendsMe = desc(q, SENDS_TO), qExpects = desc(q, RECEIVES_FROM);
                long iExpect = mine(q, RECEIVES_FROM);
                long iSend = mine(q, SENDS_TO);
                if (qSendsMe != iExpect || qExpects != iSend) {
                    throw new IllegalArgumentException(name + ": allToAll #" + seq + ": rank " + q + " sends " + qSendsMe
                            + " elements to rank " + rank + " and expects " + qExpects + " from it, but rank " + rank + " expects "
                            + iExpect + " and sends " + iSend + "; send counts of one rank must equal the receive counts of its peers");
                }
            }
        }
    }

    private String differs(int a, int b) {
        if (desc(a, OP) != desc(b, OP)) return "different operations";
        Collective op = Collective.values()[(int) desc(a, OP)];
        if (op == Collective.BARRIER || op == Collective.SPLIT) return null;
        if (desc(a, DTYPE) != desc(b, DTYPE)) return "different dtypes";
        if (op == Collective.ALL_TO_ALL) return null;
        if (desc(a, COUNT) != desc(b, COUNT)) return "different element counts";
        if (desc(a, REDUCE) != desc(b, REDUCE)) return "different reduce ops";
        if (desc(a, ROOT) != desc(b, ROOT)) return "different roots";
        return null;
    }

    /** How error messages show rank p's call, e.g. {@code allReduce(f32[1000], SUM)}, as the local backend does. */
    private String describe(int p) {
        long opCode = desc(p, OP), dt = desc(p, DTYPE), red = desc(p, REDUCE);
        if (opCode < 0 || opCode >= Collective.values().length || dt < 0 || dt >= DType.values().length) return "an unknown call";
        Collective op = Collective.values()[(int) opCode];
        String dtype = DType.values()[(int) dt].label();
        String reduce = red < 0 || red >= ReduceOp.values().length ? "?" : ReduceOp.values()[(int) red].toString();
        long count = desc(p, COUNT);
        return switch (op) {
            case ALL_REDUCE, NATIVE_ALL_REDUCE -> op.label + "(" + dtype + "[" + count + "], " + reduce + ")";
            case REDUCE_SCATTER -> op.label + "(" + dtype + "[" + count + "] per rank, " + reduce + ")";
            case ALL_GATHER -> op.label + "(" + dtype + "[" + count + "] per rank)";
            case BROADCAST -> op.label + "(" + dtype + "[" + count + "], root " + desc(p, ROOT) + ")";
            case ALL_TO_ALL -> op.label + "(" + dtype + ", " + count + " elements sent)";
            case SPLIT -> op.label + "(color " + desc(p, COLOR) + ", key " + desc(p, KEY) + ")";
            case BARRIER -> op.label + "()";
        };
    }
}
