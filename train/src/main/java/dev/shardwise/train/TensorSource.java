package dev.shardwise.train;

import java.io.IOException;
import java.nio.channels.FileChannel;
import java.util.List;
import java.util.Map;

/** Stored tensors by global name, read a span of global row-major elements at a time: a checkpoint, or an imported file. */
interface TensorSource {
    /**
     * Fills {@code spans} of {@code tensor} (saved with {@code dtype} and {@code globalShape}); files opened on the way are
     * kept in {@code open} for the caller to close.
     *
     * @throws IOException if the tensor is missing, of another shape or dtype, or not wholly stored
     */
    void read(String tensor, String dtype, int[] globalShape, List<CheckpointIndex.Span> spans, Map<String, FileChannel> open)
            throws IOException;
}
