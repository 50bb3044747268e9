package dev.shardwise.parallel.pipeline;

import dev.shardwise.core.tensor.Tensor;

/**
 * What a pipeline stage computes, as the executor drives it: the trainer implements it over the model's chunks, the
 * pipeline benchmark with fixed-duration stand-in work. Methods are called on the rank's thread, in the order of the
 * stage's instruction list.
 *
 * <p>Buffers: {@link #inputBuffer} and {@link #outputGradientBuffer} are where received messages land (allocated by
 * the work for (mb, chunk) before the receive); {@link #output} and {@link #inputGradient} are what is sent (the
 * executor's send copies them, so they may be freed once it returns). {@link #release} comes after the last
 * instruction that touches (mb, chunk), so everything of that micro-batch on that chunk may be freed.
 */
public interface StageWork {

    /** Forward of (mb, chunk); its input is the batch (first part) or what {@link #inputBuffer} received. */
    void forward(int mb, int chunk);

    /** Whole backward of (mb, chunk), from {@link #outputGradientBuffer} (or the loss, on the last part). */
    void backward(int mb, int chunk);

    /** Input-gradient half of backward (ZB-H1's B). */
    void backwardInput(int mb, int chunk);

    /** Weight-gradient half of backward (ZB-H1's W), after {@link #backwardInput} of the same (mb, chunk). */
    void backwardWeight(int mb, int chunk);

    /** The forward output of (mb, chunk) to send, [B·T, C]. */
    Tensor output(int mb, int chunk);

    /** Where the input of (mb, chunk) is received into, [B·T, C]. */
    Tensor inputBuffer(int mb, int chunk);

    /** The input gradient of (mb, chunk) to send, [B·T, C], after its backward (or backward-input). */
    Tensor inputGradient(int mb, int chunk);

    /** Where the output gradient of (mb, chunk) is received into, [B·T, C]. */
    Tensor outputGradientBuffer(int mb, int chunk);

    /** Everything of (mb, chunk) may be freed: no instruction of this step touches it again. */
    void release(int mb, int chunk);

    /** The step's gradient reduction (data parallelism, tied embeddings). */
    void reduceGradients();

    /** The step's clipping and optimizer update. */
    void optimizerStep();
}
