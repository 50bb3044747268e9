package dev.shardwise.cli.bench;

import dev.shardwise.core.machine.CpuPeak;
import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;
import dev.shardwise.core.kernels.onednn.OneDnn;
import dev.shardwise.model.Bf16Precision;
import dev.shardwise.model.Gpt;
import dev.shardwise.model.MatmulPrecision;
import dev.shardwise.model.ModelConfig;
import dev.shardwise.model.optim.AdamWOptimizer;
import dev.shardwise.train.TrainStep;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

import java.io.IOException;
import java.io.InputStream;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.SplittableRandom;
import java.util.concurrent.TimeUnit;
import java.util.function.Consumer;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * {@code shardwise bench train}: tokens/s of a full training step (forward, backward, clipping, AdamW) beside
 * the same model in PyTorch (Debian's python3-torch) measured in the same run; with {@code --precision bf16} our
 * bf16 step beside PyTorch under bf16 autocast and beside our own fp32 step. Prints which BLAS, oneDNN and thread
 * settings the peer ran with, and no ratio against a PyTorch on the reference BLAS.
 */
@Command(name = "train", mixinStandardHelpOptions = true,
        description = "Training-step tokens/s beside PyTorch (same model, same precision, same thread count) in the same run.")
public final class BenchTrainCommand implements Runnable {
    @Option(names = "--preset", split = ",", defaultValue = "tiny,gpt2-124m",
            description = "Model presets to measure (default: ${DEFAULT-VALUE}).")
    List<String> presets;

    @Option(names = "--steps", defaultValue = "10", description = "Timed steps, after warm-up steps for at least 5 s (default: ${DEFAULT-VALUE}).")
    int steps;

    @Option(names = "--micro-batch", description = "Sequences per step (default: 8 for tiny, 4 otherwise).")
    Integer microBatch;

    @Option(names = "--seq-len", defaultValue = "256", description = "Tokens per sequence (default: ${DEFAULT-VALUE}).")
    int seqLen;

    @Option(names = "--python", defaultValue = "/usr/bin/python3", description = "Python with torch (default: ${DEFAULT-VALUE}).")
    String python;

    @Option(names = "--precision", defaultValue = "fp32",
            description = {"fp32 (default) or bf16: with bf16 our bf16 step (oneDNN bf16 products, fp32 masters) is timed",
                    "beside our fp32 step and beside PyTorch under bf16 autocast, all in this run (needs libdnnl2)."})
    String precision;

    @Option(names = "--no-peer", description = "Skip the PyTorch run.")
    boolean noPeer;

    @Option(names = "--json", description = "One JSON object per case instead of a table.")
    boolean json;

    /**
     * Warm-up before the timed steps: at least this many steps and this long, so that the JIT has compiled the
     * kernels (a tiny step needs about 8 steps, 4 s, to reach its steady speed; a run of minutes sees that speed).
     * PyTorch gets the same number of warm-up steps.
     */
    private static final int WARMUP_STEPS = 2;
    private static final double WARMUP_SECONDS = 5;

    @Override
    public void run() {
        if (!precision.equals("fp32") && !precision.equals("bf16")) {
            throw new IllegalArgumentException("--precision must be fp32 or bf16, got '" + precision + "'");
        }
        boolean bf16 = precision.equals("bf16");
        if (bf16 && !OneDnn.isAvailable()) {
            throw new IllegalArgumentException("bench train --precision bf16 needs oneDNN 2.x, which is not installed: "
                    + "apt-get install libdnnl2 (or scripts/ensure-onednn.sh)");
        }
        BenchOutput out = new BenchOutput(System.out, json);
        CpuPeak peak = CpuPeak.measure();
        out.info(peak.describe());
        for (String preset : presets) {
            ModelConfig config = ModelConfig.preset(preset);
            int b = microBatch != null ? microBatch : (config.hidden() <= 512 ? 8 : 4);
            Measured fp32 = bf16 ? measureShardwise(config, b, "fp32") : null;
            Measured measured = measureShardwise(config, b, precision);
            double ours = measured.tokensPerSecond();
            double flopsPerToken = config.trainingFlopsPerToken(seqLen);
            String caseName = String.format(Locale.ROOT, "%s B=%d T=%d step%s", preset, b, seqLen, bf16 ? " bf16" : "");
            double theirs = noPeer ? Double.NaN : measurePyTorch(config, b, measured.warmupSteps(), out);
            String note = String.format(Locale.ROOT, "MFU %.1f%%%s; median forward %.0f ms, backward %.0f ms, optimizer %.0f ms",
                    100 * flopsPerToken * ours / peak.measuredFlops(),
                    Double.isNaN(theirs) ? "" : String.format(Locale.ROOT, " (PyTorch %.1f%%)", 100 * flopsPerToken * theirs / peak.measuredFlops()),
                    measured.forwardMs(), measured.backwardMs(), measured.optimizerMs());
            out.row(row(caseName, ours, theirs, flopsPerToken * ours / peak.measuredFlops(), note));
            if (bf16) {
                out.row(new BenchRow("train", String.format(Locale.ROOT, "%s B=%d T=%d step bf16 vs our fp32", preset, b, seqLen),
                        ours, "tokens/s", "shardwise-fp32", fp32.tokensPerSecond(), flopsPerToken * ours / peak.measuredFlops(),
                        "our bf16 step beside our fp32 step, same run; MFU against the fp32 peak; bf16 products on "
                                + String.join(", ", measured.implementations())));
            }
            out.row(gemmCeiling(config, preset, b, theirs, peak));
        }
    }

    /**
     * The ceiling row: tokens/s if the step did nothing but its linear-layer GEMMs, at this machine's GEMM speed
     * ({@link StepGemms}); its peak column is the GEMMs' own FLOP rate.
     */
    private BenchRow gemmCeiling(ModelConfig config, String preset, int b, double theirs, CpuPeak peak) {
        StepGemms.Timing gemms = StepGemms.measure(config, b * seqLen);
        double ceiling = b * seqLen / gemms.seconds();
        return row(String.format(Locale.ROOT, "%s B=%d T=%d GEMMs alone", preset, b, seqLen), ceiling, theirs,
                gemms.flops() / gemms.seconds() / peak.measuredFlops(),
                "ceiling: the step's linear-layer GEMMs (forward, data and weight gradients) at this machine's GEMM speed, "
                        + "nothing else; peak = the GEMMs' own FLOP rate");
    }

    /** A tokens/s row, beside PyTorch's figure unless the peer did not run ({@code theirs} NaN). */
    private static BenchRow row(String name, double tokensPerSecond, double theirs, double peakFraction, String note) {
        return Double.isNaN(theirs)
                ? BenchRow.alone("train", name, tokensPerSecond, "tokens/s", peakFraction, note)
                : new BenchRow("train", name, tokensPerSecond, "tokens/s", "pytorch", theirs, peakFraction, note);
    }

    /** Median tokens/s and phase times of the timed steps, and how many warm-up steps preceded them. */
    record Measured(double tokensPerSecond, int warmupSteps, double forwardMs, double backwardMs, double optimizerMs,
                    List<String> implementations) { }

    private Measured measureShardwise(ModelConfig config, int b, String precisionLabel) {
        MemoryPool pool = MemoryPool.unlimited("rank 0");
        SplittableRandom random = new SplittableRandom(1);
        try (Gpt model = Gpt.create(config, pool, DType.F32, 1);
             MatmulPrecision matmuls = MatmulPrecision.of(precisionLabel, pool);
             AdamWOptimizer optimizer = new AdamWOptimizer(model.parameters(), pool, AdamWOptimizer.Settings.gpt());
             Tensor batch = Tensor.allocate(pool, MemoryCategory.BUFFERS, DType.I32, b, seqLen + 1);
             TrainStep step = new TrainStep(model, optimizer, pool, 1.0)) {
            model.parameters().usePrecision(matmuls);
            int[] tokens = new int[b * (seqLen + 1)];
            double[] seconds = new double[steps];
            double[][] phaseMs = new double[3][steps];
            Consumer<Tensor> fill = t -> {
                for (int i = 0; i < tokens.length; i++) tokens[i] = random.nextInt(config.vocabSize());
                MemorySegment.copy(tokens, 0, t.segment(), ValueLayout.JAVA_INT, t.byteOffset(), tokens.length);
            };
            long warmupStart = System.nanoTime();
            int warmupSteps = 0;
            while (warmupSteps < WARMUP_STEPS || System.nanoTime() - warmupStart < WARMUP_SECONDS * 1e9) {
                step.run(batch, 1, fill, 1e-3);
                warmupSteps++;
            }
            for (int s = 0; s < steps; s++) {
                TrainStep.Result r = step.run(batch, 1, fill, 1e-3);
                seconds[s] = r.totalNs() / 1e9;
                phaseMs[0][s] = r.forwardNs() / 1e6;
                phaseMs[1][s] = r.backwardNs() / 1e6;
                phaseMs[2][s] = r.optimizerNs() / 1e6;
            }
            for (double[] ms : phaseMs) Arrays.sort(ms);
            Arrays.sort(seconds);
            int mid = steps / 2;
            List<String> implementations = matmuls instanceof Bf16Precision p ? p.implementations() : List.of("fp32 GEMM");
            return new Measured(b * seqLen / seconds[mid], warmupSteps, phaseMs[0][mid], phaseMs[1][mid], phaseMs[2][mid],
                    implementations);
        }
    }

    /**
     * PyTorch's tokens/s from its script's output, or NaN (with a note) when it did not run or ran on the reference
     * BLAS ({@link PeerBlas#refusal()}); says which BLAS it ran on.
     */
    static double peerTokensPerSecond(String output, int exitValue, String python, BenchOutput out) {
        Matcher m = Pattern.compile("RESULT tokens_per_s=([0-9.]+)").matcher(output);
        if (exitValue != 0 || !m.find()) {
            out.info("PyTorch peer did not run (" + python + "; install Debian's python3-torch): "
                    + output.lines().reduce((a, z) -> z).orElse("no output"));
            return Double.NaN;
        }
        PeerBlas blas = PeerBlas.parse(output);
        out.info("PyTorch peer BLAS: " + blas.describe());
        out.info(PeerSettings.parse(output).describe());
        String refusal = blas.refusal();
        if (refusal != null) {
            out.info(refusal);
            return Double.NaN;
        }
        return Double.parseDouble(m.group(1));
    }

    /**
     * Runs the bundled PyTorch script with {@code warmupSteps} warm-up steps (as many as ours ran); NaN (with a
     * note) when Python or torch is missing or torch runs on the reference BLAS ({@link #peerTokensPerSecond}).
     */
    private double measurePyTorch(ModelConfig config, int b, int warmupSteps, BenchOutput out) {
        try {
            Path script = Files.createTempFile("shardwise-pytorch-train", ".py");
            try (InputStream in = BenchTrainCommand.class.getResourceAsStream("pytorch_train_step.py")) {
                Files.copy(in, script, java.nio.file.StandardCopyOption.REPLACE_EXISTING);
            }
            List<String> command = new ArrayList<>(List.of(python, script.toString(),
                    "--layers", "" + config.layers(), "--hidden", "" + config.hidden(), "--heads", "" + config.heads(),
                    "--vocab", "" + config.vocabSize(), "--context", "" + config.contextLength(), "--seq", "" + seqLen,
                    "--batch", "" + b, "--steps", "" + steps, "--warmup", "" + warmupSteps,
                    "--threads", "" + dev.shardwise.core.exec.ComputePool.current().threads(), "--precision", precision));
            ProcessBuilder builder = new ProcessBuilder(command).redirectErrorStream(true);
            builder.environment().put("OMP_WAIT_POLICY", "PASSIVE");   // OpenMP threads must not spin against ours
            Process process = builder.start();
            String output = new String(process.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
            process.waitFor(30, TimeUnit.MINUTES);
            Files.deleteIfExists(script);
            return peerTokensPerSecond(output, process.exitValue(), python, out);
        } catch (IOException e) {
            out.info("PyTorch peer did not run: " + e.getMessage());
            return Double.NaN;
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            return Double.NaN;
        }
    }
}
