package dev.shardwise.model;

import dev.shardwise.core.tensor.Tensor;

/**
 * A trainable tensor, its gradient (same shape), and whether AdamW decays it.
 *
 * @param name        global name, e.g. {@code h.3.attn.qkv.weight}; checkpoints key on it
 * @param value       the weights, a view into the model's flat parameter buffer
 * @param grad        the gradient, a view into the flat gradient buffer; backward accumulates into it
 * @param weightDecay true for matrices; false for norms, biases and embeddings by default
 */
public record Parameter(String name, Tensor value, Tensor grad, boolean weightDecay) {
}
