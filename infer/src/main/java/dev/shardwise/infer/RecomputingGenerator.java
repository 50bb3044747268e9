package dev.shardwise.infer;

import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.memory.StepArena;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;
import dev.shardwise.model.Gpt;

import java.lang.foreign.ValueLayout;
import java.util.ArrayList;
import java.util.List;

/**
 * Decoding by running the whole model over the context for every new token: O(T) times the work of a KV cache
 * ({@link CachedGenerator}), but it serves every model, PanGu-α's top query layer included, which the cache does not,
 * exactly as training computes it. The context keeps the newest {@code contextLength} tokens.
 */
public final class RecomputingGenerator implements TokenGenerator {
    private final Gpt model;
    private final StepArena arena;
    private final List<Integer> context = new ArrayList<>();

    public RecomputingGenerator(Gpt model, MemoryPool pool) {
        this.model = model;
        this.arena = new StepArena(pool);
    }

    @Override
    public float[] feed(int token) {
        int vocab = model.config().vocabSize();
        if (token < 0 || token >= vocab) {
            throw new IllegalArgumentException("token " + token + " is outside the vocabulary [0, " + vocab + ")");
        }
        context.add(token);
        if (context.size() > model.config().contextLength()) context.removeFirst();
        int t = context.size();
        try {
            Tensor tokens = arena.allocate(MemoryCategory.BUFFERS, DType.I32, 1, t);
            for (int i = 0; i < t; i++) tokens.segment().set(ValueLayout.JAVA_INT, tokens.byteOffset() + 4L * i, context.get(i));
            return LastLogits.of(model.logits(arena, tokens));   // [T, V] -> [V]
        } finally {
            arena.reset();
        }
    }

    @Override
    public void close() {
        arena.close();
    }
}
