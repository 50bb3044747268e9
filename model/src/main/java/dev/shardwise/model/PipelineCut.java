package dev.shardwise.model;

import java.util.ArrayList;
import java.util.List;

/**
 * Where a pipeline cuts a GPT into parts (Megatron's pipeline stages, Narayanan et al. 2021): either where a
 * config pins it ({@code pipelineCut: [0, 3, 6]}: the first block of each part) or balanced by modelled cost, so
 * that the slowest part, which sets the pipeline's pace, is as fast as it can be.
 *
 * <p>Cost model, training FLOPs per token (PaLM's count, as {@link ModelConfig#trainingFlopsPerToken}): a block
 * costs 6 per weight plus 12·C·T for attention; the head 6·V·C for its two GEMMs plus 10·V for the softmax and
 * loss (memory-bound, counted at a rate of a few FLOPs per logit), and the top query layer as a block; the
 * embedding costs next to nothing (a gather). The head of a 50k vocabulary is worth several blocks: GPT-2 124M's
 * head costs 6·50257·768 ≈ 232 MFLOP per token against 6·7.1M + 12·768·1024 ≈ 52 MFLOP for a block.
 */
public final class PipelineCut {
    private PipelineCut() { }

    /** The modelled cost per token of the embedding, each block and the head (with the final layers), in FLOPs. */
    static double[] pieceCosts(ModelConfig config, int seqLen) {
        int l = config.layers();
        double block = (config.trainingFlopsPerToken(seqLen) - headFlops(config)) / (l + (config.topQueryLayer() ? 1 : 0));
        double[] costs = new double[l + 2];
        costs[0] = config.hidden();
        for (int i = 1; i <= l; i++) costs[i] = block;
        costs[l + 1] = headFlops(config) + 10.0 * config.vocabSize() + (config.topQueryLayer() ? block : 0);
        return costs;
    }

    private static double headFlops(ModelConfig config) {
        return 6.0 * config.vocabSize() * config.hidden();
    }

    /**
     * Cuts the model into {@code parts} contiguous parts whose largest modelled cost is as small as it can be (an
     * exact search over cut points); part 0 holds the embedding, the last part the head. A part may hold no block
     * when the embedding or the head alone is worth it.
     *
     * @throws IllegalArgumentException if parts is below 1 or above layers + 2 (every part must hold something)
     */
    public static List<GptPart.Span> balanced(ModelConfig config, int seqLen, int parts) {
        double[] cost = pieceCosts(config, seqLen);
        int n = cost.length;
        if (parts < 1 || parts > n) {
            throw new IllegalArgumentException(parts + " pipeline parts (pp·vpp) cannot share " + config.layers()
                    + " layers plus the embedding and the head; use pp·vpp <= " + n);
        }
        double[] prefix = new double[n + 1];
        for (int i = 0; i < n; i++) prefix[i + 1] = prefix[i] + cost[i];
        // best[k][i]: the smallest largest cost of cutting pieces [0, i) into k non-empty parts; from[k][i] its last cut.
        double[][] best = new double[parts + 1][n + 1];
        int[][] from = new int[parts + 1][n + 1];
        for (double[] row : best) java.util.Arrays.fill(row, Double.POSITIVE_INFINITY);
        best[0][0] = 0;
        for (int k = 1; k <= parts; k++) {
            for (int i = k; i <= n; i++) {
                for (int j = k - 1; j < i; j++) {
                    double v = Math.max(best[k - 1][j], prefix[i] - prefix[j]);
                    if (v < best[k][i] - 1e-9 * prefix[n]) {   // ties go to the earliest cut: later parts lighter
                        best[k][i] = v;
                        from[k][i] = j;
                    }
                }
            }
        }
        int[] starts = new int[parts + 1];   // piece index where each part starts
        starts[parts] = n;
        for (int k = parts, i = n; k > 0; k--) {
            i = from[k][i];
            starts[k - 1] = i;
        }
        List<GptPart.Span> spans = new ArrayList<>(parts);
        for (int k = 0; k < parts; k++) {
            // pieces [starts[k], starts[k+1]): piece 0 is the embedding, 1..L the blocks, L+1 the head
            int first = Math.max(starts[k], 1) - 1, end = Math.min(starts[k + 1], n - 1) - 1;
            spans.add(new GptPart.Span(k == 0, first, Math.max(first, end), k == parts - 1));
        }
        return List.copyOf(spans);
    }

    /**
     * The parts a config pins: {@code firstBlocks[k]} is the first block of part k (0 first, strictly increasing);
     * part k holds blocks up to the next part's first; part 0 also holds the embedding, the last part the head.
     *
     * @throws IllegalArgumentException naming the key, the value and the fix if the list is not such a cut
     */
    public static List<GptPart.Span> pinned(ModelConfig config, List<Integer> firstBlocks, int parts) {
        if (firstBlocks.size() != parts) {
            throw new IllegalArgumentException("pipelineCut " + firstBlocks + " has " + firstBlocks.size() + " entries but the "
                    + "layout has pp·vpp = " + parts + " parts; give the first block of each part, e.g. "
                    + evenCut(config.layers(), parts));
        }
        if (firstBlocks.getFirst() != 0) {
            throw new IllegalArgumentException("pipelineCut " + firstBlocks + " must start at block 0 (the first part's first block)");
        }
        List<GptPart.Span> spans = new ArrayList<>(parts);
        for (int k = 0; k < parts; k++) {
            int first = firstBlocks.get(k), end = k + 1 < parts ? firstBlocks.get(k + 1) : config.layers();
            if (end < first || first > config.layers() || (end == first && k > 0 && k < parts - 1)) {
                throw new IllegalArgumentException("pipelineCut " + firstBlocks + " is not strictly increasing within [0, "
                        + config.layers() + "] (model.layers): part " + k + " would hold blocks [" + first + ", " + end
                        + "); e.g. " + evenCut(config.layers(), parts));
            }
            spans.add(new GptPart.Span(k == 0, first, end, k == parts - 1));
        }
        return List.copyOf(spans);
    }

    /** "[0, 3, 6]": the first blocks of an even cut, for messages. */
    private static String evenCut(int layers, int parts) {
        List<Integer> firsts = new ArrayList<>();
        for (int k = 0; k < parts; k++) firsts.add(k * layers / parts);
        return firsts.toString();
    }
}
