package dev.shardwise.cli;

import dev.shardwise.comm.RankEnvironment;
import dev.shardwise.core.memory.MemoryBudgetExceededException;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.train.MemoryReport;
import dev.shardwise.train.ConfigLoader;
import dev.shardwise.train.TrainConfig;
import dev.shardwise.train.FittingLayouts;
import dev.shardwise.train.Trainer;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

import java.io.IOException;
import java.io.PrintWriter;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.Callable;

/** {@code shardwise train}: train a GPT on one rank from a preset, a YAML config and flags. */
@Command(name = "train", mixinStandardHelpOptions = true,
        description = {"Train a GPT or LLaMA-style language model from a preset, a YAML config and flags.",
                "Without --data it uses the bundled tiny Shakespeare, prepared (tokenizer included) once into "
                        + "~/.cache/shardwise.",
                "The run directory gets config.yaml, metrics.jsonl (one JSON object per step), loss.png and "
                        + "checkpoints/; --resume continues a stopped run bit for bit.",
                "Mixture of experts: --preset moe-tiny, or a YAML model.moe: {experts, topK, every, capacityFactor "
                        + "(0: dropless), balance: aux|bias|none, sharedExperts, expertHidden, gate: softmax|noisy, "
                        + "auxWeight, zLossWeight, biasRate}; metrics.jsonl then has aux_loss and the expert load "
                        + "(moe_load_max, moe_load_mean, moe_load_max_over_mean: the worst layer's, _layers: the mean over layers, "
                        + "_50 and _layers_50: of the load summed over the last 50 steps, moe_dropped) and moe_router_spread."},
        footer = {"", "Examples:", "  shardwise train --preset tiny --steps 20",
                "  shardwise train --config configs/tiny-shakespeare.yaml --run-dir runs/a",
                "  shardwise train --config configs/tiny-shakespeare.yaml --run-dir runs/a --resume",
                "  shardwise train --preset moe-tiny --moe-balance bias --steps 200", ""})
public final class TrainCommand implements Callable<Integer> {
    @Option(names = "--config", paramLabel = "FILE", description = "YAML config; flags override its keys.")
    Path config;

    @Option(names = "--preset", paramLabel = "NAME", description = "Model preset: tiny, gpt2-124m, gpt2-350m, llama-tiny, moe-tiny (default: tiny).")
    String preset;

    @Option(names = "--moe-balance", paramLabel = "aux|bias|none", description = "Expert load balancing of a "
            + "mixture-of-experts model (YAML model.moe.balance): the auxiliary loss, DeepSeek-V3's loss-free bias, or none.")
    String moeBalance;

    @Option(names = "--data", paramLabel = "DIR", description = "Directory written by 'shardwise prepare'.")
    Path data;

    @Option(names = "--steps", paramLabel = "N", description = "Optimizer steps.")
    Integer steps;

    @Option(names = "--seed", paramLabel = "S", description = "Seed for initialisation and data order.")
    Long seed;

    @Option(names = "--run-dir", paramLabel = "DIR", description = "Run directory (default: runs/<preset>).")
    Path runDir;

    @Option(names = "--resume", description = "Continue from the run directory's newest intact checkpoint (damaged newer "
            + "ones are passed over, with a line saying which and why).")
    boolean resume;

    @Option(names = "--resume-from", paramLabel = "step-N", description = "Continue from this checkpoint of the run "
            + "directory (step-N, N, or a path); implies --resume.")
    String resumeFrom;

    @Option(names = "--init-from", paramLabel = "DIR", description = "Start from the weights of a Hugging Face GPT-2 directory "
            + "(model.safetensors + config.json, as ckpt export writes); the model keys must match its config.json.")
    Path initFrom;

    @Option(names = "--async-checkpoints", description = "Save checkpoints in the background: each rank copies its shard to host "
            + "buffers and trains on while a writer persists it (metrics.jsonl reports checkpoint_stall_ms).")
    Boolean asyncCheckpoints;

    @Option(names = "--keep-checkpoints", paramLabel = "K", description = "Keep only the K newest checkpoints (default 0: keep all).")
    Integer keepCheckpoints;

    @Option(names = "--micro-batch", paramLabel = "B", description = "Sequences per micro-batch.")
    Integer microBatch;

    @Option(names = "--global-batch", paramLabel = "G",
            description = "Sequences per optimizer step over all data-parallel ranks; a multiple of --micro-batch × dp, the "
                    + "quotient being the micro-batches each step runs (gradient accumulation; a pipeline's m).")
    Integer globalBatch;

    @Option(names = "--seq-len", paramLabel = "T", description = "Tokens per sequence.")
    Integer seqLen;

    @Option(names = "--lr", paramLabel = "LR", description = "Peak learning rate.")
    Double lr;

    @Option(names = "--eval-every", paramLabel = "N", description = "Steps between validation losses.")
    Integer evalEvery;

    @Option(names = "--checkpoint-every", paramLabel = "N", description = "Steps between checkpoints.")
    Integer checkpointEvery;

    @Option(names = "--ranks", paramLabel = "N",
            description = "Ranks (world size, dp × tp × pp) as threads of this JVM, each with its share of the cores and its own memory pool. "
                    + "Under a launcher (shardwise launch, mpirun, srun) each process is one rank instead, and N defaults to their number.")
    Integer ranks;

    @Option(names = "--dp", paramLabel = "N",
            description = "Data-parallel size; default ranks / (tp × pp). Without --ranks, ranks = dp × tp × pp.")
    Integer dp;

    @Option(names = "--tp", paramLabel = "N", description = "Tensor-parallel size: each block's attention heads and MLP features, and the vocabulary of the tied "
            + "embedding and head, split over N adjacent ranks (Megatron); must divide the heads and kv heads.")
    Integer tp;

    @Option(names = "--sequence-parallel", description = "Sequence parallelism (Korthikanti et al. 2022; needs --tp >= 2): the norms, "
            + "residual sums and embedding output, which tensor parallelism leaves replicated, hold T/tp positions per rank, with an "
            + "all-gather before and a reduce-scatter after each tensor-parallel region instead of the all-reduces (YAML sequenceParallel).")
    Boolean sequenceParallel;

    @Option(names = "--pp", paramLabel = "N", description = "Pipeline stages: the model is cut into N stages that work on different micro-batches at once "
            + "(micro-batches per step m = --global-batch / (--micro-batch × dp); m ≥ 4·pp keeps the bubble small).")
    Integer pp;

    @Option(names = "--vpp", paramLabel = "N", description = "Model chunks per pipeline stage (interleaved 1F1B); needs --pp 2 or more.")
    Integer vpp;

    @Option(names = "--ep", paramLabel = "N", description = "Expert-parallel size (GShard): N consecutive data-parallel ranks split "
            + "each MoE block's experts (E/N each) and send every token to its experts' rank and back by all-to-alls; must "
            + "divide dp and the experts; any ZeRO stage, the experts sharded over the dp/N ranks holding them (YAML key ep).")
    Integer ep;

    @Option(names = "--schedule", paramLabel = "NAME",
            description = "Pipeline schedule: gpipe, 1f1b, interleaved, zb-h1 (default: interleaved with --vpp 2+, else 1f1b).")
    String schedule;

    @Option(names = "--pipeline-cut", paramLabel = "BLOCK", split = ",",
            description = "First block of each of the pp × vpp model chunks, e.g. 0,3,6 (default: balanced automatically).")
    List<Integer> pipelineCut;

    @Option(names = "--recompute", paramLabel = "POLICY",
            description = "Activation recompute: none, selective (the attention core is recomputed in backward), full (each "
                    + "block's forward is rerun in its backward); the results are the same bits, the activations smaller.")
    String recompute;

    @Option(names = "--recompute-every", paramLabel = "K", description = "Apply --recompute to every K-th block (default 1).")
    Integer recomputeEvery;

    @Option(names = "--zero", paramLabel = "STAGE",
            description = {"ZeRO stage over the ranks: 0 replicates everything (16 bytes/parameter), 1 shards the AdamW state,",
                    "2 the gradients too, 3 the parameters too (gathered unit by unit around forward and backward)."})
    Integer zero;

    @Option(names = "--offload-optimizer", paramLabel = "DIR",
            description = "Keep each rank's AdamW moments in a memory-mapped file in DIR, streamed through a small buffer "
                    + "each update (ZeRO-Infinity's optimizer offload; needs --zero 1, 2 or 3).")
    Path offloadOptimizer;

    @Option(names = "--timeline", paramLabel = "FILE",
            description = "Write the last step's executed schedule, one row per pipeline stage, as a Chrome trace "
                    + "(open it in https://ui.perfetto.dev or chrome://tracing); under --ep each MoE all-to-all (dispatch, "
                    + "combine and their gradients) is a span of its own.")
    Path timeline;

    @Option(names = "--precision", paramLabel = "P",
            description = {"Weight products in fp32 (default) or bf16: bf16 operands through oneDNN (libdnnl2) with fp32",
                    "accumulation, fp32 master weights, gradients and AdamW, matmul inputs kept in bf16 for backward;",
                    "norms, softmax and the loss stay fp32 (Megatron's bf16 recipe, no loss scaling). Checkpoints keep",
                    "the fp32 masters, so a run resumes in either precision. YAML key precision."})
    String precision;

    @Option(names = "--checkpoint-at-start", description = "Also save the initial weights as checkpoint step 0.")
    Boolean checkpointAtStart;

    @Option(names = "--no-checkpoints", description = "Save no checkpoints (YAML saveCheckpoints: false): today's checkpoint "
            + "gathers the whole model state on one rank, more than a rank of a model split to fit its budget can hold.")
    boolean noCheckpoints;

    @Option(names = "--rank-memory", paramLabel = "SIZE", description = "Memory budget of the rank, e.g. 8g.")
    String rankMemory;

    @Option(names = "--parallel", paramLabel = "auto",
            description = "auto: choose dp, tp (with or without sequence parallelism), pp, vpp, ep (mixture of experts), micro-batch, "
                    + "ZeRO stage, recompute and schedule for --ranks from a profile of the model's pieces on this machine (the planner's local cost "
                    + "model, as 'bench planner' checks it), within --rank-memory; prints the ranked layouts, then trains the "
                    + "fastest and reports its predicted beside its measured step time and memory.")
    String parallel;

    @Option(names = "--dry-run", description = "Print the resolved config, its layout and the memory it needs, then stop.")
    boolean dryRun;

    @CommandLine.Spec
    CommandLine.Model.CommandSpec spec;

    @Override
    public Integer call() throws IOException {
        PrintWriter out = spec.commandLine().getOut();
        RankEnvironment job = RankEnvironment.current();   // rank 0 of 1 unless a launcher started this process
        AutoLayout auto = "auto".equals(parallel) ? AutoLayout.choose(this, job, out) : null;
        if (parallel != null && auto == null) {
            throw new IllegalArgumentException("--parallel " + parallel + ": the only choice is auto; give the layout with --dp, --pp, "
                    + "--zero, ... instead");
        }
        TrainConfig resolved = resolve(job, auto);
        if (!dryRun && resolved.zero() >= 2 && resolved.layout().dp() == 1) {
            out.println("note: ZeRO " + resolved.zero() + " over one data-parallel rank shards nothing; it only adds gathers "
                    + "and copies (use --ranks N to split the model state)");
        }
        if (dryRun) {
            out.print(ConfigLoader.toYaml(resolved));
            out.print(MemoryReport.table(resolved));
            out.flush();
            return 0;
        }
        Trainer.Result result;
        try {
            result = new Trainer(resolved, job, System.out).run(resume || resumeFrom != null, resumeFrom);
        } catch (RuntimeException e) {
            if (job.rank() != 0 || !overBudget(e)) throw e;
            // the error as Main prints it, then the layouts that would fit
            PrintWriter err = spec.commandLine().getErr();
            err.println("shardwise: " + e.getMessage()
                    + (e.getCause() != null && e.getCause().getMessage() != null ? "\n  caused by: " + e.getCause() : ""));
            err.println("shardwise: " + FittingLayouts.describe(resolved, 3));
            err.flush();
            return 1;
        }
        if (job.rank() != 0) return 0;   // rank 0 speaks for the job
        out.printf(Locale.ROOT, "done: %d steps, train loss %.4f, validation loss %.4f, %,.0f tokens/s, MFU %.1f%%, peak memory %s%n"
                        + "run directory: %s (metrics.jsonl, loss.png" + (resolved.saveCheckpoints() ? ", checkpoints/" : "") + ")%n",
                result.steps(), result.trainLoss(), result.valLoss(), result.tokensPerSecond(), 100 * result.mfu(),
                MemoryPool.formatBytes(result.peakMemoryBytes()), result.runDir());
        if (result.rankPeakBytes().size() > 1) {
            StringBuilder peaks = new StringBuilder("peak memory per rank" + (resolved.rankMemory() == MemoryPool.UNLIMITED ? ""
                    : " (budget " + MemoryPool.formatBytes(resolved.rankMemory()) + " each)") + ":");
            for (int r = 0; r < result.rankPeakBytes().size(); r++) {
                peaks.append(r == 0 ? " " : ", ").append(r).append(": ").append(MemoryPool.formatBytes(result.rankPeakBytes().get(r)));
            }
            out.println(peaks);
        }
        if (auto != null) auto.report(out, resolved, result);
        out.flush();
        return 0;
    }

    /** Whether {@code e} or one of its causes is a rank running over its memory budget. */
    private static boolean overBudget(Throwable e) {
        for (Throwable t = e; t != null; t = t.getCause()) if (t instanceof MemoryBudgetExceededException) return true;
        return false;
    }

    TrainConfig resolve(RankEnvironment job) throws IOException {
        return resolve(job, null);
    }

    /** The config from the YAML file and the flags, with {@code auto}'s layout in place of the layout flags if given. */
    TrainConfig resolve(RankEnvironment job, AutoLayout auto) throws IOException {
        Map<String, Object> yaml = config == null ? Map.of() : ConfigLoader.readYaml(config);
        Map<String, Object> flags = flags(job, yaml);
        if (auto != null) {
            flags.putAll(auto.flags());
            return ConfigLoader.resolve(yaml, config == null ? "no config file" : config.toString(), flags);
        }
        if (globalBatch != null) {   // Megatron's rule: global batch = micro-batch × dp × micro-batches per step
            TrainConfig layoutOnly = ConfigLoader.resolve(yaml, String.valueOf(config), flags);
            int micro = layoutOnly.batchSize(), dpSize = layoutOnly.layout().dp(), perStep = micro * dpSize;
            if (globalBatch % perStep != 0) {
                throw new IllegalArgumentException("--global-batch " + globalBatch + " is not a multiple of micro-batch × dp = "
                        + micro + " × " + dpSize + " = " + perStep + "; use a multiple such as "
                        + List.of(perStep, 2 * perStep, 4 * perStep));
            }
            flags.put("gradAccumulation", globalBatch / perStep);
        }
        return ConfigLoader.resolve(yaml, config == null ? "no config file" : config.toString(), flags);
    }

    /** The config from the YAML file and every flag but --global-batch (what {@code --parallel auto} starts from). */
    TrainConfig resolveWithoutGlobalBatch(RankEnvironment job) throws IOException {
        Map<String, Object> yaml = config == null ? Map.of() : ConfigLoader.readYaml(config);
        return ConfigLoader.resolve(yaml, config == null ? "no config file" : config.toString(), flags(job, yaml));
    }

    /** The flags given, as config keys. */
    private Map<String, Object> flags(RankEnvironment job, Map<String, Object> yaml) {
        Map<String, Object> flags = new LinkedHashMap<>();
        if (job.isMultiProcess() && ranks == null && dp == null && !yaml.containsKey("ranks") && !yaml.containsKey("dp")) {
            flags.put("ranks", job.size());   // under a launcher, each process is one rank
        }
        put(flags, "preset", preset);
        put(flags, "data", data == null ? null : data.toString());
        put(flags, "steps", steps);
        put(flags, "seed", seed);
        put(flags, "runDir", runDir == null ? null : runDir.toString());
        put(flags, "batchSize", microBatch);
        put(flags, "seqLen", seqLen);
        put(flags, "lr", lr);
        put(flags, "evalEvery", evalEvery);
        put(flags, "checkpointEvery", checkpointEvery);
        put(flags, "rankMemory", rankMemory);
        put(flags, "checkpointAtStart", checkpointAtStart);
        if (noCheckpoints) flags.put("saveCheckpoints", false);
        put(flags, "keepCheckpoints", keepCheckpoints);
        put(flags, "asyncCheckpoints", asyncCheckpoints);
        put(flags, "initFrom", initFrom == null ? null : initFrom.toString());
        put(flags, "ranks", ranks);
        put(flags, "dp", dp);
        put(flags, "tp", tp);
        put(flags, "sequenceParallel", sequenceParallel);
        put(flags, "pp", pp);
        put(flags, "vpp", vpp);
        put(flags, "ep", ep);
        put(flags, "zero", zero);
        put(flags, "recompute", recompute);
        put(flags, "recomputeEvery", recomputeEvery);
        put(flags, "schedule", schedule);
        put(flags, "pipelineCut", pipelineCut);
        put(flags, "offloadOptimizer", offloadOptimizer == null ? null : offloadOptimizer.toString());
        put(flags, "timeline", timeline == null ? null : timeline.toString());
        put(flags, "precision", precision);
        if (moeBalance != null) {
            if (ConfigLoader.resolve(yaml, String.valueOf(config), flags).model().moe() == null) {
                throw new IllegalArgumentException("--moe-balance needs a mixture-of-experts model; use --preset moe-tiny or "
                        + "give model.moe in the YAML config");
            }
            flags.put("model", Map.of("moe", Map.of("balance", moeBalance)));
        }
        return flags;
    }

    private static void put(Map<String, Object> flags, String key, Object value) {
        if (value != null) flags.put(key, value);
    }
}
