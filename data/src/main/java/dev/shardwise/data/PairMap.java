package dev.shardwise.data;

import java.util.Arrays;

/**
 * An open-addressing hash map from a token pair, packed as {@code (left << 32) | right}, to a long value;
 * absent keys read as 0. Not thread-safe for writes; concurrent reads of a map no longer written are safe.
 */
final class PairMap {
    private static final long EMPTY = -1L;   // no pair of non-negative ids packs to -1
    private long[] keys;
    private long[] values;
    private int size;

    PairMap(int expected) {
        int cap = Integer.highestOneBit(Math.max(16, expected * 2 - 1)) << 1;
        keys = new long[cap];
        values = new long[cap];
        Arrays.fill(keys, EMPTY);
    }

    static long pack(int left, int right) {
        return ((long) left << 32) | (right & 0xFFFFFFFFL);
    }

    static int left(long pair) { return (int) (pair >>> 32); }

    static int right(long pair) { return (int) pair; }

    int size() { return size; }

    long get(long key) {
        int mask = keys.length - 1;
        for (int i = slot(key, mask); ; i = (i + 1) & mask) {
            long k = keys[i];
            if (k == key) return values[i];
            if (k == EMPTY) return 0;
        }
    }

    /** Adds {@code delta} to the value of {@code key} and returns the new value. */
    long add(long key, long delta) {
        int mask = keys.length - 1;
        int i = slot(key, mask);
        while (true) {
            long k = keys[i];
            if (k == key) return values[i] += delta;
            if (k == EMPTY) break;
            i = (i + 1) & mask;
        }
        keys[i] = key;
        values[i] = delta;
        if (++size * 2 > keys.length) grow();
        return delta;
    }

    void put(long key, long value) {
        add(key, value - get(key));
    }

    /** Calls {@code visitor} for every key with a non-zero value, in table order. */
    void forEach(Visitor visitor) {
        for (int i = 0; i < keys.length; i++) {
            if (keys[i] != EMPTY && values[i] != 0) visitor.visit(keys[i], values[i]);
        }
    }

    @FunctionalInterface
    interface Visitor {
        void visit(long key, long value);
    }

    private void grow() {
        long[] oldKeys = keys;
        long[] oldValues = values;
        keys = new long[oldKeys.length * 2];
        values = new long[oldKeys.length * 2];
        Arrays.fill(keys, EMPTY);
        int mask = keys.length - 1;
        for (int j = 0; j < oldKeys.length; j++) {
            if (oldKeys[j] == EMPTY) continue;
            int i = slot(oldKeys[j], mask);
            while (keys[i] != EMPTY) i = (i + 1) & mask;
            keys[i] = oldKeys[j];
            values[i] = oldValues[j];
        }
    }

    private static int slot(long key, int mask) {
        long h = key * 0x9E3779B97F4A7C15L;
        return (int) (h ^ (h >>> 29)) & mask;
    }
}
