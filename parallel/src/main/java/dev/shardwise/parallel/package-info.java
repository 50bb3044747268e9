/**
 * Parallel training: the {@link dev.shardwise.parallel.ParallelLayout} that maps global ranks to data, tensor,
 * pipeline and expert coordinates, and the {@link dev.shardwise.parallel.ProcessGroups} built from it once per
 * run and passed to every parallel feature (no global process-group state).
 *
 * <p>Rank names say their space: {@code globalRank}, {@code tpRank}, {@code dpRank}, {@code ppStage},
 * {@code epRank}, {@code expertDpRank}; never a bare {@code rank}. Every shard size goes through
 * {@link dev.shardwise.parallel.ParallelLayout#divide}.
 */
package dev.shardwise.parallel;
