package dev.shardwise.plan;

import dev.shardwise.parallel.ParallelLayout;
import dev.shardwise.parallel.pipeline.ScheduleKind;

/**
 * What the cost and memory models predict for one layout's training step.
 *
 * @param layout            the layout
 * @param schedule          the pipeline schedule simulated
 * @param stepSeconds       the step: the simulated pipeline's latest finish, gradient reduction and optimizer included
 * @param computeSeconds    the slowest stage's compute (GEMMs, element-wise, recompute), all micro-batches
 * @param tpCommSeconds     the slowest stage's tensor-parallel collectives, all micro-batches
 * @param epCommSeconds     the slowest stage's expert-parallel all-to-alls (dispatch and combine), all micro-batches
 * @param p2pSeconds        the slowest stage's pipeline sends
 * @param dpSeconds         the data-parallel gradient reduction (and ZeRO's gathers) left exposed
 * @param optimizerSeconds  the optimizer step
 * @param bubbleSeconds     step time the slowest stage spends waiting
 * @param modelFlops        model FLOPs of the step (MFU's numerator)
 * @param hardwareFlops     FLOPs executed, recompute included (Megatron 2021's count)
 * @param devices           devices the layout uses
 * @param peakFlops         one device's fp16 peak
 * @param memory            the peak bytes per device
 * @param memoryLimit       bytes a device offers
 */
public record Estimate(ParallelLayout layout, ScheduleKind schedule, double stepSeconds, double computeSeconds,
                       double tpCommSeconds, double epCommSeconds, double p2pSeconds, double dpSeconds, double optimizerSeconds,
                       double bubbleSeconds, double modelFlops, double hardwareFlops, int devices, double peakFlops,
                       MemoryBreakdown memory, double memoryLimit) {

    /** Model TFLOP/s per device. */
    public double tflopsPerDeviceModel() {
        return modelFlops / stepSeconds / devices / 1e12;
    }

    /** Executed TFLOP/s per device, recompute included. */
    public double tflopsPerDeviceHardware() {
        return hardwareFlops / stepSeconds / devices / 1e12;
    }

    /** Model FLOPs utilization: model FLOP/s per device over the fp16 peak. */
    public double mfu() {
        return modelFlops / stepSeconds / devices / peakFlops;
    }

    /** Whether the peak memory fits the device. */
    public boolean fits() {
        return memory.total() <= memoryLimit;
    }

    /** The layout as {@code --explain} spells it. */
    public String layoutText() {
        return Candidates.format(layout, schedule);
    }
}
