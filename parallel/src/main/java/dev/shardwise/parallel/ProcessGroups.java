package dev.shardwise.parallel;

import dev.shardwise.comm.Communicator;

import java.util.ArrayList;
import java.util.Collection;
import java.util.EnumMap;
import java.util.Map;
import java.util.Objects;

/**
 * This rank's process groups under a {@link ParallelLayout}: its tensor-, data-, pipeline-, expert-,
 * expert-data- and model-parallel communicators, split from the world communicator. It replaces Megatron's
 * module-global {@code parallel_state}: there is no static state and no global lookup; the training code builds
 * one instance per rank and passes it (or the single communicator a component needs) to whatever uses it.
 *
 * <p>The constructor is collective over the world: every world rank must call it with an equal layout, because
 * it calls {@link Communicator#split} once per group kind in a fixed order (tp, dp, pp, ep, edp, mp), with the
 * group index as color and the rank within the group as key. Groups are named {@code tp[0]}, {@code dp[1]},
 * {@code pp[3]}, ... after the index {@link ParallelLayout} gives them. A layout's groups are made once per run,
 * at start-up; building a second instance from the same world is allowed (nothing is cached), it only costs six
 * more splits, and each instance owns and closes its own communicators.
 *
 * <p>One thread per rank uses an instance, like the communicators it holds. {@link #close()} closes the
 * communicators it split, not the world it was built from.
 */
public final class ProcessGroups implements AutoCloseable {

    private final ParallelLayout layout;
    private final int globalRank;
    private final ParallelLayout.Coordinates coordinates;
    private final Map<GroupKind, Communicator> groups;
    private boolean closed;

    /**
     * Splits {@code world} into this rank's groups. Collective: every rank of {@code world} calls it, with an
     * equal {@code layout}; it blocks as long as the splits do.
     *
     * @param layout the layout; its world size must equal {@code world.size()}
     * @param world the communicator of all ranks, rank = global rank; stays owned by the caller
     * @throws IllegalArgumentException if world.size() != layout.worldSize() (the message says which dp fits)
     * @throws IllegalStateException if the backend's split returns a group whose size or rank differs from what
     *         the layout expects; the groups split so far are closed
     */
    public ProcessGroups(ParallelLayout layout, Communicator world) {
        this.layout = Objects.requireNonNull(layout, "layout");
        Objects.requireNonNull(world, "world");
        layout.requireWorldSize(world.size());
        this.globalRank = world.rank();
        this.coordinates = layout.coordinates(globalRank);
        Map<GroupKind, Communicator> made = new EnumMap<>(GroupKind.class);
        try {
            // The same order on every rank: split is collective, and a rank that skipped or reordered one would
            // pair its split with another kind's on the other ranks.
            for (GroupKind kind : GroupKind.values()) {
                int color = kind.color(layout, coordinates);
                int key = kind.key(layout, coordinates);
                String name = kind.prefix + "[" + color + "]";
                Communicator group = world.split(color, key, name);
                made.put(kind, group);
                if (group.size() != kind.size(layout) || group.rank() != key) {
                    throw new IllegalStateException("split of " + world.name() + " into " + name + " on global rank "
                            + globalRank + " returned rank " + group.rank() + " of " + group.size()
                            + "; the layout expects rank " + key + " of " + kind.size(layout)
                            + ": the Communicator backend's split does not follow (color, key) ordering");
                }
            }
        } catch (RuntimeException | Error e) {
            closeAll(made.values(), e);
            throw e;
        }
        this.groups = made;
    }

    /** The layout these groups were built from. */
    public ParallelLayout layout() {
        return layout;
    }

    /** This rank's index in the world communicator. */
    public int globalRank() {
        return globalRank;
    }

    /** This rank's place in the layout. */
    public ParallelLayout.Coordinates coordinates() {
        return coordinates;
    }

    /** The tensor-parallel group: tp adjacent global ranks; rank = tpRank. */
    public Communicator tp() {
        return groups.get(GroupKind.TENSOR);
    }

    /** The data-parallel group (gradient reduction, ZeRO sharding); rank = dpRank. */
    public Communicator dp() {
        return groups.get(GroupKind.DATA);
    }

    /** The pipeline group (activations between stages); rank = ppStage. */
    public Communicator pp() {
        return groups.get(GroupKind.PIPELINE);
    }

    /** The expert-parallel group (token all-to-all); rank = epRank. */
    public Communicator ep() {
        return groups.get(GroupKind.EXPERT);
    }

    /** The expert-data-parallel group (reduction of expert gradients); rank = expertDpRank. */
    public Communicator expertDp() {
        return groups.get(GroupKind.EXPERT_DATA);
    }

    /** The model-parallel group: the tp·pp ranks of this replica (e.g. gradient-norm sums); rank = tpRank + ppStage·tp. */
    public Communicator modelParallel() {
        return groups.get(GroupKind.MODEL);
    }

    /**
     * Closes every communicator split here, last made first, even if one throws (later failures are added as
     * suppressed). The world stays open. Calling it again does nothing.
     */
    @Override
    public void close() {
        if (closed) {
            return;
        }
        closed = true;
        RuntimeException first = closeAll(groups.values(), null);
        if (first != null) {
            throw first;
        }
    }

    @Override
    public String toString() {
        return "ProcessGroups[globalRank=" + globalRank + ", " + coordinates + ", " + layout + "]";
    }

    /**
     * Closes {@code communicators} in reverse order; failures are added to {@code primary} if given, else the
     * first is returned with the rest suppressed.
     */
    private static RuntimeException closeAll(Collection<Communicator> communicators, Throwable primary) {
        RuntimeException first = null;
        for (Communicator c : new ArrayList<>(communicators).reversed()) {
            try {
                c.close();
            } catch (RuntimeException e) {
                if (primary != null) {
                    primary.addSuppressed(e);
                } else if (first == null) {
                    first = e;
                } else {
                    first.addSuppressed(e);
                }
            }
        }
        return first;
    }
}
