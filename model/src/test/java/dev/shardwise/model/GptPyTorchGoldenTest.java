package dev.shardwise.model;

import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.memory.StepArena;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

import java.io.IOException;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.*;

/**
 * Loss and every parameter gradient against PyTorch (golden files from tools/pytorch/golden_gpt.py, computed in
 * float64 from float32 weights). Errors are relative to each tensor's largest magnitude.
 */
class GptPyTorchGoldenTest {

    @ParameterizedTest(name = "{0} in {1}")
    @CsvSource({"gpt2-small-case.bin, F32, 1e-4", "gpt2-small-case.bin, F64, 1e-9",
            "llama-small-case.bin, F32, 1e-4", "llama-small-case.bin, F64, 1e-9"})
    void lossAndEveryGradientMatchPyTorch(String file, DType dtype, double tolerance) throws IOException {
        MemoryPool pool = MemoryPool.unlimited("rank 0");
        Map<String, Tensor> golden = GoldenFile.read("/golden/" + file, pool);
        double[] c = golden.get("config").toDoubleArray();
        ModelConfig config = file.startsWith("llama")
                ? ModelConfig.llama((int) c[0], (int) c[1], (int) c[2], (int) c[3], (int) c[4], (int) c[5], (int) c[6])
                : ModelConfig.gpt((int) c[0], (int) c[1], (int) c[2], (int) c[3], (int) c[4]);
        try (Gpt model = new Gpt(config, Gpt.declare(config).allocate(pool, dtype))) {
            int loaded = 0;
            for (Parameter p : model.parameters().parameters()) {
                Tensor value = golden.get("param." + p.name());
                assertNotNull(value, "golden file lacks parameter " + p.name());
                assertArrayEquals(value.shape(), p.value().shape(), p.name());
                p.value().copyFrom(value.toDoubleArray());
                loaded++;
            }
            assertEquals(golden.keySet().stream().filter(k -> k.startsWith("param.")).count(), loaded,
                    "every golden parameter has a Shardwise twin");

            double loss;
            try (StepArena arena = new StepArena(pool)) {
                Gpt.Pass pass = model.forward(arena, golden.get("tokens"), golden.get("targets"), 1.0);
                loss = pass.loss();
                model.backward(arena, pass);
            }
            double expectedLoss = golden.get("loss").getDouble(0);
            assertEquals(expectedLoss, loss, tolerance * Math.abs(expectedLoss), "loss");

            double worst = 0;
            String worstName = "";
            for (Parameter p : model.parameters().parameters()) {
                double[] expected = golden.get("grad." + p.name()).toDoubleArray();
                double[] actual = p.grad().toDoubleArray();
                double maxAbs = 0, maxDiff = 0;
                for (int i = 0; i < expected.length; i++) {
                    maxAbs = Math.max(maxAbs, Math.abs(expected[i]));
                    maxDiff = Math.max(maxDiff, Math.abs(expected[i] - actual[i]));
                }
                double relative = maxDiff / Math.max(maxAbs, 1e-30);
                assertTrue(relative <= tolerance, String.format("%s gradient (%s): max abs diff %.3g is %.3g of its largest "
                        + "magnitude %.3g, tolerance %.1g", p.name(), dtype, maxDiff, relative, maxAbs, tolerance));
                if (relative > worst) {
                    worst = relative;
                    worstName = p.name();
                }
            }
            System.out.printf("PyTorch golden %s (%s): loss %.10f vs %.10f, worst gradient error %.3g (%s)%n",
                    file, dtype, loss, expectedLoss, worst, worstName);
        } finally {
            golden.values().forEach(Tensor::close);
        }
    }
}
