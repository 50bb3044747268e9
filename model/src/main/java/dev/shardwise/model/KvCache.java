package dev.shardwise.model;

import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;

import java.lang.foreign.MemorySegment;

/**
 * The key/value cache of autoregressive decoding ({@link Gpt#decode}): per block the keys and values of every
 * position decoded so far, K and V [contextLength, NKV·HS] in f32 (keys rotated when the model uses rotary
 * positions), and how many positions are filled. Positions [0, {@link #length()}) are valid; a decode call appends
 * its new positions after them. Charged to its pool as {@link MemoryCategory#ACTIVATIONS} until {@link #close()}.
 * Not thread-safe.
 */
public final class KvCache implements AutoCloseable {
    private final ModelConfig config;
    private final Tensor[] keys, values;   // per layer [contextLength, NKV·HS]
    private int length;

    /** An empty cache for the whole model of {@code config} (2·L·contextLength·NKV·HS floats). */
    public KvCache(ModelConfig config, MemoryPool pool) {
        this.config = config;
        int layers = config.layers(), width = config.kvHeads() * config.headSize();
        keys = new Tensor[layers];
        values = new Tensor[layers];
        try {
            for (int l = 0; l < layers; l++) {
                keys[l] = Tensor.allocate(pool, MemoryCategory.ACTIVATIONS, DType.F32, config.contextLength(), width);
                values[l] = Tensor.allocate(pool, MemoryCategory.ACTIVATIONS, DType.F32, config.contextLength(), width);
            }
        } catch (RuntimeException | Error e) {
            close();
            throw e;
        }
    }

    /** The model this cache was made for. */
    public ModelConfig config() { return config; }

    /** Positions filled. */
    public int length() { return length; }

    /** Positions it can hold: the model's context length. */
    public int capacity() { return config.contextLength(); }

    /** Forgets every position (the memory stays allocated). */
    public void clear() { length = 0; }

    /** Bytes held. */
    public long bytes() {
        return 2L * keys.length * config.contextLength() * config.kvHeads() * config.headSize() * DType.F32.byteSize();
    }

    /** Keys of block {@code layer}'s first {@code positions} positions, as [positions, NKV, HS]. */
    Tensor keys(int layer, int positions) {
        return keys[layer].view(config.contextLength(), config.kvHeads(), config.headSize()).slice(0, 0, positions);
    }

    /** Values of block {@code layer}'s first {@code positions} positions, as [positions, NKV, HS]. */
    Tensor values(int layer, int positions) {
        return values[layer].view(config.contextLength(), config.kvHeads(), config.headSize()).slice(0, 0, positions);
    }

    /**
     * Writes k and v [T, NKV, HS] (f32 views, each row's heads adjacent: a slice of the fused qkv) at positions
     * [offset, offset+T) of block {@code layer}; {@link #length()} moves only with {@link #advance}.
     */
    void write(int layer, int offset, Tensor k, Tensor v) {
        writeRows(keys[layer], offset, k);
        writeRows(values[layer], offset, v);
    }

    private void writeRows(Tensor cache, int offset, Tensor rows) {
        int t = rows.dim(0), width = config.kvHeads() * config.headSize();
        if (rows.dtype() != DType.F32 || rows.dim(1) * rows.dim(2) != width || rows.stride(2) != 1 || rows.stride(1) != rows.dim(2)) {
            throw new IllegalArgumentException("cache rows must be f32 [T, " + config.kvHeads() + ", " + config.headSize()
                    + "] with each row's heads adjacent, got " + rows.describe());
        }
        long bytes = 4L * width;
        MemorySegment src = rows.segment(), dst = cache.segment();
        for (int r = 0; r < t; r++) {
            MemorySegment.copy(src, 4L * (rows.offset() + r * rows.stride(0)), dst, cache.byteOffset() + bytes * (offset + r), bytes);
        }
    }

    /** Counts {@code positions} more positions as filled, once every block has written them. */
    void advance(int positions) {
        length += positions;
    }

    /** Frees the cache. */
    @Override
    public void close() {
        for (Tensor[] ts : new Tensor[][]{keys, values}) {
            for (int l = 0; l < ts.length; l++) {
                if (ts[l] != null) ts[l].close();
                ts[l] = null;
            }
        }
    }
}
