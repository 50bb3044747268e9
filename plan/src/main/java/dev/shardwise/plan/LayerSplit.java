package dev.shardwise.plan;

/**
 * How many blocks each of the p·v model chunks holds (chunk c·p + s is stage s's c-th): L/(p·v) each when that
 * divides, as Megatron-LM splits; otherwise ⌊L/(p·v)⌋ each and the remainder one apiece to the interior chunks
 * first, then the first chunk (beside the cheap embedding lookup), then the last (beside the head's GEMM), which is
 * where Megatron-DeepSpeed's partition that counts the embedding and the head as layers puts them (BLOOM: 70 blocks
 * on 12 stages, 5 on the first and last, 6 on the rest).
 */
final class LayerSplit {
    private LayerSplit() {
    }

    /** Blocks per chunk, indexed by chunk; every chunk holds at least one. @throws IllegalArgumentException if parts exceeds layers */
    static int[] of(int layers, int parts) {
        if (parts < 1 || parts > layers) {
            throw new IllegalArgumentException("pp·vpp = " + parts + " model chunks for " + layers
                    + " blocks: every chunk needs at least one block; use pp·vpp of at most " + layers);
        }
        int[] blocks = new int[parts];
        java.util.Arrays.fill(blocks, layers / parts);
        int remainder = layers % parts;
        for (int c = 1; c < parts - 1 && remainder > 0; c++, remainder--) blocks[c]++;
        if (remainder > 0) {
            blocks[0]++;
            remainder--;
        }
        if (remainder > 0) blocks[parts - 1]++;
        return blocks;
    }

    /** Blocks of pipeline stage {@code stage}: its v chunks' together. */
    static int stageBlocks(int[] split, int pp, int stage) {
        int n = 0;
        for (int c = stage; c < split.length; c += pp) n += split[c];
        return n;
    }

    /** The most blocks any one of stage {@code stage}'s chunks holds. */
    static int largestChunk(int[] split, int pp, int stage) {
        int n = 0;
        for (int c = stage; c < split.length; c += pp) n = Math.max(n, split[c]);
        return n;
    }
}
