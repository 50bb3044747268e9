package dev.shardwise.model;

import dev.shardwise.core.kernels.onednn.OneDnn;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.memory.StepArena;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;
import org.junit.jupiter.api.Test;

import java.io.IOException;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.*;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * Our bf16 mixed precision against PyTorch's, {@code torch.autocast("cpu", dtype=torch.bfloat16)}, on the GPT-2
 * golden case (golden files from tools/pytorch/golden_gpt.py: the float64 loss and gradients in
 * gpt2-small-case.bin, PyTorch bf16 autocast's in gpt2-bf16-case.bin, from the same float32 weights and batch).
 *
 * <p>The two recipes round different tensors (autocast also runs q·kᵀ, att·v and the GELU in bf16; we keep those
 * fp32), so they agree only to bf16's precision: the loss within 2^-9 relative and every gradient within 2^-5 of
 * its largest magnitude (each recipe is a few bf16 roundings, 2^-9 relative each, away from float64 through two
 * layers). And ours is no less accurate: each gradient's error against float64 is at most 2x autocast's, or
 * within 2^-7 of the tensor's largest magnitude where autocast happens to land closer.
 */
class GptPyTorchBf16GoldenTest {

    @Test
    void bf16LossAndGradientsMatchPyTorchBf16AutocastAndAreNoLessAccurate() throws IOException {
        assumeTrue(OneDnn.isAvailable(), () -> "skipped: " + OneDnn.unavailableReason());
        MemoryPool pool = MemoryPool.unlimited("rank 0");
        Map<String, Tensor> golden = GoldenFile.read("/golden/gpt2-small-case.bin", pool);
        Map<String, Tensor> autocast = GoldenFile.read("/golden/gpt2-bf16-case.bin", pool);
        double[] c = golden.get("config").toDoubleArray();
        ModelConfig config = ModelConfig.gpt((int) c[0], (int) c[1], (int) c[2], (int) c[3], (int) c[4]);
        try (Gpt model = new Gpt(config, Gpt.declare(config).allocate(pool, DType.F32));
             Bf16Precision bf16 = new Bf16Precision(pool)) {
            for (Parameter p : model.parameters().parameters()) p.value().copyFrom(golden.get("param." + p.name()).toDoubleArray());
            model.parameters().usePrecision(bf16);
            double loss;
            try (StepArena arena = new StepArena(pool)) {
                Gpt.Pass pass = model.forward(arena, golden.get("tokens"), golden.get("targets"), 1.0);
                loss = pass.loss();
                model.backward(arena, pass);
            }
            double theirs = autocast.get("loss").getDouble(0), exact = golden.get("loss").getDouble(0);
            assertEquals(theirs, loss, 0x1p-9 * Math.abs(theirs), "loss vs PyTorch bf16 autocast");
            double worst = 0, worstOurs = 0, worstTheirs = 0;
            int compared = 0;
            for (Parameter p : model.parameters().parameters()) {
                double[] ours = p.grad().toDoubleArray(), them = autocast.get("grad." + p.name()).toDoubleArray();
                double[] f64 = golden.get("grad." + p.name()).toDoubleArray();
                double max = 0, diff = 0, oursErr = 0, theirsErr = 0;
                for (int i = 0; i < ours.length; i++) {
                    max = Math.max(max, Math.abs(f64[i]));
                    diff = Math.max(diff, Math.abs(ours[i] - them[i]));
                    oursErr = Math.max(oursErr, Math.abs(ours[i] - f64[i]));
                    theirsErr = Math.max(theirsErr, Math.abs(them[i] - f64[i]));
                }
                assertTrue(diff <= 0x1p-5 * max, String.format("%s: bf16 gradient differs from PyTorch autocast's by %.3g, "
                        + "%.3g of its largest magnitude %.3g (tolerance 2^-5)", p.name(), diff, diff / max, max));
                assertTrue(oursErr <= Math.max(2 * theirsErr, 0x1p-7 * max), String.format("%s: our bf16 error against "
                        + "float64 %.3g is more than twice autocast's %.3g", p.name(), oursErr, theirsErr));
                worst = Math.max(worst, diff / max);
                worstOurs = Math.max(worstOurs, oursErr / max);
                worstTheirs = Math.max(worstTheirs, theirsErr / max);
                compared++;
            }
            assertEquals(model.parameters().parameters().size(), compared);
            System.out.printf("bf16 vs PyTorch bf16 autocast: loss %.8f vs %.8f (float64 %.8f); worst gradient difference %.3g "
                    + "of the tensor's largest magnitude; worst error against float64: ours %.3g, autocast %.3g%n",
                    loss, theirs, exact, worst, worstOurs, worstTheirs);
        } finally {
            golden.values().forEach(Tensor::close);
            autocast.values().forEach(Tensor::close);
        }
    }
}
