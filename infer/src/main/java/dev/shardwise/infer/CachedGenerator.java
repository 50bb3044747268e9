package dev.shardwise.infer;

import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.memory.StepArena;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;
import dev.shardwise.model.Gpt;
import dev.shardwise.model.KvCache;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

/**
 * Autoregressive decoding with a key/value cache, through the model's own layers ({@link Gpt#decode}): each new token
 * runs through the blocks as one row and attends over the cached positions, so a token costs O(parameters + T·C)
 * instead of a full forward over the context; every block type the model's decode serves (see {@link Gpt#canDecode}).
 * A prompt is fed in one call per chunk. When the context fills up, the newest half of the tokens is fed again into
 * the emptied cache (a sliding window). Owns its cache and arena ({@link #close()} frees them). Not thread-safe.
 */
public final class CachedGenerator implements TokenGenerator {
    private final Gpt model;
    private final KvCache cache;
    private final StepArena arena;
    private final List<Integer> history = new ArrayList<>();   // the tokens in the cache, oldest first

    /**
     * @throws IllegalArgumentException if the model cannot decode with a cache ({@link Gpt#canDecode}: use
     *                                  {@link RecomputingGenerator}) or its parameters are not f32
     */
    public CachedGenerator(Gpt model, MemoryPool pool) {
        if (!Gpt.canDecode(model.config())) {
            throw new IllegalArgumentException("this model cannot decode with a key/value cache (a top query layer); "
                    + "use RecomputingGenerator");
        }
        if (model.parameters().dtype() != DType.F32) {
            throw new IllegalArgumentException("generation runs in f32, got " + model.parameters().dtype().label());
        }
        this.model = model;
        this.cache = new KvCache(model.config(), pool);
        this.arena = new StepArena(pool);
    }

    /** Tokens fed so far that are in the cache. */
    public int position() {
        return history.size();
    }

    @Override
    public float[] feed(int token) {
        return feed(new int[]{token});
    }

    /**
     * Appends {@code tokens} (in chunks that fit the cache, sliding the window as {@link #feed(int)} does) and returns
     * the logits [V] for the position after the last of them.
     *
     * @throws IllegalArgumentException if tokens is empty or a token is outside the vocabulary
     */
    @Override
    public float[] feed(int[] tokens) {
        int vocab = model.config().vocabSize();
        if (tokens.length == 0) throw new IllegalArgumentException("no tokens to feed; give at least one");
        for (int token : tokens) {
            if (token < 0 || token >= vocab) {
                throw new IllegalArgumentException("token " + token + " is outside the vocabulary [0, " + vocab + ")");
            }
        }
        float[] logits = null;
        for (int done = 0; done < tokens.length; ) {
            if (cache.length() == cache.capacity()) slideWindow();
            int chunk = Math.min(tokens.length - done, cache.capacity() - cache.length());
            logits = run(Arrays.copyOfRange(tokens, done, done + chunk));
            done += chunk;
        }
        return logits;
    }

    /** Keeps the newest half of the context: clears the cache and feeds those tokens again, at once. */
    private void slideWindow() {
        int[] keep = history.subList(Math.max(1, cache.capacity() / 2), history.size()).stream().mapToInt(Integer::intValue).toArray();
        history.clear();
        cache.clear();
        if (keep.length > 0) run(keep);
    }

    /** Decodes {@code tokens} (which fit the cache) and returns the logits after the last. */
    private float[] run(int[] tokens) {
        try {
            Tensor ids = arena.allocate(MemoryCategory.BUFFERS, DType.I32, 1, tokens.length);
            MemorySegment.copy(tokens, 0, ids.segment(), ValueLayout.JAVA_INT, ids.byteOffset(), tokens.length);
            Tensor logits = model.decode(arena, cache, ids);   // [T, V]
            for (int token : tokens) history.add(token);
            return LastLogits.of(logits);
        } finally {
            arena.reset();
        }
    }

    @Override
    public void close() {
        arena.close();
        cache.close();
    }
}
