package dev.shardwise.parallel;

import dev.shardwise.model.Recompute;
import java.util.ArrayList;
import java.util.List;
import java.util.Objects;
import java.util.StringJoiner;

/**
 * How one training run is cut across ranks: data, tensor, pipeline (with virtual stages) and expert
 * parallelism, plus the options that change per-rank memory (sequence parallelism, ZeRO stage, activation
 * recompute, micro-batch size). It is the one place that maps a global rank to its coordinates and lists the
 * ranks of every process group, in Megatron-LM's order (Shoeybi et al. 2019; Narayanan et al. 2021); every
 * parallel feature reads it and {@link ProcessGroups} builds the communicators from it. Nothing else invents
 * groups.
 *
 * <h2>Rank order</h2>
 * Tensor-parallel ranks are adjacent (fastest varying), so a tp group lands inside one node, then data-parallel,
 * then pipeline:
 * <pre>
 *   globalRank = tpRank + dpRank·tp + ppStage·tp·dp        worldSize = dp·tp·pp
 * </pre>
 * Expert parallelism reuses the data-parallel ranks of a stage: ep divides dp, an expert-parallel group is ep
 * consecutive dpRanks with the same tpRank and ppStage ({@code epRank = dpRank mod ep}), and the ranks holding
 * the same experts form an expert-data-parallel group of size dp/ep ({@code expertDpRank = dpRank / ep}).
 * Experts keep the layer's tensor-parallel split (Megatron's default, expert tensor parallelism = tp), so the
 * token all-to-all needs no gather over tp. Groups of each kind are numbered by their smallest global rank.
 *
 * <h2>Worked example: tp=2, pp=4, dp=2 (16 ranks, e.g. two nodes of 8)</h2>
 * <pre>
 *   globalRank:  0  1  2  3  4  5  6  7  8  9 10 11 12 13 14 15
 *   tpRank:      0  1  0  1  0  1  0  1  0  1  0  1  0  1  0  1
 *   dpRank:      0  0  1  1  0  0  1  1  0  0  1  1  0  0  1  1
 *   ppStage:     0  0  0  0  1  1  1  1  2  2  2  2  3  3  3  3
 *
 *   tp groups (8):  tp[0]=[0, 1]   tp[1]=[2, 3]    tp[2]=[4, 5]    tp[3]=[6, 7]
 *                   tp[4]=[8, 9]   tp[5]=[10, 11]  tp[6]=[12, 13]  tp[7]=[14, 15]
 *   dp groups (8):  dp[0]=[0, 2]   dp[1]=[1, 3]    dp[2]=[4, 6]    dp[3]=[5, 7]
 *                   dp[4]=[8, 10]  dp[5]=[9, 11]   dp[6]=[12, 14]  dp[7]=[13, 15]
 *   pp groups (4):  pp[0]=[0, 4, 8, 12]   pp[1]=[1, 5, 9, 13]   pp[2]=[2, 6, 10, 14]   pp[3]=[3, 7, 11, 15]
 *   model-parallel groups (tp×pp, 2):  mp[0]=[0, 1, 4, 5, 8, 9, 12, 13]   mp[1]=[2, 3, 6, 7, 10, 11, 14, 15]
 *   embedding groups (first and last stage, 4):  [0, 12]   [1, 13]   [2, 14]   [3, 15]
 * </pre>
 * With ep=2 in the same layout the expert-parallel groups equal the dp groups and each expert-data-parallel
 * group is a single rank. {@code layoutBuildsTheDocumented16RankGroups} in the tests asserts this table.
 *
 * <p>A record: immutable, safe to share between rank threads. The compact constructor rejects every invalid
 * combination with a message that names the field, its value and a fix; {@link #validateFor} then checks the
 * layout against a model's dimensions. Every shard size is computed with {@link #divide}, which refuses to
 * truncate.
 *
 * @param dp data-parallel size (model replicas), at least 1
 * @param tp tensor-parallel size, at least 1
 * @param pp pipeline stages, at least 1
 * @param vpp virtual pipeline chunks per stage (interleaved 1F1B), at least 1; above 1 only with pp at least 2
 * @param ep expert-parallel size, at least 1, dividing dp
 * @param sequenceParallel split the activations tensor parallelism replicates (norms, dropout) along the
 *        sequence over the tp group (Korthikanti et al. 2022); needs tp at least 2
 * @param zeroStage ZeRO stage over the dp group (Rajbhandari et al. 2020): 0 off, 1 optimizer state, 2 + gradients,
 *        3 + parameters
 * @param recompute activation recompute policy
 * @param microBatch sequences per micro-batch on each rank, at least 1
 */
public record ParallelLayout(int dp, int tp, int pp, int vpp, int ep, boolean sequenceParallel, int zeroStage,
                             Recompute recompute, int microBatch) {

    /**
     * Checks every field and their combinations.
     *
     * @throws IllegalArgumentException naming the field, its value and a fix, if a size is below 1, ep does not
     *         divide dp, vpp &gt; 1 with pp = 1, sequenceParallel with tp = 1, zeroStage is outside 0..3,
     *         microBatch &lt; 1 or dp·tp·pp overflows an int
     * @throws NullPointerException if {@code recompute} is null
     */
    public ParallelLayout {
        requireAtLeastOne("dp", dp, "use dp=1 for no data parallelism");
        requireAtLeastOne("tp", tp, "use tp=1 for no tensor parallelism");
        requireAtLeastOne("pp", pp, "use pp=1 for no pipeline parallelism");
        requireAtLeastOne("vpp", vpp, "use vpp=1 for a non-interleaved pipeline");
        requireAtLeastOne("ep", ep, "use ep=1 for no expert parallelism");
        requireAtLeastOne("microBatch", microBatch, "a micro-batch holds at least one sequence");
        Objects.requireNonNull(recompute, "recompute is null; use Recompute.NONE to keep every activation");
        if (zeroStage < 0 || zeroStage > 3) {
            throw new IllegalArgumentException("zeroStage=" + zeroStage + " is not a ZeRO stage; use 0 (off), "
                    + "1 (shard optimizer state), 2 (+ gradients) or 3 (+ parameters)");
        }
        if (vpp > 1 && pp == 1) {
            throw new IllegalArgumentException("vpp=" + vpp + " needs pp >= 2: virtual stages interleave model "
                    + "chunks over several pipeline stages; use pp >= 2 or vpp=1");
        }
        if (sequenceParallel && tp == 1) {
            throw new IllegalArgumentException("sequenceParallel=true needs tp >= 2: it splits over the tp group "
                    + "the activations tensor parallelism replicates; use tp >= 2 or sequenceParallel=false");
        }
        if (dp % ep != 0) {
            throw new IllegalArgumentException("ep=" + ep + " does not divide dp=" + dp + ": expert-parallel "
                    + "groups are made of data-parallel ranks; use ep in " + divisors(dp));
        }
        try {
            Math.multiplyExact(Math.multiplyExact(dp, tp), pp);
        } catch (ArithmeticException e) {
            throw new IllegalArgumentException("dp·tp·pp = " + dp + "·" + tp + "·" + pp
                    + " does not fit an int; use smaller sizes", e);
        }
    }

    /**
     * A layout of only data, tensor and pipeline parallelism: vpp=1, ep=1, no sequence parallelism, ZeRO off, no
     * recompute, micro-batch 1.
     *
     * @throws IllegalArgumentException as the canonical constructor
     */
    public static ParallelLayout of(int dp, int tp, int pp) {
        return new ParallelLayout(dp, tp, pp, 1, 1, false, 0, Recompute.NONE, 1);
    }

    /**
     * The data-parallel size a world of {@code worldSize} ranks leaves for {@code tp} and {@code pp}, as
     * Megatron derives it: worldSize / (tp·pp).
     *
     * @throws IllegalArgumentException if tp·pp does not divide worldSize (the message lists the tp·pp that do)
     */
    public static int dataParallelSize(int worldSize, int tp, int pp) {
        requireAtLeastOne("tp", tp, "use tp=1 for no tensor parallelism");
        requireAtLeastOne("pp", pp, "use pp=1 for no pipeline parallelism");
        return divide("world size", worldSize, "tp·pp", Math.multiplyExact(tp, pp));
    }

    /**
     * {@code value / parts}, refusing to truncate: the one checked division every shard size goes through
     * (Megatron's {@code divide}, with a fix in the message). Example: {@code divide("model.heads", heads, "tp",
     * tp)} gives the heads each tensor-parallel rank holds.
     *
     * @param what the divided quantity as the user knows it, e.g. {@code model.heads}
     * @param value the quantity, at least 0
     * @param partsName the divisor as the user sets it, e.g. {@code tp} or {@code pp·vpp}
     * @param parts the divisor, at least 1
     * @return value / parts
     * @throws IllegalArgumentException if {@code parts} does not divide {@code value}, e.g. "tp=3 does not divide
     *         model.heads=16; use tp in {1, 2, 4, 8, 16}"; or if value &lt; 0 or parts &lt; 1
     */
    public static int divide(String what, int value, String partsName, int parts) {
        if (value < 0) {
            throw new IllegalArgumentException(what + "=" + value + " is negative; it must be at least 0");
        }
        if (parts < 1) {
            throw new IllegalArgumentException(partsName + "=" + parts + " must be at least 1 to divide "
                    + what + "=" + value);
        }
        if (value % parts != 0) {
            throw new IllegalArgumentException(partsName + "=" + parts + " does not divide " + what + "=" + value
                    + "; use " + partsName + " in " + divisors(value));
        }
        return value / parts;
    }

    /** Number of ranks the layout needs: dp·tp·pp. */
    public int worldSize() {
        return dp * tp * pp;
    }

    /** Size of an expert-data-parallel group (ranks holding the same experts): dp / ep. */
    public int expertDp() {
        return dp / ep;
    }

    /**
     * Checks that a world of {@code worldSize} ranks is the one this layout needs.
     *
     * @throws IllegalArgumentException if worldSize != dp·tp·pp; the message says which dp would fit, or how
     *         many ranks to launch
     */
    public void requireWorldSize(int worldSize) {
        if (worldSize == worldSize()) {
            return;
        }
        String fix = worldSize > 0 && worldSize % (tp * pp) == 0
                ? "use dp=" + worldSize / (tp * pp) + " for " + worldSize + " ranks, or launch " + worldSize()
                  + " ranks"
                : "launch " + worldSize() + " ranks, or choose tp·pp dividing " + worldSize;
        throw new IllegalArgumentException("world size " + worldSize + " does not match the layout's dp·tp·pp = "
                + dp + "·" + tp + "·" + pp + " = " + worldSize() + "; " + fix);
    }

    /**
     * Checks that the model can be cut this way: tp divides heads, hidden, ffnHidden and vocab, and divides kvHeads
     * or is a multiple of it (then each kv head is replicated on tp/kvHeads ranks, as Megatron does); there are
     * at least pp·vpp layers, one block or more per model chunk (pp·vpp need not divide layers: a pipeline cut or
     * automatic balancing gives chunks of unequal size; {@link #layersPerChunk} is the even split's); with
     * sequence parallelism tp divides the sequence length; ep divides the experts, and ep &gt; 1 only for a model
     * with experts. Reports every problem at once.
     *
     * @throws IllegalArgumentException listing each dimension that does not fit, with its value and a fix
     */
    public void validateFor(ModelDimensions model) {
        List<String> problems = new ArrayList<>();
        check(problems, "model.heads", model.heads(), "tp", tp);
        if (model.kvHeads() > 0 && model.kvHeads() % tp != 0 && tp % model.kvHeads() != 0) {
            StringJoiner ok = new StringJoiner(", ", "{", "}");
            for (int d = 1; d <= Math.max(model.heads(), model.kvHeads()); d++) {
                if (model.heads() % d == 0 && (model.kvHeads() % d == 0 || d % model.kvHeads() == 0)) ok.add(String.valueOf(d));
            }
            problems.add("tp=" + tp + " neither divides model.kvHeads=" + model.kvHeads() + " nor is a multiple of it "
                    + "(kv heads are split over the tp ranks, or each replicated on tp/kvHeads of them); use tp in " + ok);
        }
        check(problems, "model.hidden", model.hidden(), "tp", tp);
        check(problems, "model.ffnHidden", model.ffnHidden(), "tp", tp);
        if (model.vocab() % tp != 0) {
            int padded = Math.ceilDiv(model.vocab(), 64 * tp) * 64 * tp;
            problems.add("tp=" + tp + " does not divide model.vocab=" + model.vocab() + "; pad the vocabulary to "
                    + padded + " (a multiple of 64·tp, for GEMM efficiency)");
        }
        if (model.layers() < pp * vpp) {
            problems.add("pp·vpp=" + pp + "·" + vpp + "=" + pp * vpp + " model chunks but model.layers=" + model.layers()
                    + "; every chunk needs at least one block: use pp·vpp <= " + model.layers());
        }
        if (sequenceParallel) {
            check(problems, "model.sequence (with sequenceParallel)", model.sequence(), "tp", tp);
        }
        if (ep > 1 && model.experts() == 0) {
            problems.add("ep=" + ep + " but model.experts=0 (a dense model); use ep=1, or a mixture-of-experts model (model.moe, e.g. --preset moe-tiny)");
        } else {
            check(problems, "model.experts", model.experts(), "ep", ep);
        }
        if (!problems.isEmpty()) {
            throw new IllegalArgumentException("layout " + this + " does not fit the model: "
                    + String.join("; ", problems));
        }
    }

    /**
     * Transformer blocks in each model chunk: layers / (pp·vpp).
     *
     * @throws IllegalArgumentException if pp·vpp does not divide {@code layers}
     */
    public int layersPerChunk(int layers) {
        return divide("model.layers", layers, "pp·vpp", pp * vpp);
    }

    /**
     * First block of chunk {@code chunk} on stage {@code ppStage}; the chunk holds {@link #layersPerChunk} blocks
     * from there. Chunks are dealt round-robin over stages (Narayanan et al. 2021): with 8 layers, pp=2, vpp=2,
     * stage 0 holds blocks [0, 1] and [4, 5], stage 1 holds [2, 3] and [6, 7].
     *
     * @throws IllegalArgumentException if ppStage is outside [0, pp), chunk outside [0, vpp), or pp·vpp does not
     *         divide {@code layers}
     */
    public int firstLayer(int ppStage, int chunk, int layers) {
        requireIndex("ppStage", ppStage, "pp", pp);
        requireIndex("chunk", chunk, "vpp", vpp);
        return (chunk * pp + ppStage) * layersPerChunk(layers);
    }

    /**
     * Where {@code globalRank} sits in the layout.
     *
     * @throws IllegalArgumentException if globalRank is outside [0, worldSize)
     */
    public Coordinates coordinates(int globalRank) {
        requireIndex("globalRank", globalRank, "worldSize", worldSize());
        int tpRank = globalRank % tp;
        int dpRank = (globalRank / tp) % dp;
        int ppStage = globalRank / (tp * dp);
        return new Coordinates(tpRank, dpRank, ppStage, dpRank % ep, dpRank / ep);
    }

    /**
     * The global rank at {@code c}: tpRank + dpRank·tp + ppStage·tp·dp.
     *
     * @throws IllegalArgumentException if a coordinate is out of range for this layout, or epRank and
     *         expertDpRank are not those of dpRank (dpRank mod ep, dpRank / ep)
     */
    public int globalRank(Coordinates c) {
        requireIndex("tpRank", c.tpRank(), "tp", tp);
        requireIndex("dpRank", c.dpRank(), "dp", dp);
        requireIndex("ppStage", c.ppStage(), "pp", pp);
        if (c.epRank() != c.dpRank() % ep || c.expertDpRank() != c.dpRank() / ep) {
            throw new IllegalArgumentException(c + " is inconsistent with ep=" + ep + ": dpRank=" + c.dpRank()
                    + " has epRank=" + c.dpRank() % ep + " and expertDpRank=" + c.dpRank() / ep
                    + "; take coordinates from coordinates(globalRank)");
        }
        return c.tpRank() + c.dpRank() * tp + c.ppStage() * tp * dp;
    }

    /** The dp·pp tensor-parallel groups, each tp adjacent global ranks, numbered by smallest rank. */
    public List<List<Integer>> tensorParallelGroups() {
        return groups(GroupKind.TENSOR);
    }

    /** The tp·pp data-parallel groups (same tpRank and ppStage), each in dpRank order. */
    public List<List<Integer>> dataParallelGroups() {
        return groups(GroupKind.DATA);
    }

    /** The tp·dp pipeline groups (same tpRank and dpRank), each in ppStage order. */
    public List<List<Integer>> pipelineGroups() {
        return groups(GroupKind.PIPELINE);
    }

    /** The expert-parallel groups: ep consecutive dpRanks with the same tpRank and ppStage, in epRank order. */
    public List<List<Integer>> expertParallelGroups() {
        return groups(GroupKind.EXPERT);
    }

    /** The expert-data-parallel groups (same tpRank, ppStage and epRank), in expertDpRank order. */
    public List<List<Integer>> expertDataParallelGroups() {
        return groups(GroupKind.EXPERT_DATA);
    }

    /** The dp model-parallel groups: the tp·pp ranks of one replica, in (tpRank + ppStage·tp) order. */
    public List<List<Integer>> modelParallelGroups() {
        return groups(GroupKind.MODEL);
    }

    /**
     * The embedding groups: for each pipeline group, its first and last stage, which hold the tied input and
     * output embeddings and sum their gradients; a single rank when pp = 1.
     */
    public List<List<Integer>> embeddingGroups() {
        List<List<Integer>> out = new ArrayList<>();
        for (List<Integer> pipeline : pipelineGroups()) {
            out.add(pp == 1 ? List.of(pipeline.getFirst()) : List.of(pipeline.getFirst(), pipeline.getLast()));
        }
        return List.copyOf(out);
    }

    /** Members of every group of {@code kind}, group i at index i, each in key order. */
    List<List<Integer>> groups(GroupKind kind) {
        int count = kind.count(this);
        int size = kind.size(this);
        Integer[][] members = new Integer[count][size];
        for (int g = 0; g < worldSize(); g++) {
            Coordinates c = coordinates(g);
            members[kind.color(this, c)][kind.key(this, c)] = g;
        }
        List<List<Integer>> out = new ArrayList<>(count);
        for (Integer[] group : members) {
            out.add(List.of(group));
        }
        return List.copyOf(out);
    }

    /**
     * Where one rank sits in a {@link ParallelLayout}.
     *
     * @param tpRank rank in its tensor-parallel group, in [0, tp)
     * @param dpRank rank in its data-parallel group, in [0, dp)
     * @param ppStage pipeline stage, in [0, pp)
     * @param epRank rank in its expert-parallel group, dpRank mod ep
     * @param expertDpRank rank in its expert-data-parallel group, dpRank / ep
     */
    public record Coordinates(int tpRank, int dpRank, int ppStage, int epRank, int expertDpRank) {
        /** @throws IllegalArgumentException if a coordinate is negative */
        public Coordinates {
            if (tpRank < 0 || dpRank < 0 || ppStage < 0 || epRank < 0 || expertDpRank < 0) {
                throw new IllegalArgumentException("negative coordinate in tpRank=" + tpRank + ", dpRank=" + dpRank
                        + ", ppStage=" + ppStage + ", epRank=" + epRank + ", expertDpRank=" + expertDpRank);
            }
        }
    }

    /**
     * The model dimensions a layout has to divide, as plain numbers (no dependency on the model module). Error
     * messages name them {@code model.<component>}.
     *
     * @param layers transformer blocks (L)
     * @param hidden hidden size (C)
     * @param ffnHidden feed-forward hidden size (F)
     * @param heads query heads (NH)
     * @param kvHeads key/value heads (NKV; equal to heads without grouped-query attention)
     * @param vocab vocabulary size (V)
     * @param sequence sequence length (T)
     * @param experts experts per MoE layer, 0 for a dense model
     */
    public record ModelDimensions(int layers, int hidden, int ffnHidden, int heads, int kvHeads, int vocab,
                                  int sequence, int experts) {
        /** @throws IllegalArgumentException if a dimension is below 1 (experts below 0), naming it */
        public ModelDimensions {
            requireAtLeastOne("model.layers", layers, "a model has at least one block");
            requireAtLeastOne("model.hidden", hidden, "check the model config");
            requireAtLeastOne("model.ffnHidden", ffnHidden, "check the model config");
            requireAtLeastOne("model.heads", heads, "check the model config");
            requireAtLeastOne("model.kvHeads", kvHeads, "use kvHeads=heads without grouped-query attention");
            requireAtLeastOne("model.vocab", vocab, "check the tokenizer");
            requireAtLeastOne("model.sequence", sequence, "check the model config");
            if (experts < 0) {
                throw new IllegalArgumentException("model.experts=" + experts + " is negative; use 0 for a dense "
                        + "model");
            }
        }
    }

    private static void check(List<String> problems, String what, int value, String partsName, int parts) {
        try {
            divide(what, value, partsName, parts);
        } catch (IllegalArgumentException e) {
            problems.add(e.getMessage());
        }
    }

    private static void requireAtLeastOne(String field, int value, String fix) {
        if (value < 1) {
            throw new IllegalArgumentException(field + "=" + value + " must be at least 1; " + fix);
        }
    }

    /** Precondition: bound &gt;= 1. */
    private static void requireIndex(String field, int value, String boundName, int bound) {
        if (value < 0 || value >= bound) {
            throw new IllegalArgumentException(field + "=" + value + " is outside [0, " + boundName + "=" + bound
                    + ")");
        }
    }

    /** "{1, 2, 4, 8, 16}": the divisors of n (n &gt;= 0), the first twelve then "...". */
    private static String divisors(int n) {
        StringJoiner out = new StringJoiner(", ", "{", "}");
        int shown = 0;
        for (int d = 1; d <= n; d++) {
            if (n % d == 0) {
                if (shown == 12) {
                    out.add("...");
                    break;
                }
                out.add(Integer.toString(d));
                shown++;
            }
            if (d > 1 << 16 && shown > 0) {
                // Beyond 65536 a loop to n would be slow and the list is already long enough to guide a fix.
                out.add("...");
                break;
            }
        }
        return out.toString();
    }
}
