package dev.shardwise.infer.moefy;

import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.memory.StepArena;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;
import dev.shardwise.infer.CachedGenerator;
import dev.shardwise.infer.RecomputingGenerator;
import dev.shardwise.model.Gpt;
import dev.shardwise.model.ModelConfig;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.junit.jupiter.api.Test;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.*;

/**
 * MoEfication's pieces against plain references: the neuron permutation keeps the dense function, K = E experts
 * give the dense loss, K < E experts give exactly the dense FFN with the unchosen neurons zeroed, balanced k-means
 * makes equal clusters, and a router's training loss falls.
 */
class MoefyTest {
    private final MemoryPool pool = MemoryPool.unlimited("rank 0");

    /** Odd shapes: C = 12, F = 30 (E = 5 of S = 6, or E = 3 of 10), 2 blocks; GELU with biases, SwiGLU without. */
    private static ModelConfig config(String kind) {
        return switch (kind) {
            case "gelu" -> new ModelConfig(29, 9, 2, 12, 3, 3, 30, ModelConfig.Norm.LAYER_NORM, ModelConfig.Mlp.GELU,
                    ModelConfig.Positions.LEARNED, ModelConfig.Residual.PRE_LN, true, false, 1e-5);
            case "swiglu" -> ModelConfig.llama(29, 9, 2, 12, 3, 3, 30);
            case "postln" -> new ModelConfig(29, 9, 2, 12, 3, 3, 30, ModelConfig.Norm.LAYER_NORM, ModelConfig.Mlp.GELU,
                    ModelConfig.Positions.LEARNED, ModelConfig.Residual.POST_LN, true, false, 1e-5);
            default -> throw new IllegalArgumentException(kind);
        };
    }

    private Tensor tokens(StepArena arena, ModelConfig config, int b, int t, long seed) {
        SplittableRandom random = new SplittableRandom(seed);
        Tensor tokens = arena.allocate(MemoryCategory.BUFFERS, DType.I32, b, t);
        for (int i = 0; i < b; i++) for (int j = 0; j < t; j++) tokens.set(random.nextInt(config.vocabSize()), i, j);
        return tokens;
    }

    /** Clusters and permutes every block of {@code model} into {@code experts} experts, as moefy does. */
    private static void moefy(Gpt model, int experts, long seed) {
        for (int l = 0; l < model.config().layers(); l++) {
            BalancedKMeans.Result k = BalancedKMeans.cluster(ExpertPermutation.neuronVectors(model.parameters(), model.config(), l),
                    experts, seed + l, 50);
            int[] order = ExpertPermutation.orderOf(k.assignment(), experts);
            boolean identity = true;
            for (int j = 0; j < order.length; j++) identity &= order[j] == j;
            assertFalse(identity, "block " + l + ": the clustering should move some neurons, or the test proves nothing");
            ExpertPermutation.apply(model.parameters(), model.config(), l, order);
        }
    }

    private MoefiedModel moefied(Gpt model, int experts, DType dtype, long seed) {
        List<ExpertRouter> routers = new ArrayList<>();
        for (int l = 0; l < model.config().layers(); l++) {
            routers.add(ExpertRouter.create(pool, dtype, model.config().hidden(), 7, experts, seed + l));
        }
        return new MoefiedModel(null, model, routers, experts, Map.of());
    }

    @ParameterizedTest
    @ValueSource(strings = {"gelu", "swiglu", "postln"})
    void permutationKeepsTheDenseLogitsInFloat64(String kind) {
        ModelConfig config = config(kind);
        try (Gpt model = Gpt.create(config, pool, DType.F64, 3); StepArena arena = new StepArena(pool)) {
            Tensor tokens = tokens(arena, config, 2, 9, 5);
            double[] before = model.logits(arena, tokens).toDoubleArray();
            moefy(model, 5, 11);
            double[] after = model.logits(arena, tokens).toDoubleArray();
            double worst = 0;
            for (int i = 0; i < before.length; i++) worst = Math.max(worst, Math.abs(before[i] - after[i]));
            assertTrue(worst < 1e-12, kind + ": permuted logits differ by " + worst + " (tolerance 1e-12, float64 round-off)");
        }
    }

    @ParameterizedTest
    @ValueSource(strings = {"gelu", "swiglu"})
    void withAllExpertsTheLossEqualsTheDenseModels(String kind) {
        ModelConfig config = config(kind);
        for (DType dtype : List.of(DType.F64, DType.F32)) {
            try (Gpt model = Gpt.create(config, pool, dtype, 4); StepArena arena = new StepArena(pool)) {
                moefy(model, 3, 2);
                Tensor tokens = tokens(arena, config, 3, 8, 6), targets = tokens(arena, config, 3, 8, 7);
                MoefiedModel m = moefied(model, 3, dtype, 9);
                double dense = model.evaluate(arena, tokens, targets);
                m.useActive(3);
                double sparse = model.evaluate(arena, tokens, targets);
                m.useActive(1);
                double one = model.evaluate(arena, tokens, targets);
                m.useActive(0);
                assertEquals(dense, sparse, 1e-6, kind + " " + dtype + ": K = E loss vs dense");
                assertNotEquals(dense, one, 1e-6, kind + " " + dtype + ": K = 1 of 3 should change the loss");
                assertEquals(dense, model.evaluate(arena, tokens, targets), 0, "useActive(0) restores the dense FFN");
                System.out.printf("%s %s: dense loss %.9f, K=E %.9f (diff %.2g), K=1 %.6f%n", kind, dtype, dense, sparse,
                        Math.abs(dense - sparse), one);
            }
        }
    }

    @ParameterizedTest
    @ValueSource(strings = {"gelu", "swiglu", "postln"})
    void cachedGenerationRunsTheSparseExpertsAsTheRecomputingOneDoes(String kind) {
        ModelConfig config = config(kind);
        try (Gpt model = Gpt.create(config, pool, DType.F32, 4)) {
            moefy(model, 3, 2);
            MoefiedModel m = moefied(model, 3, DType.F32, 9);
            m.useActive(1);
            try (CachedGenerator cached = new CachedGenerator(model, pool);
                 RecomputingGenerator recomputing = new RecomputingGenerator(model, pool)) {
                for (int token : new int[]{1, 5, 28, 7, 3, 3, 0}) {
                    float[] a = cached.feed(token), b = recomputing.feed(token);
                    for (int j = 0; j < a.length; j++) assertEquals(b[j], a[j], 1e-4, kind + " token " + token + " logit " + j);
                }
            }
            m.useActive(0);
        }
    }

    /** The plain reference: the whole dense FFN with the activations of neurons outside {@code chosen[n]} set to 0. */
    private static double[][] maskedReference(ModelConfig config, Gpt model, int layer, double[][] x, int[][] chosen, int experts) {
        String p = "h." + layer + ".mlp.";
        boolean gelu = config.mlp() == ModelConfig.Mlp.GELU;
        int f = config.ffnHidden(), c = config.hidden(), s = f / experts;
        double[] win = model.parameters().get(p + (gelu ? "fc" : "gate") + ".weight").value().toDoubleArray();
        double[] wup = gelu ? null : model.parameters().get(p + "up.weight").value().toDoubleArray();
        double[] wout = model.parameters().get(p + (gelu ? "proj" : "down") + ".weight").value().toDoubleArray();
        double[] bin = config.bias() ? model.parameters().get(p + (gelu ? "fc" : "gate") + ".bias").value().toDoubleArray() : new double[f];
        double[] bout = config.bias() ? model.parameters().get(p + (gelu ? "proj" : "down") + ".bias").value().toDoubleArray() : new double[c];
        double[][] y = new double[x.length][c];
        for (int n = 0; n < x.length; n++) {
            double[] a = new double[f];
            for (int j = 0; j < f; j++) {
                double h = bin[j], u = 0;
                for (int i = 0; i < c; i++) {
                    h += x[n][i] * win[j * c + i];
                    if (!gelu) u += x[n][i] * wup[j * c + i];
                }
                a[j] = gelu ? 0.5 * h * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (h + 0.044715 * h * h * h))) : h / (1 + Math.exp(-h)) * u;
            }
            for (int j = 0; j < f; j++) {
                int expert = j / s;
                if (Arrays.stream(chosen[n]).noneMatch(e -> e == expert)) a[j] = 0;
            }
            for (int o = 0; o < c; o++) {
                double sum = bout[o];
                for (int j = 0; j < f; j++) sum += a[j] * wout[o * f + j];
                y[n][o] = sum;
            }
        }
        return y;
    }

    @ParameterizedTest
    @ValueSource(strings = {"gelu", "swiglu"})
    void sparseForwardEqualsAReferenceThatZeroesTheUnchosenNeurons(String kind) {
        ModelConfig config = config(kind);
        int experts = 5, rows = 7;
        try (Gpt model = Gpt.create(config, pool, DType.F64, 8); StepArena arena = new StepArena(pool)) {
            moefy(model, experts, 4);
            MoefiedModel m = moefied(model, experts, DType.F64, 3);
            SplittableRandom random = new SplittableRandom(12);
            double[][] x = new double[rows][config.hidden()];
            Tensor xt = arena.allocate(DType.F64, rows, config.hidden());
            for (int n = 0; n < rows; n++) for (int i = 0; i < config.hidden(); i++) xt.set(x[n][i] = random.nextGaussian(), n, i);
            int checked = 0;
            for (int layer = 0; layer < config.layers(); layer++) {
                ExpertWeights weights = ExpertWeights.of(model.parameters(), config, layer, experts);
                for (int k = 1; k <= experts; k++) {
                    // the router's choice through the substitute, and a hand-made one with an expert no row picked
                    SparseExpertFeedForward sparse = new SparseExpertFeedForward(List.of(weights, weights),
                            List.of(routerOf(m, layer), routerOf(m, layer)), k);
                    int[][] routed = ExpertRouter.topK(routerOf(m, layer).scores(arena, xt), k);
                    compare(kind + " block " + layer + " K=" + k + " routed", sparse.forward(arena, layer, xt),
                            maskedReference(config, model, layer, x, routed, experts));
                    int[][] skewed = new int[rows][];
                    for (int n = 0; n < rows; n++) {
                        skewed[n] = new int[k];
                        for (int j = 0; j < k; j++) skewed[n][j] = (n % 2 + j) % experts;   // experts {0..K-1} or {1..K}
                    }
                    compare(kind + " block " + layer + " K=" + k + " fixed", weights.forwardSparse(arena, xt, skewed),
                            maskedReference(config, model, layer, x, skewed, experts));
                    checked += 2;
                }
            }
            assertEquals(2 * config.layers() * experts, checked);
        }
    }

    private static ExpertRouter routerOf(MoefiedModel m, int layer) {
        try {
            var f = MoefiedModel.class.getDeclaredField("routers");
            f.setAccessible(true);
            return ((List<ExpertRouter>) f.get(m)).get(layer);
        } catch (ReflectiveOperationException e) {
            throw new AssertionError(e);
        }
    }

    private static void compare(String what, Tensor got, double[][] want) {
        double worst = 0;
        for (int n = 0; n < want.length; n++) {
            for (int o = 0; o < want[n].length; o++) worst = Math.max(worst, Math.abs(got.getDouble(n, o) - want[n][o]));
        }
        assertTrue(worst < 1e-12, what + ": sparse vs masked reference max abs diff " + worst + " (tolerance 1e-12)");
    }

    @Test
    void balancedKMeansMakesEqualClustersAndFindsSeparatedGroups() {
        SplittableRandom random = new SplittableRandom(1);
        int groups = 4, per = 6, d = 5;
        double[][] v = new double[groups * per][d];
        int[] truth = new int[v.length];
        for (int i = 0; i < v.length; i++) {
            truth[i] = (i * 7) % groups;   // interleaved, so the order alone does not give the answer
            for (int j = 0; j < d; j++) v[i][j] = (j == truth[i] ? 10 : 0) + 0.1 * random.nextGaussian();
        }
        BalancedKMeans.Result r = BalancedKMeans.cluster(v, groups, 3, 50);
        int[] sizes = new int[groups];
        for (int a : r.assignment()) sizes[a]++;
        for (int s : sizes) assertEquals(per, s, "cluster sizes " + Arrays.toString(sizes));
        for (int i = 0; i < v.length; i++) {
            for (int j = 0; j < v.length; j++) {
                assertEquals(truth[i] == truth[j], r.assignment()[i] == r.assignment()[j], "vectors " + i + " and " + j);
            }
        }
        assertThrows(IllegalArgumentException.class, () -> BalancedKMeans.cluster(v, 5, 3, 50));
        int[] shuffled = RandomSplit.assign(24, 4, 9);
        int[] randomSizes = new int[4];
        for (int a : shuffled) randomSizes[a]++;
        assertArrayEquals(new int[]{6, 6, 6, 6}, randomSizes, "random split sizes");
        assertFalse(Arrays.equals(shuffled, RandomSplit.assign(24, 4, 10)), "the seed changes the split");
    }

    @Test
    void routerTrainingLossFallsAndItsRecallBeatsChance() {
        ModelConfig config = config("gelu");
        int experts = 5, m = 2000;
        try (Gpt model = Gpt.create(config, pool, DType.F32, 21); StepArena arena = new StepArena(pool)) {
            moefy(model, experts, 1);
            ExpertWeights weights = ExpertWeights.of(model.parameters(), config, 0, experts);
            SplittableRandom random = new SplittableRandom(2);
            Tensor x = arena.allocate(DType.F32, m, config.hidden());
            for (int n = 0; n < m; n++) for (int i = 0; i < config.hidden(); i++) x.set(random.nextGaussian(), n, i);
            Tensor mass = arena.allocate(DType.F32, m, experts);
            weights.forwardDense(arena, x, mass);
            try (ExpertRouter router = ExpertRouter.create(pool, DType.F32, config.hidden(), 32, experts, 5)) {
                RouterTrainer.Report r = RouterTrainer.train(router, x, mass, new RouterTrainer.Settings(400, 64, 3e-3, 0.1, 7), pool);
                double first = r.meanLoss(false), last = r.meanLoss(true);
                System.out.printf("router loss %.4f -> %.4f, recall@%d %.3f, @%d %.3f%n", first, last, r.kQuarter(),
                        r.recallQuarter(), r.kHalf(), r.recallHalf());
                assertTrue(last < 0.5 * first, "router loss should at least halve: " + first + " -> " + last);
                assertTrue(r.recallHalf() > 2.0 / experts + 0.2, "recall@2 of 5 " + r.recallHalf() + " should beat chance (0.4) clearly");
            }
        }
    }

    @Test
    void aModelWithASubstituteRefusesBackward() {
        ModelConfig config = config("gelu");
        try (Gpt model = Gpt.create(config, pool, DType.F64, 2); StepArena arena = new StepArena(pool)) {
            MoefiedModel m = moefied(model, 5, DType.F64, 1);
            m.useActive(2);
            Tensor tokens = tokens(arena, config, 1, 9, 1), targets = tokens(arena, config, 1, 9, 2);
            Gpt.Pass pass = model.forward(arena, tokens, targets, 1);
            IllegalStateException e = assertThrows(IllegalStateException.class, () -> model.backward(arena, pass));
            assertTrue(e.getMessage().contains("substitute"), e.getMessage());
        }
    }
}
