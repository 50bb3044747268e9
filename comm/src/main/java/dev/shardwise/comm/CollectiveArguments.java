package dev.shardwise.comm;

import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;

import java.lang.foreign.MemorySegment;
import java.util.Arrays;

/**
 * The argument checks every {@link Communicator} backend makes before a call, so that each backend rejects the
 * same mistakes with the same message: the group's name, what was wrong, and what to pass instead.
 */
public final class CollectiveArguments {
    private CollectiveArguments() { }

    /**
     * @throws IllegalArgumentException if {@code t} is not contiguous, or if it is bf16 and {@code reducible}
     */
    public static void checkBuffer(String group, Tensor t, String op, String what, boolean reducible) {
        if (!t.isContiguous()) {
            throw new IllegalArgumentException(group + ": " + op + " needs a contiguous " + what + ", got " + t.describe()
                    + "; copy it into a contiguous tensor first");
        }
        if (reducible && t.dtype() == DType.BF16) {
            throw new IllegalArgumentException(group + ": " + op + " cannot reduce bf16 (" + what + " " + t.describe()
                    + "); reduce an f32 copy and convert back");
        }
    }

    /** @throws IllegalArgumentException if {@code peer} is not in [0, size) */
    public static void checkPeer(String group, int size, int peer, String op, String what) {
        if (peer < 0 || peer >= size) {
            throw new IllegalArgumentException(group + ": " + op + " " + what + " " + peer + " is not a rank of the group "
                    + "(size " + size + ")");
        }
    }

    /** @throws IllegalArgumentException unless input is [size · n] and output [n] of one dtype */
    public static void checkReduceScatter(String group, int size, Tensor output, Tensor input) {
        if (input.dtype() != output.dtype() || input.numel() != size * output.numel()) {
            throw new IllegalArgumentException(group + ": reduceScatter needs input [size · n] and output [n] of one dtype "
                    + "(size " + size + "), got input " + input.describe() + " and output " + output.describe()
                    + "; pass output = one rank's chunk of the input's shape");
        }
    }

    /** @throws IllegalArgumentException unless input is [n] and output [size · n] of one dtype */
    public static void checkAllGather(String group, int size, Tensor output, Tensor input) {
        if (input.dtype() != output.dtype() || output.numel() != size * input.numel()) {
            throw new IllegalArgumentException(group + ": allGather needs input [n] and output [size · n] of one dtype "
                    + "(size " + size + "), got input " + input.describe() + " and output " + output.describe());
        }
    }

    /**
     * Checks an allToAll's counts against the group and the buffers; returns the elements this rank sends.
     *
     * @throws IllegalArgumentException unless there is one non-negative count per rank each way and the counts fit
     *                                  buffers of one dtype
     */
    public static long checkAllToAll(String group, int size, Tensor output, int[] receiveCounts, Tensor input, int[] sendCounts) {
        if (receiveCounts.length != size || sendCounts.length != size) {
            throw new IllegalArgumentException(group + ": allToAll needs one count per rank (" + size + "), got "
                    + sendCounts.length + " send and " + receiveCounts.length + " receive counts");
        }
        long sent = total(group, sendCounts, "send"), received = total(group, receiveCounts, "receive");
        if (input.dtype() != output.dtype() || sent > input.numel() || received > output.numel()) {
            throw new IllegalArgumentException(group + ": allToAll sends " + sent + " and receives " + received
                    + " elements but input is " + input.describe() + " and output " + output.describe()
                    + "; the counts must fit the buffers, which must share a dtype");
        }
        return sent;
    }

    /** The bytes of a contiguous tensor. */
    public static MemorySegment bytes(Tensor t) {
        return t.segment().asSlice(t.byteOffset(), t.numel() * t.dtype().byteSize());
    }

    private static long total(String group, int[] counts, String what) {
        long t = 0;
        for (int c : counts) {
            if (c < 0) throw new IllegalArgumentException(group + ": allToAll " + what + " counts must be >= 0, got " + Arrays.toString(counts));
            t += c;
        }
        return t;
    }
}
