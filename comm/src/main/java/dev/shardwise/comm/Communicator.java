package dev.shardwise.comm;

import dev.shardwise.core.tensor.Tensor;

/**
 * A group of ranks that exchange tensors: the role of an MPI communicator, an NCCL communicator or a PyTorch
 * process group. Every rank of the group calls the collectives in the same order with matching arguments; a
 * collective returns when this rank's part is done. Buffers are contiguous off-heap tensors (F32, F64 or I32)
 * and are read and written in place, without staging copies where the backend can avoid them.
 *
 * <p>Reductions add in a fixed order (rank 0, 1, ..., n-1) whatever the arrival order, so a run is
 * bit-reproducible. A peer that does not arrive within the communicator's timeout makes the call throw
 * {@link CommTimeoutException} naming the group, the operation, its sequence number and the missing ranks; a
 * peer that failed makes it throw {@link PeerFailedException} at once — never a silent hang.
 *
 * <p>Groups are made once, by {@code ParallelLayout}, with {@link #split}; layer code reaches collectives only
 * through the parallel package's named helpers. One thread per rank calls a communicator; it is not meant for
 * concurrent calls from several threads of the same rank.
 */
public interface Communicator extends AutoCloseable {

    /** This rank's index in the group, in [0, size). */
    int rank();

    /** Number of ranks in the group. */
    int size();

    /** How errors and logs name the group, e.g. {@code world}, {@code dp[1]}, {@code tp[0]}. */
    String name();

    /** buffer = op over ranks of buffer, on every rank (in place). */
    void allReduce(Tensor buffer, ReduceOp op);

    /**
     * Reduces {@code input} [size · n] over ranks and leaves chunk {@code rank} ([n]) of the result in
     * {@code output} [n].
     */
    void reduceScatter(Tensor output, Tensor input, ReduceOp op);

    /** output [size · n] = the concatenation of every rank's input [n], in rank order. */
    void allGather(Tensor output, Tensor input);

    /** buffer on every rank = buffer on {@code root}. */
    void broadcast(Tensor buffer, int root);

    /**
     * Each rank sends {@code sendCounts[p]} elements of {@code input} (consecutive chunks, in peer order) to peer
     * p and receives {@code receiveCounts[p]} elements from it into consecutive chunks of {@code output}; counts
     * may differ per peer (uneven splits, as expert parallelism needs).
     */
    void allToAll(Tensor output, int[] receiveCounts, Tensor input, int[] sendCounts);

    /** Sends {@code buffer} to {@code peer}; matched by a {@link #receive} there with the same tag. */
    void send(Tensor buffer, int peer, int tag);

    /** Receives into {@code buffer} what {@code peer} sent with {@code tag}; blocks until it arrives. */
    void receive(Tensor buffer, int peer, int tag);

    /** Returns when every rank of the group has called it. */
    void barrier();

    /**
     * Collective over this group: ranks passing the same {@code color} form a new group, ordered by
     * {@code key} then by rank in this group (MPI_Comm_split). {@code name} names the new group.
     */
    Communicator split(int color, int key, String name);

    /** Releases the group (not the parent it was split from). */
    @Override
    void close();
}
