/**
 * The planner: hardware and cluster specs ({@link dev.shardwise.plan.DeviceSpec}, {@link dev.shardwise.plan.ClusterSpec},
 * {@link dev.shardwise.plan.ModelSpec}, loaded by {@link dev.shardwise.plan.Specs}), a cost model that prices one
 * layout's step by simulating the pipeline schedule the runtime executes ({@link dev.shardwise.plan.CostModel}), a
 * memory model per device ({@link dev.shardwise.plan.MemoryModel}) and a search over layouts
 * ({@link dev.shardwise.plan.Planner}). Times are seconds, sizes bytes, rates per second, unless a name says otherwise.
 *
 * <p>Legend: L layers, h hidden, a heads, f ffn hidden, V vocab, s sequence, b micro-batch, B global batch,
 * t tensor-parallel size, p pipeline stages, v chunks per stage, d data-parallel size, m micro-batches per step.
 */
package dev.shardwise.plan;
