/**
 * Transformer language models as layers with explicit forward and backward (llm.c's style): each layer's
 * forward saves exactly what its backward reads, and backward writes the input's gradient and accumulates into
 * the parameters' gradient buffers (the contract of the package-private {@code Layer}).
 *
 * <p>Shape legend used in every Javadoc of this package:
 * <ul>
 *   <li>B: batch size (sequences per micro-batch); T: sequence length; N = B·T rows</li>
 *   <li>C: hidden size (channels); V: vocabulary size; F: feed-forward hidden size</li>
 *   <li>NH: query heads; NKV: key/value heads (grouped-query attention); HS = C / NH, head size</li>
 *   <li>L: number of transformer blocks</li>
 *   <li>{@code /tp}, {@code /pp}: the local shard under tensor or pipeline parallelism</li>
 * </ul>
 */
package dev.shardwise.model;
