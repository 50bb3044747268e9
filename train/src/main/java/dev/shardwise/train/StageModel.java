package dev.shardwise.train;

import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.memory.StepArena;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;
import dev.shardwise.model.GptPart;
import dev.shardwise.model.optim.ParameterUpdate;
import dev.shardwise.parallel.pipeline.StageWork;

import java.util.ArrayDeque;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * One pipeline stage's model chunks as the schedule executor drives them: forward and backward of a micro-batch
 * through a chunk ({@link GptPart}), through this rank's {@link ParameterUpdate} (which may run the pass on a
 * helper thread while it gathers or reduces). Each in-flight (micro-batch, chunk) has its own {@link StepArena},
 * charged to the rank's pool as activations, from its first touch (a receive buffer or its forward) until the
 * executor releases it; released arenas are reset and reused, so the pool's activation peak is what the schedule
 * keeps alive at once (1F1B: at most p micro-batches on the first stage; GPipe: all m).
 *
 * <p>Zero-bubble schedules: {@link #backwardInput} and {@link #backwardWeight} run a chunk's backward as B then W
 * (Qi et al. 2023), so the (micro-batch, chunk) arena, which W reads, lives until the release after W; unless the
 * update's hooks forbid the split (ZeRO 2 and 3), then B runs the whole backward.
 *
 * <p>The micro-batches of a step are set with {@link #begin}; the head chunk sums their losses.
 */
final class StageModel implements StageWork {
    private record Key(int mb, int chunk) { }

    /** What one (micro-batch, chunk) holds while it is in flight. */
    private static final class InFlight {
        final StepArena arena;
        Tensor input;           // received activation [B·T, C] ([B·T/tp, C] under sequence parallelism)
        Tensor outputGradient;  // received d output, shaped as the output
        GptPart.Pass pass;
        Tensor inputGradient;   // d input [B·T, C] to send

        InFlight(StepArena arena) {
            this.arena = arena;
        }
    }

    private final List<GptPart> chunks;
    private final ParameterUpdate update;
    private final MemoryPool pool;
    private final int hidden;
    private final DType dtype;   // of the activations: the parameters' (F32 training, F64 checks)
    private final boolean split;   // backwardInput and backwardWeight split the chunk's backward (else B runs it whole)
    private final Map<Key, InFlight> inFlight = new HashMap<>();
    private final ArrayDeque<StepArena> spare = new ArrayDeque<>();
    private Tensor[] batches;   // the step's micro-batches, i32 [B, T+1]
    private double lossSum;
    private Runnable reduce = () -> { };
    private Runnable optimizer = () -> { };

    /** @param chunks this stage's chunks, chunk c being model part c·p + stage */
    StageModel(List<GptPart> chunks, ParameterUpdate update, MemoryPool pool, DType dtype) {
        this.dtype = dtype;
        this.chunks = List.copyOf(chunks);
        this.update = update;
        this.pool = pool;
        this.hidden = chunks.getFirst().config().hidden();
        for (GptPart chunk : chunks) chunk.useHooks(update.hooks());
        this.split = this.chunks.stream().allMatch(GptPart::canSplitBackward);
    }

    /** Whether {@link #backwardInput} and {@link #backwardWeight} split the backward (false: B runs it whole). */
    boolean splitsBackward() {
        return split;
    }

    /** Starts a step over {@code batches} (one [B, T+1] micro-batch each); {@code reduce} and {@code optimizer} end it. */
    void begin(Tensor[] batches, Runnable reduce, Runnable optimizer) {
        this.batches = batches;
        this.lossSum = 0;
        this.reduce = reduce;
        this.optimizer = optimizer;
    }

    /** Σ over the step's micro-batches of their mean loss (0 unless this stage holds the head). */
    double lossSum() {
        return lossSum;
    }

    private InFlight slot(int mb, int chunk) {
        return inFlight.computeIfAbsent(new Key(mb, chunk), k -> new InFlight(spare.isEmpty() ? new StepArena(pool) : spare.pop()));
    }

    private InFlight existing(int mb, int chunk, String what) {
        InFlight f = inFlight.get(new Key(mb, chunk));
        if (f == null || f.pass == null) {
            throw new IllegalStateException(what + " of micro-batch " + mb + ", chunk " + chunk + " before its forward");
        }
        return f;
    }

    @Override
    public void forward(int mb, int chunk) {
        InFlight f = slot(mb, chunk);
        Tensor batch = batches[mb];
        int m = batches.length;
        GptPart part = chunks.get(chunk);
        update.beginMicroBatch(mb, m);
        f.pass = update.forward(() -> part.forward(f.arena, TrainStep.inputs(batch), TrainStep.targets(batch), f.input, true, 1.0 / m));
        update.settle();
        if (part.span().head()) lossSum += f.pass.loss();
    }

    @Override
    public void backward(int mb, int chunk) {
        InFlight f = existing(mb, chunk, "backward");
        GptPart part = chunks.get(chunk);
        backwardPass(mb, () -> f.inputGradient = part.backward(f.arena, f.pass, part.span().head() ? null : f.outputGradient));
    }

    /** Runs one backward pass (or half of one) of micro-batch {@code mb} through the update, then settles what it posted. */
    private void backwardPass(int mb, Runnable pass) {
        update.beginMicroBatch(mb, batches.length);
        update.backward(pass);
        update.settle();
    }

    /**
     * B of ZB-H1: the chunk's input gradient ({@link GptPart#backwardInput}), its weight-gradient work left queued in
     * the pass for {@link #backwardWeight}. When the update's hooks bind per-unit state between a unit's B and W
     * (ZeRO 2 and 3; {@link GptPart#canSplitBackward} false) the chunk runs its backward whole here instead and W
     * has nothing left to do: correct, with 1F1B's bubble.
     */
    @Override
    public void backwardInput(int mb, int chunk) {
        if (!split) {
            backward(mb, chunk);
            return;
        }
        InFlight f = existing(mb, chunk, "input-gradient backward");
        GptPart part = chunks.get(chunk);
        backwardPass(mb, () -> f.inputGradient = part.backwardInput(f.arena, f.pass, part.span().head() ? null : f.outputGradient));
    }

    /** W of ZB-H1: the weight-gradient work {@link #backwardInput} queued for (mb, chunk) ({@link GptPart#backwardWeight}). */
    @Override
    public void backwardWeight(int mb, int chunk) {
        InFlight f = existing(mb, chunk, "weight-gradient backward");
        if (!split) return;
        GptPart part = chunks.get(chunk);
        backwardPass(mb, () -> part.backwardWeight(f.pass));
    }

    @Override
    public Tensor output(int mb, int chunk) {
        return existing(mb, chunk, "sending the output").pass.output();
    }

    @Override
    public Tensor inputBuffer(int mb, int chunk) {
        InFlight f = slot(mb, chunk);
        if (f.input == null) f.input = f.arena.allocateForOverwrite(dtype, rows(mb, chunk), hidden);
        return f.input;
    }

    @Override
    public Tensor inputGradient(int mb, int chunk) {
        Tensor g = existing(mb, chunk, "sending the input gradient").inputGradient;
        if (g == null) throw new IllegalStateException("micro-batch " + mb + ", chunk " + chunk + " has no input gradient yet");
        return g;
    }

    @Override
    public Tensor outputGradientBuffer(int mb, int chunk) {
        InFlight f = slot(mb, chunk);
        if (f.outputGradient == null) f.outputGradient = f.arena.allocateForOverwrite(dtype, rows(mb, chunk), hidden);
        return f.outputGradient;
    }

    /** Rows of the activation chunk {@code chunk} exchanges for micro-batch {@code mb}: B·T (B·T/tp under sequence parallelism). */
    private int rows(int mb, int chunk) {
        Tensor batch = batches[mb];
        return chunks.get(chunk).activationRows(batch.dim(0), batch.dim(1) - 1);
    }

    @Override
    public void release(int mb, int chunk) {
        InFlight f = inFlight.remove(new Key(mb, chunk));
        if (f == null) return;
        f.arena.reset();
        spare.push(f.arena);
    }

    @Override
    public void reduceGradients() {
        reduce.run();
    }

    @Override
    public void optimizerStep() {
        optimizer.run();
    }

    /** Frees every arena. */
    void close() {
        for (InFlight f : inFlight.values()) f.arena.close();
        inFlight.clear();
        for (StepArena a : spare) a.close();
        spare.clear();
    }
}
