package dev.shardwise.train;

import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;
import dev.shardwise.data.BatchSampler;
import dev.shardwise.model.Gpt;
import dev.shardwise.model.ModelConfig;
import dev.shardwise.core.memory.StepArena;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.EnumMap;
import java.util.HashMap;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.*;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * A checkpoint of a GPT-2 and of a LLaMA-style model (grouped-query attention) exported as Hugging Face safetensors
 * loads by GPT2LMHeadModel's or LlamaForCausalLM's names into tools/pytorch/hf_logits.py (PyTorch, or NumPy where
 * python3-torch is missing) with logits equal to Shardwise's within 1e-5, and {@code --init-from} of that export
 * starts a run whose first-step loss is the loss of those weights on the first batch.
 */
class SafetensorsExportTest {
    static final int B = 2, T = 8;

    @TempDir
    static Path dir;
    static Path data;

    /** The two architectures, as the model keys of a small run. */
    enum Family {
        GPT2(Map.of("vocabSize", 300, "contextLength", 8, "layers", 2, "hidden", 16, "heads", 2, "kvHeads", 2, "ffnHidden", 64)),
        LLAMA(Map.ofEntries(Map.entry("vocabSize", 300), Map.entry("contextLength", 8), Map.entry("layers", 2), Map.entry("hidden", 16),
                Map.entry("heads", 4), Map.entry("kvHeads", 2), Map.entry("ffnHidden", 40), Map.entry("norm", "rms-norm"),
                Map.entry("mlp", "swiglu"), Map.entry("positions", "rotary"), Map.entry("bias", false)));

        final Map<String, Object> model;

        Family(Map<String, Object> model) {
            this.model = model;
        }
    }

    static final Map<Family, Path> trained = new EnumMap<>(Family.class);

    @BeforeAll
    static void trainSixSteps() throws IOException {
        data = TrainerResumeTest.tinyData(dir);
        for (Family family : Family.values()) {
            Path run = dir.resolve("run-" + family);
            new Trainer(ConfigLoader.resolve(Map.of(), "test", flags(family, run, 1337)), TrainerResumeTest.quiet()).run(false);
            trained.put(family, run.resolve("checkpoints/step-000006"));
        }
    }

    static Map<String, Object> flags(Family family, Path run, long seed) {
        Map<String, Object> flags = new HashMap<>(TrainerResumeTest.flags(data, run, 1, 0));
        flags.put("seed", seed);
        flags.put("gradAccumulation", 1);
        flags.put("model", family.model);
        return flags;
    }

    /** A GPT of the checkpoint's config with its weights. */
    static Gpt load(Family family, MemoryPool pool) throws IOException {
        ModelConfig config = Checkpoint.modelConfig(trained.get(family));
        Gpt model = new Gpt(config, Gpt.declare(config).allocate(pool, DType.F32));
        Checkpoint.loadParameters(trained.get(family), model.parameters());
        return model;
    }

    /** Debian's python3 (where python3-torch installs) if it has PyTorch, else the first python3 with PyTorch or NumPy. */
    static String python() throws IOException, InterruptedException {
        for (String module : new String[]{"torch", "numpy"}) {
            for (String python : new String[]{"/usr/bin/python3", "python3"}) {
                try {
                    Process p = new ProcessBuilder(python, "-c", "import " + module).redirectErrorStream(true).start();
                    p.getInputStream().readAllBytes();
                    if (p.waitFor() == 0) return python;
                } catch (IOException notThere) {
                    // try the next
                }
            }
        }
        return null;
    }

    @ParameterizedTest
    @EnumSource(Family.class)
    void exportedLogitsMatchShardwiseInHuggingFaceNames(Family family) throws IOException, InterruptedException {
        String python = python();
        assumeTrue(python != null, "python3-torch is not installed (nor NumPy for the fallback): apt-get install python3-torch");
        Path hf = CheckpointTools.exportSafetensors(trained.get(family), dir.resolve("hf-" + family));
        MemoryPool pool = new MemoryPool("test", MemoryPool.UNLIMITED);
        float[] expected;
        ByteBuffer ids = ByteBuffer.allocate(4 * B * T).order(ByteOrder.LITTLE_ENDIAN);
        try (Gpt model = load(family, pool); StepArena arena = new StepArena(pool);
             Tensor tokens = Tensor.allocate(pool, MemoryCategory.BUFFERS, DType.I32, B, T)) {
            for (int b = 0; b < B; b++) {
                for (int t = 0; t < T; t++) {
                    int id = (b * 131 + t * 17 + 5) % 300;
                    tokens.set(id, b, t);
                    ids.putInt(id);
                }
            }
            expected = model.logits(arena, tokens).toFloatArray();
        }
        Path tokensFile = dir.resolve("tokens-" + family + ".bin"), logitsFile = dir.resolve("logits-" + family + ".bin");
        Files.write(tokensFile, ids.array());
        Path script = Path.of(System.getProperty("user.dir")).getParent().resolve("tools/pytorch/hf_logits.py");
        Process p = new ProcessBuilder(python, script.toString(), hf.toString(), tokensFile.toString(),
                String.valueOf(B), String.valueOf(T), logitsFile.toString()).redirectErrorStream(true).start();
        String output = new String(p.getInputStream().readAllBytes());
        int status = p.waitFor();
        assertEquals(0, status, "hf_logits.py failed:\n" + output);
        System.out.println("hf_logits.py: " + output.strip());
        ByteBuffer got = ByteBuffer.wrap(Files.readAllBytes(logitsFile)).order(ByteOrder.LITTLE_ENDIAN);
        assertEquals(4L * expected.length, got.capacity(), "logits [B·T, V]");
        double maxDiff = 0;
        for (float e : expected) maxDiff = Math.max(maxDiff, Math.abs(e - got.getFloat()));
        System.out.printf("exported %s logits vs Shardwise: max abs diff %.3g over %d logits%n", family, maxDiff, expected.length);
        assertTrue(maxDiff <= 1e-5, "max abs diff " + maxDiff + " > 1e-5 (" + output.strip() + ")");
    }

    @ParameterizedTest
    @EnumSource(Family.class)
    void initFromTheExportStartsFromItsWeights(Family family) throws IOException {
        Path hf = CheckpointTools.exportSafetensors(trained.get(family), dir.resolve("hf-init-" + family));
        long seed = 7;   // another seed than the checkpoint's run: its initialisation must not matter, only the file
        double expected;
        MemoryPool pool = new MemoryPool("test", MemoryPool.UNLIMITED);
        try (TrainingData trainingData = TrainingData.open(data, 300, TrainerResumeTest.quiet()); Gpt model = load(family, pool);
             StepArena arena = new StepArena(pool);
             Tensor batch = Tensor.allocate(pool, MemoryCategory.BUFFERS, DType.I32, 4, T + 1);
             Tensor tokens = Tensor.allocate(pool, MemoryCategory.BUFFERS, DType.I32, 4, T);
             Tensor targets = Tensor.allocate(pool, MemoryCategory.BUFFERS, DType.I32, 4, T)) {
            new BatchSampler(trainingData.train(), 4, T, seed).next(batch);
            for (int b = 0; b < 4; b++) {
                for (int t = 0; t < T; t++) {
                    tokens.set(batch.getDouble(b, t), b, t);
                    targets.set(batch.getDouble(b, t + 1), b, t);
                }
            }
            expected = model.evaluate(arena, tokens, targets);
        }
        Map<String, Object> flags = flags(family, dir.resolve("init-run-" + family), seed);
        flags.put("steps", 1);
        flags.put("initFrom", hf.toString());
        new Trainer(ConfigLoader.resolve(Map.of(), "test", flags), TrainerResumeTest.quiet()).run(false);
        double first = TrainerResumeTest.losses(dir.resolve("init-run-" + family)).getFirst();
        assertEquals(expected, first, 1e-6 * Math.abs(expected), "first-step loss of a run started from the export");

        flags.put("runDir", dir.resolve("init-bad-" + family).toString());
        Map<String, Object> oneLayer = new HashMap<>(family.model);
        oneLayer.put("layers", 1);
        flags.put("model", oneLayer);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> new Trainer(ConfigLoader.resolve(Map.of(), "test", flags), TrainerResumeTest.quiet()).run(false));
        assertTrue(e.getMessage().contains("--init-from") && e.getMessage().contains("config.json"), e.getMessage());
    }
}
