package dev.shardwise.model;

import dev.shardwise.core.memory.StepArena;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;
import dev.shardwise.model.optim.ParameterUpdate;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.SplittableRandom;
import java.util.function.BiConsumer;

/**
 * The router of a mixture of experts: logits z = x·W_rᵀ [N, E], probabilities p = softmax(z), the top-k experts of
 * each token and their gates (Switch, Fedus et al. 2021: k = 1, g = p_e; GShard, Lepikhin et al. 2020: k >= 2,
 * g_j = p_j / Σ_selected p; noisy top-k, Shazeer et al. 2017: h = z + ε·softplus(x·W_noiseᵀ) with ε ~ N(0, 1) while
 * training, top-k of h, g = softmax over the kept h), and the auxiliary losses: the load-balancing loss
 * α·E·Σ_e f_e·P_e (f_e: share of the N·k assignments that chose e; P_e: mean p_e) and the z-loss
 * β·mean_n(logsumexp(z_n))² (Zoph et al. 2022). With loss-free balancing (Wang et al. 2024; DeepSeek-V3) a
 * per-expert bias {@code name.balance_bias} [E] is added to the logits for the choice only (top-k of z + b, gates
 * from the unbiased p): b_e multiplies every token's p_e by exp(b_e) alike, whatever the token's confidence, where a
 * bias on the probabilities would sway a token with flat p and not one with a peaked p. It is no trainable parameter
 * (its gradient stays 0 and it has no weight decay, so AdamW's moments stay 0 and AdamW leaves it alone) but lives in
 * the parameter set so checkpoints (once, under its global name), pipelines and ZeRO carry it; its update goes through
 * {@link ParameterUpdate#addToValues}, which under ZeRO 3 adds to each rank's shard of it.
 *
 * <p>The routing arithmetic runs in float64 on the heap over [N, E] (E is small); only the two GEMMs touch tensors.
 * The noise sample of a token is keyed by its row's contents (so it is the same when a full-recompute block reruns
 * forward, and wherever the token is routed), the layer's name and the run's noise seed.
 */
final class MoeRouter {
    private final MoeConfig moe;
    private final Linear router;   // C -> E
    private final Linear noise;    // C -> E, noisy gate only
    private final Parameter bias;  // [E], balance bias only
    private final long salt;

    /**
     * One forward's routing, float64 on the heap.
     *
     * @param z       logits [N·E]
     * @param p       softmax(z) [N·E]
     * @param lse     logsumexp(z_n) [N]
     * @param u       x·W_noiseᵀ [N·E] (noisy gate), else null
     * @param eps     the noise sample [N·E] (noisy gate; zeros when not training), else null
     * @param choice  the experts of token n, best first, at [n·k, n·k + k)
     * @param gate    their gates [N·k]
     * @param counts  assignments per expert [E] (before capacity)
     * @param balance E·Σ_e f_e·P_e, 1 when perfectly balanced
     * @param zLoss   mean_n lse_n²
     * @param spread  Σ_n Σ_e (h_{n,e} - mean_e h_{n,e})² over the choice scores h (the logits, plus the noise under
     *                the noisy gate): how far apart a token's experts' scores are (the router's sharpness)
     */
    record Routing(int n, double[] z, double[] p, double[] lse, double[] u, double[] eps, int[] choice, double[] gate,
                   long[] counts, double balance, double zLoss, double spread) { }

    static void declare(ParameterSet.Builder builder, String name, ModelConfig config, MoeConfig moe) {
        Linear.declare(builder, name + ".weight_router", config.hidden(), moe.experts(), false, GptInit.STD);
        if (moe.gate() == MoeConfig.Gate.NOISY) Linear.declare(builder, name + ".weight_noise", config.hidden(), moe.experts(), false, GptInit.STD);
        if (moe.balance() == MoeConfig.Balance.BIAS) builder.declare(name + ".balance_bias", new ParameterSet.Init.Constant(0), false, moe.experts());
    }

    MoeRouter(ParameterSet params, String name, MoeConfig moe) {
        this.moe = moe;
        this.router = new Linear(params, name + ".weight_router", false);
        this.noise = moe.gate() == MoeConfig.Gate.NOISY ? new Linear(params, name + ".weight_noise", false) : null;
        this.bias = moe.balance() == MoeConfig.Balance.BIAS ? params.get(name + ".balance_bias") : null;
        this.salt = name.hashCode() * 0x9E3779B97F4A7C15L;
    }

    /** The weighted auxiliary loss of a routing: α·balance (balance aux) + β·z-loss. */
    double auxLoss(Routing r) {
        return (moe.balance() == MoeConfig.Balance.AUX ? moe.auxWeight() * r.balance : 0) + moe.zLossWeight() * r.zLoss;
    }

    /** Routes x [N, C]; the logits GEMMs' outputs go in {@code arena}. */
    Routing route(StepArena arena, Tensor x, MoeRun run) {
        int n = x.dim(0), e = moe.experts(), k = moe.topK();
        double[] z = router.forward(arena, x).toDoubleArray();
        double[] p = new double[n * e], lse = new double[n];
        double[] u = noise == null ? null : noise.forward(arena, x).toDoubleArray();
        double[] eps = noise == null ? null : new double[n * e];
        double[] h = noise == null ? z : new double[n * e];   // the choice scores: the logits (plus the noise under the noisy gate)
        double[] b = bias == null ? null : bias.value().toDoubleArray();
        int[] choice = new int[n * k];
        double[] gate = new double[n * k];
        boolean training = run.training(), keyedByRow = run.noiseKeyedByRow();
        long seed = run.noiseSeed();
        // each token's row of every array is its own: blocks of tokens run in parallel, the same arithmetic as one by one
        MoeRows.forBlocks(n, (lo, hi) -> {
            boolean[] taken = new boolean[e];
            for (int i = lo; i < hi; i++) {
                double max = Double.NEGATIVE_INFINITY;
                for (int j = 0; j < e; j++) max = Math.max(max, z[i * e + j]);
                double sum = 0;
                for (int j = 0; j < e; j++) {
                    p[i * e + j] = Math.exp(z[i * e + j] - max);
                    sum += p[i * e + j];
                }
                for (int j = 0; j < e; j++) p[i * e + j] /= sum;
                lse[i] = max + Math.log(sum);
                if (noise != null) {
                    if (training) {
                        long key = keyedByRow ? i : rowHash(x, i);
                        SplittableRandom random = new SplittableRandom(seed ^ salt ^ (key * 0xBF58476D1CE4E5B9L));
                        for (int j = 0; j < e; j++) eps[i * e + j] = random.nextGaussian();
                    }
                    for (int j = 0; j < e; j++) h[i * e + j] = z[i * e + j] + eps[i * e + j] * softplus(u[i * e + j]);
                }
                java.util.Arrays.fill(taken, false);
                for (int s = 0; s < k; s++) {   // the s-th best score; ties go to the lower expert index
                    int best = -1;
                    double bestScore = Double.NEGATIVE_INFINITY;
                    for (int j = 0; j < e; j++) {
                        double score = h[i * e + j] + (b == null ? 0 : b[j]);
                        if (!taken[j] && (best < 0 || score > bestScore)) {
                            best = j;
                            bestScore = score;
                        }
                    }
                    taken[best] = true;
                    choice[i * k + s] = best;
                }
                gates(i, e, k, p, h, choice, gate);
            }
        });
        long[] counts = new long[e];
        for (int c : choice) counts[c]++;
        double balance = 0, zLoss = 0, spread = 0;
        for (int i = 0; i < n; i++) {
            double mean = 0;
            for (int j = 0; j < e; j++) mean += h[i * e + j];
            mean /= e;
            for (int j = 0; j < e; j++) spread += (h[i * e + j] - mean) * (h[i * e + j] - mean);
        }
        for (int j = 0; j < e; j++) {
            double mean = 0;
            for (int i = 0; i < n; i++) mean += p[i * e + j];
            balance += counts[j] / ((double) n * k) * (mean / n);
        }
        balance *= e;
        for (int i = 0; i < n; i++) zLoss += lse[i] * lse[i];
        zLoss /= n;
        return new Routing(n, z, p, lse, u, eps, choice, gate, counts, balance, zLoss, spread);
    }

    /** Token i's gates from its choice: Switch's p_e, GShard's renormalised p, or the noisy gate's softmax over h. */
    private void gates(int i, int e, int k, double[] p, double[] h, int[] choice, double[] gate) {
        if (noise != null) {
            double max = Double.NEGATIVE_INFINITY, sum = 0;
            for (int s = 0; s < k; s++) max = Math.max(max, h[i * e + choice[i * k + s]]);
            for (int s = 0; s < k; s++) sum += Math.exp(h[i * e + choice[i * k + s]] - max);
            for (int s = 0; s < k; s++) gate[i * k + s] = Math.exp(h[i * e + choice[i * k + s]] - max) / sum;
        } else if (k == 1) {
            gate[i] = p[i * e + choice[i]];
        } else {
            double sum = 0;
            for (int s = 0; s < k; s++) sum += p[i * e + choice[i * k + s]];
            for (int s = 0; s < k; s++) gate[i * k + s] = p[i * e + choice[i * k + s]] / sum;
        }
    }

    /**
     * Writes dx [N, C] = dz·W_r (+ du·W_noise) and accumulates dW_r (dW_noise), queued on {@code weights} when not
     * null, from the gates' gradient {@code dgate} [N·k] and the auxiliary losses scaled by {@code scale}.
     */
    void backward(StepArena arena, Tensor dx, Tensor x, Routing r, double[] dgate, double scale, WeightGradients weights) {
        int n = r.n, e = moe.experts(), k = moe.topK();
        double[] dz = new double[n * e], du = noise != null ? new double[n * e] : null;
        double auxPerP = moe.balance() == MoeConfig.Balance.AUX ? scale * moe.auxWeight() * e / n : 0;
        double zPerP = scale * moe.zLossWeight() * 2 / n;
        MoeRows.forBlocks(n, (lo, hi) -> {   // token rows of dz and du are independent
            double[] dp = new double[e];
            for (int i = lo; i < hi; i++) {
                java.util.Arrays.fill(dp, 0);
                if (noise != null) {
                    // g = softmax(h_selected): dh_s = g_s·(dg_s - Σ_t g_t·dg_t); h = z + ε·softplus(u)
                    double t = 0;
                    for (int s = 0; s < k; s++) t += r.gate[i * k + s] * dgate[i * k + s];
                    for (int s = 0; s < k; s++) {
                        int j = r.choice[i * k + s];
                        double dh = r.gate[i * k + s] * (dgate[i * k + s] - t);
                        dz[i * e + j] += dh;
                        du[i * e + j] += dh * r.eps[i * e + j] * sigmoid(r.u[i * e + j]);
                    }
                } else if (k == 1) {
                    dp[r.choice[i]] += dgate[i];   // g = p_e
                } else {
                    // g_s = p_s / S: dp_s = (dg_s - Σ_t dg_t·g_t) / S
                    double sum = 0, t = 0;
                    for (int s = 0; s < k; s++) {
                        sum += r.p[i * e + r.choice[i * k + s]];
                        t += dgate[i * k + s] * r.gate[i * k + s];
                    }
                    for (int s = 0; s < k; s++) dp[r.choice[i * k + s]] += (dgate[i * k + s] - t) / sum;
                }
                // balance: d(α·E·Σ f_e·P_e)/dp_{i,e} = α·E·f_e/N
                if (auxPerP != 0) for (int j = 0; j < e; j++) dp[j] += auxPerP * r.counts[j] / ((double) n * k);
                // p = softmax(z): dz = p ∘ (dp - Σ dp∘p); z-loss: d(β·mean lse²)/dz = 2β·lse·p / N
                double t = 0;
                for (int j = 0; j < e; j++) t += dp[j] * r.p[i * e + j];
                for (int j = 0; j < e; j++) {
                    dz[i * e + j] += r.p[i * e + j] * (dp[j] - t) + zPerP * r.lse[i] * r.p[i * e + j];
                }
            }
        });
        Tensor dzT = arena.allocateForOverwrite(x.dtype(), n, e).copyFrom(dz);
        router.backward(dx, dzT, x, weights);
        if (noise != null) noise.backwardAdd(dx, arena.allocateForOverwrite(x.dtype(), n, e).copyFrom(du), x, weights);
    }

    /**
     * Loss-free balancing's update after a step (Wang et al. 2024; DeepSeek-V3): b_e += γ·(mean load - load_e) / mean
     * load, a step proportional to each expert's relative load error, added through {@code addToValues} (to whole
     * values, or to this rank's shard of them under ZeRO 3: {@link ParameterUpdate#addToValues}). No-op unless
     * balance is bias, or when no token was routed.
     */
    void updateBias(double[] load, BiConsumer<Parameter, double[]> addToValues) {
        if (bias == null) return;
        double mean = 0;
        for (double l : load) mean += l;
        mean /= load.length;
        if (mean == 0) return;
        double[] delta = new double[load.length];
        for (int j = 0; j < load.length; j++) delta[j] = moe.biasRate() * (mean - load[j]) / mean;
        addToValues.accept(bias, delta);
    }

    /** A hash of row i's bits. */
    private static long rowHash(Tensor x, int i) {
        int c = x.dim(1);
        MemorySegment s = x.segment();
        long h = 0xcbf29ce484222325L;
        if (x.dtype() == DType.F32) {
            long off = x.byteOffset() + 4L * i * c;
            for (int j = 0; j < c; j++) h = (h ^ s.get(ValueLayout.JAVA_INT, off + 4L * j)) * 0x100000001b3L;
        } else {
            long off = x.byteOffset() + 8L * i * c;
            for (int j = 0; j < c; j++) h = (h ^ s.get(ValueLayout.JAVA_LONG, off + 8L * j)) * 0x100000001b3L;
        }
        return h;
    }

    private static double softplus(double v) {
        return v > 0 ? v + Math.log1p(Math.exp(-v)) : Math.log1p(Math.exp(v));
    }

    private static double sigmoid(double v) {
        return 1 / (1 + Math.exp(-v));
    }
}
