package dev.shardwise.cli.bench;

import dev.shardwise.core.kernels.Gemm;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.tensor.Tensor;
import dev.shardwise.model.Gpt;
import dev.shardwise.model.ModelConfig;
import dev.shardwise.model.ParameterSet;

import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * The matrix products of one GPT training step timed alone: a roofline-style ceiling on tokens/s. If the step
 * did nothing but its GEMMs, at the speed this machine's GEMM reaches on each shape, it would take this long;
 * no implementation that does the same products with the same BLAS can be faster.
 *
 * <p>Every matrix parameter is a linear layer's weight {@code W [out, in]} (the token embedding {@code wte} is
 * the tied output head) and costs three products on {@code N = batch · seq} rows: forward {@code x·Wᵀ}, backward
 * data {@code dy·W} and backward weight {@code dyᵀ·x}, as {@link Gemm} documents them. Attention's products
 * (inside the fused attention kernel) are not counted, so the ceiling is generous.
 */
final class StepGemms {
    private StepGemms() { }

    /** One step's GEMMs: their floating-point operations and the sum of their median times. */
    record Timing(double flops, double seconds) { }

    /** Times one step's GEMMs for {@code config} at {@code rows} tokens per step. */
    static Timing measure(ModelConfig config, int rows) {
        Map<List<Integer>, Integer> shapes = new LinkedHashMap<>();   // [out, in] -> how many weights have it
        for (ParameterSet.Spec spec : Gpt.declare(config).specs()) {
            if (spec.shape().length == 2 && (spec.weightDecay() || spec.name().equals("wte"))) {
                shapes.merge(List.of(spec.shape()[0], spec.shape()[1]), 1, Integer::sum);
            }
        }
        MemoryPool pool = MemoryPool.unlimited("step GEMMs");
        double seconds = 0, flops = 0;
        for (Map.Entry<List<Integer>, Integer> e : shapes.entrySet()) {
            int out = e.getKey().get(0), in = e.getKey().get(1);
            try (Tensor w = BenchGemmCommand.random(pool, out, in, 1); Tensor dw = BenchGemmCommand.random(pool, out, in, 2);
                 Tensor x = BenchGemmCommand.random(pool, rows, in, 3); Tensor dx = BenchGemmCommand.random(pool, rows, in, 4);
                 Tensor y = BenchGemmCommand.random(pool, rows, out, 5)) {
                double forward = Measure.medianSeconds(() -> Gemm.matmul(y, x, w, false, true, 1f, 0f), 1, 5, 0.2);
                double data = Measure.medianSeconds(() -> Gemm.matmul(dx, y, w, false, false, 1f, 1f), 1, 5, 0.2);
                double weight = Measure.medianSeconds(() -> Gemm.matmul(dw, y, x, true, false, 1f, 1f), 1, 5, 0.2);
                seconds += e.getValue() * (forward + data + weight);
                flops += e.getValue() * 3 * 2.0 * rows * in * out;
            }
        }
        return new Timing(flops, seconds);
    }
}
