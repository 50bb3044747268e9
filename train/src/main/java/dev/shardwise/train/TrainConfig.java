package dev.shardwise.train;

import dev.shardwise.model.ModelConfig;
import dev.shardwise.model.MoeConfig;
import dev.shardwise.model.optim.AdamWOptimizer;
import dev.shardwise.model.optim.LearningRateSchedule;
import dev.shardwise.parallel.ParallelLayout;
import dev.shardwise.parallel.pipeline.ScheduleKind;

import java.nio.file.Path;
import java.util.List;
import java.util.Objects;

/**
 * Everything a training run is configured with, resolved from a preset, a YAML file and flags (in that order
 * of precedence, flags last). A config never changes while a run uses it; progress lives in {@link TrainState}.
 * How the run is cut across ranks has one home, {@link #layout}; {@link #ranks}, {@link #zero} and
 * {@link #batchSize} read it.
 *
 * @param preset           the model preset the run started from (informational; {@code model} is what runs)
 * @param model            the model's shape and variant
 * @param data             a directory written by {@code shardwise prepare}, or null for the bundled tiny Shakespeare
 * @param seqLen           T, tokens per sequence
 * @param gradAccumulation micro-batches per optimizer step
 * @param steps            optimizer steps to run
 * @param seed             seeds initialisation and data order
 * @param lr               peak learning rate
 * @param minLr            learning rate at the end of the cosine
 * @param warmupSteps      steps of linear warm-up
 * @param weightDecay      AdamW decoupled weight decay
 * @param beta1            AdamW β1
 * @param beta2            AdamW β2
 * @param eps              AdamW ε
 * @param gradClip         global gradient-norm clip (0 disables)
 * @param evalEvery        steps between validation evaluations (0: only at the end)
 * @param evalBatches      validation batches per evaluation, each a global batch of sequences (the same under any layout)
 * @param checkpointEvery  steps between checkpoints (0: only at the end)
 * @param checkpointAtStart also save the initial weights as checkpoint step 0 (for comparisons with other trainers)
 * @param runDir           where config, metrics, checkpoints and plots go
 * @param rankMemory       the rank's memory budget in bytes (Long.MAX_VALUE: unlimited)
 * @param layout           how the run is cut across ranks: dp·tp·pp ranks (run as threads of this JVM, or one per
 *                         process of a job), ep of the dp ranks splitting each MoE block's experts, the ZeRO stage over
 *                         the dp group, activation recompute, and the
 *                         micro-batch B (sequences per micro-batch on each dp rank, so the global batch grows with dp)
 * @param schedule         the pipeline schedule (used when pp &gt; 1); null gives {@link ScheduleKind#defaultFor}(vpp)
 * @param pipelineCut      where the pp·vpp model chunks start, in blocks, in model order (chunk i on stage i mod pp,
 *                         Narayanan et al.'s round-robin): [0, 3, 6] with 8 layers and pp 3 gives stage 0 blocks
 *                         [0, 3), stage 1 [3, 6), stage 2 [6, 8); null balances the chunks automatically
 * @param recomputeEvery   k: the recompute policy applies to every k-th block (1: every block)
 * @param offloadOptimizer directory for a memory-mapped file per rank holding its AdamW moments (ZeRO-Infinity's
 *                         optimizer offload; needs zero >= 1), or null to keep them in memory
 * @param timeline         where to write the last step's executed pipeline schedule as a Chrome trace (one row per
 *                         stage of the first data-parallel replica; Perfetto opens it), or null for none
 * @param saveCheckpoints  false: no checkpoints at all
 * @param keepCheckpoints  how many of the newest checkpoints to keep (older ones are deleted after each save); 0 keeps all
 * @param asyncCheckpoints save checkpoints in the background (DLRover's flash checkpoint): a rank copies its shard to
 *                         host buffers and trains on while a writer thread persists it; false saves synchronously
 * @param initFrom         a Hugging Face GPT-2 directory (model.safetensors + config.json) whose weights start the run
 *                         (fine-tuning), or null to initialise from the seed
 * @param precision        how the weight products run: {@code fp32}, or {@code bf16} (bf16 operands through oneDNN
 *                         with fp32 accumulation, fp32 master weights, gradients and AdamW; matmul inputs kept for
 *                         backward in bf16); checkpoints hold the fp32 masters either way
 */
public record TrainConfig(String preset, ModelConfig model, Path data, int seqLen, int gradAccumulation,
                          int steps, long seed, double lr, double minLr, int warmupSteps, double weightDecay,
                          double beta1, double beta2, double eps, double gradClip, int evalEvery, int evalBatches,
                          int checkpointEvery, boolean checkpointAtStart, Path runDir, long rankMemory,
                          ParallelLayout layout, ScheduleKind schedule, List<Integer> pipelineCut, int recomputeEvery,
                          Path offloadOptimizer, Path timeline, boolean saveCheckpoints, int keepCheckpoints,
                          boolean asyncCheckpoints, Path initFrom, String precision) {

    /**
     * Checks every field and their combinations.
     *
     * @throws IllegalArgumentException naming the field, its value and a fix
     * @throws NullPointerException     if {@code model} or {@code layout} is null
     */
    public TrainConfig {
        Objects.requireNonNull(model, "model is null");
        Objects.requireNonNull(layout, "layout is null; use ParallelLayout.of(1, 1, 1) for one rank");
        positive("seqLen", seqLen);
        positive("gradAccumulation", gradAccumulation);
        positive("steps", steps);
        positive("evalBatches", evalBatches);
        // the vocabulary-parallel embedding pads the vocabulary to a multiple of tp itself (rows no token reaches)
        layout.validateFor(new ParallelLayout.ModelDimensions(model.layers(), model.hidden(), model.ffnHidden(),
                model.heads(), model.kvHeads(), Math.ceilDiv(model.vocabSize(), layout.tp()) * layout.tp(), seqLen,
                model.moe() == null ? 0 : model.moe().experts()));
        if (offloadOptimizer != null && layout.zeroStage() == 0) {
            throw new IllegalArgumentException("offloadOptimizer=" + offloadOptimizer + " needs zero >= 1 (the offloaded "
                    + "optimizer is the sharded one); add --zero 1 (it works with --ranks 1 too) or drop the offload");
        }
        if (schedule == null) schedule = ScheduleKind.defaultFor(layout.vpp());
        if (schedule == ScheduleKind.INTERLEAVED && layout.vpp() == 1) {
            throw new IllegalArgumentException("schedule=interleaved needs vpp >= 2 model chunks per stage, but vpp=1; "
                    + "set vpp (with pp >= 2) or use schedule 1f1b");
        }
        if (pipelineCut != null) {
            pipelineCut = List.copyOf(pipelineCut);
            checkPipelineCut(pipelineCut, layout, model.layers());
        }
        if (recomputeEvery < 1) {
            throw new IllegalArgumentException("recomputeEvery=" + recomputeEvery + " must be at least 1 (the policy "
                    + "applies to every k-th block); use 1 for every block, or recompute: none to recompute nothing");
        }
        if (checkpointAtStart && !saveCheckpoints) {
            throw new IllegalArgumentException("checkpointAtStart=true but saveCheckpoints=false; drop one of them");
        }
        if (!"fp32".equals(precision) && !"bf16".equals(precision)) {
            throw new IllegalArgumentException("precision=" + precision + " must be fp32 or bf16 (--precision)");
        }
        if ("bf16".equals(precision) && model.moe() != null) {
            throw new IllegalArgumentException("precision=bf16: " + MoeConfig.BF16_REFUSAL);
        }
        if (evalEvery < 0) throw new IllegalArgumentException("evalEvery must be >= 0, got " + evalEvery);
        if (checkpointEvery < 0) throw new IllegalArgumentException("checkpointEvery must be >= 0, got " + checkpointEvery);
        if (keepCheckpoints < 0) {
            throw new IllegalArgumentException("keepCheckpoints must be >= 0 (0 keeps every checkpoint), got " + keepCheckpoints);
        }
        if (seqLen > model.contextLength()) {
            throw new IllegalArgumentException("seqLen=" + seqLen + " exceeds the model's contextLength="
                    + model.contextLength() + "; lower seqLen or raise model.contextLength");
        }
        if (!(gradClip >= 0)) throw new IllegalArgumentException("gradClip must be >= 0, got " + gradClip);
        if (rankMemory <= 0) throw new IllegalArgumentException("rankMemory must be positive, got " + rankMemory);
        learningRateSchedule(lr, minLr, warmupSteps, steps);
        new AdamWOptimizer.Settings(beta1, beta2, eps, weightDecay);
    }

    /** Precondition: layout and layers are valid. */
    private static void checkPipelineCut(List<Integer> cut, ParallelLayout layout, int layers) {
        int chunks = layout.pp() * layout.vpp();
        String fix = "; give pp·vpp ascending first blocks starting at 0, e.g. " + evenCut(chunks, layers)
                + ", or leave pipelineCut out to balance automatically";
        if (cut.size() != chunks) {
            throw new IllegalArgumentException("pipelineCut=" + cut + " has " + cut.size() + " entries but pp·vpp="
                    + layout.pp() + "·" + layout.vpp() + "=" + chunks + " model chunks need " + chunks + fix);
        }
        if (cut.getFirst() != 0) {
            throw new IllegalArgumentException("pipelineCut=" + cut + " starts at " + cut.getFirst()
                    + ", but the first chunk starts at block 0" + fix);
        }
        for (int i = 1; i < cut.size(); i++) {
            if (cut.get(i) <= cut.get(i - 1)) {
                throw new IllegalArgumentException("pipelineCut=" + cut + " is not strictly increasing at entry " + i + " ("
                        + cut.get(i - 1) + " then " + cut.get(i) + "): every chunk needs at least one block" + fix);
            }
        }
        if (cut.getLast() >= layers) {
            throw new IllegalArgumentException("pipelineCut=" + cut + " starts a chunk at block " + cut.getLast()
                    + " but model.layers=" + layers + " (blocks 0.." + (layers - 1) + ")" + fix);
        }
    }

    /** The first blocks of {@code chunks} near-equal chunks of {@code layers} blocks (precondition: chunks <= layers). */
    private static List<Integer> evenCut(int chunks, int layers) {
        Integer[] starts = new Integer[chunks];
        for (int i = 0; i < chunks; i++) starts[i] = (int) ((long) i * layers / chunks);
        return List.of(starts);
    }

    private static LearningRateSchedule learningRateSchedule(double lr, double minLr, int warmupSteps, int steps) {
        return new LearningRateSchedule(lr, minLr, Math.min(warmupSteps, steps), steps);
    }

    private static void positive(String field, int value) {
        if (value <= 0) throw new IllegalArgumentException(field + " must be positive, got " + value);
    }

    /**
     * This config with another layout, the pipeline schedule and cut reset to their defaults (they belong to a
     * layout).
     *
     * @throws IllegalArgumentException if the layout does not fit the model
     */
    public TrainConfig withLayout(ParallelLayout other) {
        return new TrainConfig(preset, model, data, seqLen, gradAccumulation, steps, seed, lr, minLr, warmupSteps, weightDecay,
                beta1, beta2, eps, gradClip, evalEvery, evalBatches, checkpointEvery, checkpointAtStart, runDir, rankMemory,
                other, null, null, recomputeEvery, offloadOptimizer, timeline, saveCheckpoints, keepCheckpoints, asyncCheckpoints,
                initFrom, precision);
    }

    /** Ranks the run needs: dp·tp·pp (the layout's world size). */
    public int ranks() {
        return layout.worldSize();
    }

    /** ZeRO stage over the dp group: 0 (everything replicated) to 3 (parameters sharded too). */
    public int zero() {
        return layout.zeroStage();
    }

    /** B, sequences per micro-batch on each dp rank (the layout's micro-batch). */
    public int batchSize() {
        return layout.microBatch();
    }

    /** Tokens consumed by one optimizer step over all ranks: B · T · micro-batches · dp. */
    public long tokensPerStep() {
        return (long) batchSize() * seqLen * gradAccumulation * layout.dp();
    }

    /** Sequences per micro-batch over all dp ranks: B · dp (the batch a single-rank run would use for the same data). */
    public int globalMicroBatch() {
        return Math.multiplyExact(batchSize(), layout.dp());
    }

    /** Warm-up then cosine from {@code lr} to {@code minLr} ({@link #schedule} is the pipeline's). */
    public LearningRateSchedule learningRateSchedule() {
        return learningRateSchedule(lr, minLr, warmupSteps, steps);
    }

    public AdamWOptimizer.Settings optimizer() {
        return new AdamWOptimizer.Settings(beta1, beta2, eps, weightDecay);
    }
}
