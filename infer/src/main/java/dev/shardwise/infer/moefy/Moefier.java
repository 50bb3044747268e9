package dev.shardwise.infer.moefy;

import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.memory.StepArena;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;
import dev.shardwise.data.BatchSampler;
import dev.shardwise.data.DatasetPreparer;
import dev.shardwise.model.Gpt;
import dev.shardwise.model.ModelConfig;
import dev.shardwise.train.Checkpoint;
import dev.shardwise.train.ConfigLoader;
import dev.shardwise.train.TrainConfig;
import dev.shardwise.train.TrainingData;

import java.io.IOException;
import java.io.PrintStream;
import java.lang.foreign.ValueLayout;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;

/**
 * MoEfication of a trained dense run (Zhang et al. 2022): splits every block's FFN into E experts by balanced
 * k-means on the neurons' input weights ({@link BalancedKMeans}; or at random, {@link RandomSplit}), permutes the neurons into expert order
 * ({@link ExpertPermutation}), runs the dense model over the run's training tokens to record each block's FFN inputs
 * and its experts' activation mass ({@link HiddenStateCollector}), fits one router per block ({@link RouterTrainer})
 * and writes the result as a {@link MoefiedModel}. Prints its progress to {@code log}.
 */
public final class Moefier {
    /**
     * What to build.
     *
     * @param experts      E, experts per block (must divide the FFN's F neurons)
     * @param split        how neurons are grouped into experts
     * @param routerHidden R, the router's hidden width (0: C/4, at least 1; per token the router costs R·(C + E)
     *                     multiply-adds against the FFN's 2·C·F = 8·C², so at R = C it alone costs as much as one of
     *                     8 experts; on tiny, R = C/4 gave the same losses as R = C)
     * @param routerSteps  Adam steps per router
     * @param routerBatch  rows per router step
     * @param routerTokens FFN inputs recorded per block (the last 10% held out to measure the router's recall)
     * @param lr           the routers' learning rate
     * @param seed         k-means, router init, token sampling and batches
     */
    public record Settings(int experts, Split split, int routerHidden, int routerSteps, int routerBatch, int routerTokens, double lr,
                           long seed) {
        public Settings {
            java.util.Objects.requireNonNull(split, "split");
            if (routerHidden < 0) throw new IllegalArgumentException("--router-hidden " + routerHidden + " must be 0 (= C/4) or positive");
            if (routerSteps < 1) throw new IllegalArgumentException("--router-steps " + routerSteps + " must be at least 1");
            if (routerBatch < 1) throw new IllegalArgumentException("router batch " + routerBatch + " must be at least 1");
            if (routerTokens < 20) throw new IllegalArgumentException("--router-tokens " + routerTokens + " must be at least 20");
            if (!(lr > 0)) throw new IllegalArgumentException("router learning rate " + lr + " must be positive");
        }
    }

    /** How the neurons are grouped: MoEfication's parameter clustering, or its random-split baseline. */
    public enum Split { KMEANS, RANDOM }

    /** k-means rounds at most (it stops earlier once no neuron moves). */
    private static final int KMEANS_ROUNDS = 50;

    private Moefier() { }

    /**
     * MoEfies run directory {@code run} (its newest checkpoint and its config.yaml) into {@code out}.
     *
     * @throws IOException              if the run, its checkpoint, config or data cannot be read, or out not written
     * @throws IllegalArgumentException if the model cannot be MoEfied as asked (E does not divide F, already MoE)
     */
    public static Path run(Path run, Path out, Settings s, PrintStream log) throws IOException {
        Path checkpoint = Checkpoint.resolve(run);
        Path configFile = runConfig(run, checkpoint);
        TrainConfig train = ConfigLoader.resolve(ConfigLoader.readYaml(configFile), configFile.toString(), Map.of());
        ModelConfig config = Checkpoint.modelConfig(checkpoint);
        if (config.moe() != null) {
            throw new IllegalArgumentException("the model of " + checkpoint + " is already a mixture of experts (model.moe: "
                    + config.moe().experts() + " experts); MoEfication splits dense FFNs, so pass a dense run");
        }
        ExpertWeights.checkExperts(config, s.experts());
        int e = s.experts(), f = config.ffnHidden(), c = config.hidden(), r = s.routerHidden() == 0 ? Math.max(1, c / 4) : s.routerHidden();
        MemoryPool pool = MemoryPool.unlimited("moefy");
        Map<String, Object> metadata = Checkpoint.metadata(checkpoint);
        log.printf(Locale.ROOT, "moefy: %s (step %s), %d blocks, %s FFN of %d neurons -> %d experts of %d%n", checkpoint,
                metadata.get("step"), config.layers(), config.mlp(), f, e, f / e);
        try (Gpt model = new Gpt(config, Gpt.declare(config).allocate(pool, DType.F32))) {
            Checkpoint.loadParameters(checkpoint, model.parameters());
            List<ExpertWeights> blocks = new ArrayList<>();
            for (int l = 0; l < config.layers(); l++) {
                long t0 = System.nanoTime();
                int[] assignment;
                String how;
                if (s.split() == Split.KMEANS) {
                    BalancedKMeans.Result k = BalancedKMeans.cluster(ExpertPermutation.neuronVectors(model.parameters(), config, l),
                            e, s.seed() + l, KMEANS_ROUNDS);
                    assignment = k.assignment();
                    how = String.format(Locale.ROOT, "balanced k-means in %d rounds (inertia %.4g)", k.rounds(), k.inertia());
                } else {
                    assignment = RandomSplit.assign(f, e, s.seed() + l);
                    how = "random split";
                }
                ExpertPermutation.apply(model.parameters(), config, l, ExpertPermutation.orderOf(assignment, e));
                blocks.add(ExpertWeights.of(model.parameters(), config, l, e));
                log.printf(Locale.ROOT, "  block %d: %s, neurons permuted into expert order (%.1f s)%n", l, how,
                        (System.nanoTime() - t0) / 1e9);
            }
            List<ExpertRouter> routers = new ArrayList<>();
            try (TrainingData data = TrainingData.open(train.data(), config.vocabSize(), log);
                 HiddenStateCollector collected = collect(model, blocks, data, train, s, pool, log)) {
                List<Map<String, Object>> recall = new ArrayList<>();
                for (int l = 0; l < config.layers(); l++) {
                    long t0 = System.nanoTime();
                    ExpertRouter router = ExpertRouter.create(pool, DType.F32, c, r, e, s.seed() * 31 + l);
                    routers.add(router);
                    RouterTrainer.Report rep = RouterTrainer.train(router, collected.inputs(l), collected.masses(l),
                            new RouterTrainer.Settings(s.routerSteps(), s.routerBatch(), s.lr(), 0.1, s.seed() + 1000L * l), pool);
                    log.printf(Locale.ROOT, "  router %d: loss %.4f -> %.4f over %d steps; held-out recall of the true top-%d "
                                    + "experts %.3f, top-%d %.3f (a fixed choice: %.3f, %.3f) (%.1f s)%n", l, rep.meanLoss(false),
                            rep.meanLoss(true), s.routerSteps(), rep.kQuarter(), rep.recallQuarter(), rep.kHalf(), rep.recallHalf(),
                            rep.staticQuarter(), rep.staticHalf(), (System.nanoTime() - t0) / 1e9);
                    Map<String, Object> row = new LinkedHashMap<>();
                    row.put("block", l);
                    row.put("k", List.of(rep.kQuarter(), rep.kHalf()));
                    row.put("recall", List.of(rep.recallQuarter(), rep.recallHalf()));
                    row.put("fixedChoiceRecall", List.of(rep.staticQuarter(), rep.staticHalf()));
                    row.put("loss", List.of(rep.meanLoss(false), rep.meanLoss(true)));
                    recall.add(row);
                }
                Map<String, Object> info = new LinkedHashMap<>();
                info.put("experts", e);
                info.put("split", s.split().name().toLowerCase(Locale.ROOT));
                info.put("routerHidden", r);
                info.put("routerSteps", s.routerSteps());
                info.put("routerTokens", collected.rows());
                info.put("run", run.toAbsolutePath().normalize().toString());
                info.put("checkpoint", checkpoint.toAbsolutePath().normalize().toString());
                info.put("routers", recall);
                List<Path> attachments = new ArrayList<>(List.of(configFile));
                Path tokenizer = checkpoint.resolve(DatasetPreparer.TOKENIZER_FILE);
                if (Files.isRegularFile(tokenizer)) attachments.add(tokenizer);
                Path written = MoefiedModel.write(out, model, routers, info, metadata, attachments);
                log.printf("wrote %s%n", written);
                return written;
            } finally {
                for (ExpertRouter router : routers) router.close();
            }
        }
    }

    /** The run's config.yaml: in {@code run}, or two levels above a checkpoint directory (run/checkpoints/step-N). */
    static Path runConfig(Path run, Path checkpoint) throws IOException {
        List<Path> tried = new ArrayList<>(List.of(run.resolve(MoefiedModel.CONFIG_FILE)));
        Path parent = checkpoint.toAbsolutePath().getParent();
        if (parent != null && parent.getParent() != null) tried.add(parent.getParent().resolve(MoefiedModel.CONFIG_FILE));
        for (Path p : tried) if (Files.isRegularFile(p)) return p;
        throw new IOException("no config.yaml for " + run + " (looked at " + tried + "); pass the run directory that "
                + "shardwise train --run-dir made");
    }

    /** Runs the dense model over training sequences (seeded sample) until every block has recorded its rows. */
    private static HiddenStateCollector collect(Gpt model, List<ExpertWeights> blocks, TrainingData data, TrainConfig train,
                                                Settings s, MemoryPool pool, PrintStream log) {
        int t = train.seqLen(), b = train.batchSize();
        HiddenStateCollector collector = new HiddenStateCollector(blocks, model.config().hidden(), s.routerTokens(), pool);
        BatchSampler sampler = new BatchSampler(data.train(), b, t, s.seed());
        long t0 = System.nanoTime();
        model.substituteFeedForward(collector);
        try (StepArena arena = new StepArena(pool)) {
            while (!collector.full()) {
                int[] batch = sampler.next();   // [B, T+1]
                Tensor tokens = arena.allocate(MemoryCategory.BUFFERS, DType.I32, b, t);
                for (int i = 0; i < b; i++) {
                    java.lang.foreign.MemorySegment.copy(batch, i * (t + 1), tokens.segment(), ValueLayout.JAVA_INT,
                            tokens.byteOffset() + 4L * i * t, t);
                }
                model.logits(arena, tokens);
                arena.reset();
            }
        } catch (RuntimeException e) {
            collector.close();
            throw e;
        } finally {
            model.substituteFeedForward(null);
        }
        log.printf(Locale.ROOT, "  recorded %d FFN inputs per block from the training tokens (%.1f s)%n", collector.rows(),
                (System.nanoTime() - t0) / 1e9);
        return collector;
    }
}
