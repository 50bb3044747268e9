package dev.shardwise.parallel;

/**
 * The kinds of process group a {@link ParallelLayout} partitions the world into, each with the color (which
 * group a rank is in) and key (its rank inside that group) that {@code Communicator.split} takes. Groups of one
 * kind are numbered by their smallest global rank; {@link ProcessGroups} splits them in declaration order.
 */
enum GroupKind {
    /** Tensor-parallel groups: same dpRank and ppStage; tp adjacent global ranks. */
    TENSOR("tp"),
    /** Data-parallel groups: same tpRank and ppStage; stride tp. */
    DATA("dp"),
    /** Pipeline groups: same tpRank and dpRank; stride tp·dp. */
    PIPELINE("pp"),
    /** Expert-parallel groups: same tpRank and ppStage, ep consecutive dpRanks. */
    EXPERT("ep"),
    /** Expert-data-parallel groups: same tpRank, ppStage and epRank; reduce expert gradients. */
    EXPERT_DATA("edp"),
    /** Model-parallel groups: the tp·pp ranks holding one model replica (same dpRank). */
    MODEL("mp");

    /** How group names start: {@code tp[0]}, {@code dp[1]}, ... */
    final String prefix;

    GroupKind(String prefix) {
        this.prefix = prefix;
    }

    /** Number of groups of this kind in {@code layout}. */
    int count(ParallelLayout layout) {
        return layout.worldSize() / size(layout);
    }

    /** Ranks per group of this kind in {@code layout}. */
    int size(ParallelLayout layout) {
        return switch (this) {
            case TENSOR -> layout.tp();
            case DATA -> layout.dp();
            case PIPELINE -> layout.pp();
            case EXPERT -> layout.ep();
            case EXPERT_DATA -> layout.expertDp();
            case MODEL -> layout.tp() * layout.pp();
        };
    }

    /** Index of the group holding the rank at {@code c}, in [0, count). */
    int color(ParallelLayout layout, ParallelLayout.Coordinates c) {
        int tp = layout.tp();
        return switch (this) {
            case TENSOR -> c.dpRank() + c.ppStage() * layout.dp();
            case DATA -> c.tpRank() + c.ppStage() * tp;
            case PIPELINE -> c.tpRank() + c.dpRank() * tp;
            case EXPERT -> c.tpRank() + c.expertDpRank() * tp + c.ppStage() * tp * layout.expertDp();
            case EXPERT_DATA -> c.tpRank() + c.epRank() * tp + c.ppStage() * tp * layout.ep();
            case MODEL -> c.dpRank();
        };
    }

    /** Rank of {@code c} inside its group, in [0, size). */
    int key(ParallelLayout layout, ParallelLayout.Coordinates c) {
        return switch (this) {
            case TENSOR -> c.tpRank();
            case DATA -> c.dpRank();
            case PIPELINE -> c.ppStage();
            case EXPERT -> c.epRank();
            case EXPERT_DATA -> c.expertDpRank();
            case MODEL -> c.tpRank() + c.ppStage() * layout.tp();
        };
    }
}
