package dev.shardwise.model;

import dev.shardwise.core.memory.StepArena;
import dev.shardwise.core.tensor.Tensor;

/**
 * A forward-only stand-in for the feed-forward branch of every block, installed with
 * {@link Gpt#substituteFeedForward}: inference experiments that change how the branch is computed (MoEfication's
 * sparse experts, Zhang et al. 2022) or that read its input (collecting hidden states) while the rest of the model
 * runs exactly as training does. A model with a substitute installed refuses backward.
 */
public interface FeedForwardSubstitute {

    /**
     * x [N, C] -> y [N, C] for block {@code layer}: x is what the block's feed-forward would read (the normed stream
     * under pre-LN, the block's middle stream under post-LN), in the parameters' dtype (bf16 when the parameter set
     * keeps matmul inputs in bf16). y is allocated in {@code arena}, in x's dtype's float type; x must not be changed.
     */
    Tensor forward(StepArena arena, int layer, Tensor x);
}
