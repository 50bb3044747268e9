/**
 * Tensor parallelism (Shoeybi et al. 2019, Megatron-LM): the layers that split their matrices over a tensor-parallel
 * group live in {@code dev.shardwise.model} (column- and row-parallel linears, parallel attention heads, split MLPs,
 * vocabulary-parallel embedding and cross-entropy), which reaches its group only through the model's
 * {@link dev.shardwise.model.TensorParallel}; {@link dev.shardwise.parallel.tensor.CommunicatorTensorParallel}
 * implements it over the communicator {@code ProcessGroups.tp()} built from the layout. The update counts the
 * parameters every tp rank holds whole once in the gradient norm ({@code StageGradients}).
 *
 * <p>Per transformer block, forward and backward each run two all-reduces of [B·T, C] over the tp group; the
 * embedding one more forward, the head one backward, and the loss three of [B·T] forward.
 *
 * <p>Sequence parallelism (Korthikanti et al. 2022) is a property of the model's {@code TensorParallel}
 * ({@code new CommunicatorTensorParallel(groups.tp(), layout.sequenceParallel())}): the layers then keep the norms,
 * residual sums and branch outputs on T/tp positions per rank and use all-gathers and reduce-scatters (one per
 * sequence) in place of the all-reduces. Gradients a tp rank computes only part of (the sequence-parallel norms; kv
 * heads replicated when kvHeads &lt; tp) are summed once per step by
 * {@link dev.shardwise.parallel.tensor.TensorParallelGradients}, which {@code StageGradients} runs for the update.
 */
package dev.shardwise.parallel.tensor;
