package dev.shardwise.model;

import dev.shardwise.model.optim.ParameterUpdate;

import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.function.BiConsumer;

/**
 * What the mixture-of-experts layers of one model part share: whether the forward now running trains (the noisy
 * gate's noise is on only then), the scale of the auxiliary losses' gradient (the loss scale of the pass, 1/micro-
 * batches under accumulation, as the cross-entropy's), and what the forward passes of the current step recorded:
 * the auxiliary losses and each layer's expert load (tokens per expert, dropped assignments).
 *
 * <p>{@link GptPart} opens a pass with {@link #begin} before its blocks and closes it with {@link #end} after; only
 * forwards inside such a pass record, so the forward a full-recompute block reruns inside its backward does not
 * count twice. Not thread-safe: one rank's training thread.
 */
public final class MoeRun {
    private final List<MoeFeedForward> layers = new ArrayList<>();
    private final ExpertParallel ep;
    private boolean training;
    private double lossScale = 1;
    private boolean recording;
    private boolean keyNoiseByRow;
    private long noiseSeed = 0x5eedL;
    private int passes;
    private double auxLoss;
    private MoePhases phases = MoePhases.OFF;

    /** A run whose MoE blocks hold every expert. */
    public MoeRun() {
        this(ExpertParallel.NONE);
    }

    /** A run whose MoE blocks hold this rank's E/ep experts and exchange tokens over {@code ep}. */
    public MoeRun(ExpertParallel ep) {
        this.ep = java.util.Objects.requireNonNull(ep, "ep");
    }

    /** The expert-parallel group the part's MoE blocks exchange tokens over. */
    public ExpertParallel expertParallel() {
        return ep;
    }

    /** A layer registers itself when built over this run. */
    void register(MoeFeedForward layer) {
        layers.add(layer);
    }

    /** The MoE layers of the part, in block order. */
    List<MoeFeedForward> layers() {
        return Collections.unmodifiableList(layers);
    }

    /** Whether the part has any MoE layer. */
    public boolean active() {
        return !layers.isEmpty();
    }

    /** Opens a forward pass: training or not, and the scale its auxiliary losses' gradient takes. */
    void begin(boolean training, double lossScale) {
        this.training = training;
        this.lossScale = lossScale;
        this.recording = true;
    }

    /** Closes the pass opened by {@link #begin}. */
    void end() {
        if (recording && training) passes++;
        recording = false;
    }

    boolean training() { return training; }
    double lossScale() { return lossScale; }

    /** Starts the MoE blocks' per-phase timers (off by default) and returns them. */
    public MoePhases timePhases() {
        if (phases == MoePhases.OFF) phases = MoePhases.recording();
        return phases;
    }

    /** The per-phase timers: {@link MoePhases#OFF} unless {@link #timePhases} started them. */
    MoePhases phases() {
        return phases;
    }

    /** Seeds the noisy gate's noise (the training seed); the same seed gives the same noise for the same tokens. */
    public void noiseSeed(long seed) {
        this.noiseSeed = seed;
    }

    long noiseSeed() { return noiseSeed; }

    /**
     * Keys the noise by row index instead of by the row's contents (finite-difference checks, which perturb x and
     * need the same noise sample under each perturbation).
     */
    void keyNoiseByRow() {
        this.keyNoiseByRow = true;
    }

    boolean noiseKeyedByRow() { return keyNoiseByRow; }

    /** Adds a training forward's weighted auxiliary loss (balance and z-loss terms), when recording. */
    void recordAuxLoss(double value) {
        if (recording && training) auxLoss += value;
    }

    boolean recording() { return recording && training; }

    /**
     * The step so far: the auxiliary losses added to the training objective, summed over the part's MoE layers and
     * averaged over the training passes, and the expert load summed over the passes, per layer.
     */
    public MoeStats stats() {
        List<double[]> loads = new ArrayList<>();
        double[] spreads = new double[layers.size()];
        long dropped = 0, assignments = 0;
        for (MoeFeedForward layer : layers) {
            spreads[loads.size()] = layer.spreadSquare();
            double[] load = new double[layer.load().length];
            for (int e = 0; e < load.length; e++) load[e] = layer.load()[e];
            loads.add(load);
            dropped += layer.dropped();
            assignments += layer.assignments();
        }
        return new MoeStats(passes == 0 ? 0 : auxLoss / passes, loads, spreads, dropped, assignments);
    }

    /** Forgets what the step recorded (call before each step). */
    public void resetStats() {
        passes = 0;
        auxLoss = 0;
        for (MoeFeedForward layer : layers) layer.resetLoad();
    }

    /**
     * Loss-free balancing's update after a step, for layers with balance bias: b_e += γ·(mean load - load_e) / mean
     * load, from {@code loads} (the step's load per layer, {@link MoeStats#loads()} order, summed over the
     * replicas that must stay equal). Each layer's change goes through {@code addToValues}: the step's
     * {@link ParameterUpdate#addToValues} (whole values, or this rank's shard of them under ZeRO 3), or
     * {@link ParameterUpdate#addToWholeValues} for a model whose values are whole.
     */
    public void updateBias(List<double[]> loads, BiConsumer<Parameter, double[]> addToValues) {
        for (int i = 0; i < layers.size(); i++) layers.get(i).updateBias(loads.get(i), addToValues);
    }
}
