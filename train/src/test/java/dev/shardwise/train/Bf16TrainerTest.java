package dev.shardwise.train;

import dev.shardwise.core.kernels.onednn.OneDnn;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.*;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * bf16 mixed-precision training through the {@link Trainer}: it tracks the fp32 run's losses, gives the same
 * losses under data parallelism and every ZeRO stage (gradients reduced in fp32), and its checkpoints (fp32
 * masters) resume in either precision.
 */
class Bf16TrainerTest {
    /**
     * bf16 vs fp32 losses over 6 steps of the toy model: relative 2^-6. One step's loss moves by about 2^-9 relative
     * per rounded operand; the updates then carry the difference on, so a few steps stay within a few of those.
     */
    private static final double BF16_VS_FP32 = 0x1p-6;

    @TempDir
    static Path dir;
    static Path data;

    @BeforeAll
    static void prepareTinyData() throws IOException {
        data = TrainerResumeTest.tinyData(dir);
    }

    @BeforeEach
    void needsOneDnn() {
        assumeTrue(OneDnn.isAvailable(), () -> "skipped: " + OneDnn.unavailableReason());
    }

    static TrainConfig config(Path runDir, int ranks, int zero, String precision) {
        Map<String, Object> flags = TrainerResumeTest.flags(data, runDir, ranks, zero);
        flags.put("precision", precision);
        return ConfigLoader.resolve(Map.of(), "test", flags);
    }

    private static List<Double> train(String name, int ranks, int zero, String precision) throws IOException {
        Path run = dir.resolve(name);
        new Trainer(config(run, ranks, zero, precision), TrainerResumeTest.quiet()).run(false);
        return TrainerResumeTest.losses(run);
    }

    @Test
    void bf16RunTracksTheFp32RunsLosses() throws IOException {
        List<Double> fp32 = train("fp32", 1, 0, "fp32"), bf16 = train("bf16", 1, 0, "bf16");
        ZeroTrainerTest.assertClose(fp32, bf16, BF16_VS_FP32, "bf16 vs fp32");
        assertNotEquals(fp32, bf16, "bf16 losses equal fp32's to the bit: the bf16 products did not run");
        assertTrue(bf16.getLast() < bf16.getFirst(), "bf16 training lowers the loss: " + bf16);
    }

    @Test
    void dataParallelAndEveryZeroStageTrainLikeOneRankInBf16() throws IOException {
        List<Double> one = train("bf16-1rank", 1, 0, "bf16");
        List<Double> dp = train("bf16-dp2", 2, 0, "bf16");
        // dp 2 sums two ranks' fp32 gradients of the same bf16-rounded operands: fp32 reassociation only
        ZeroTrainerTest.assertClose(one, dp, 1e-5, "bf16 dp=2 vs one rank");
        for (int stage = 1; stage <= 3; stage++) {
            ZeroTrainerTest.assertClose(dp, train("bf16-zero" + stage, 2, stage, "bf16"), 1e-6, "bf16 zero-" + stage + " vs zero-0");
        }
    }

    /** bf16 under tensor parallelism, with and without sequence parallelism (tp 2, batch rows split over no dp). */
    @Test
    void tensorAndSequenceParallelismTrainLikeOneRankInBf16() throws IOException {
        List<Double> one = train("bf16-tp-single", 1, 0, "bf16");
        for (boolean sequenceParallel : new boolean[] {false, true}) {
            Path run = dir.resolve("bf16-tp2" + (sequenceParallel ? "-sp" : ""));
            Map<String, Object> flags = TrainerResumeTest.flags(data, run, 2, 0);
            flags.put("precision", "bf16");
            flags.put("tp", 2);
            flags.put("batchSize", 4);
            flags.put("sequenceParallel", sequenceParallel);
            new Trainer(ConfigLoader.resolve(Map.of(), "test", flags), TrainerResumeTest.quiet()).run(false);
            // the same bf16-rounded operands; fp32 sums in another order (the all-reduces) only
            ZeroTrainerTest.assertClose(one, TrainerResumeTest.losses(run), 1e-4,
                    "bf16 tp 2" + (sequenceParallel ? " + sequence parallel" : "") + " vs one rank");
        }
    }

    @Test
    void checkpointsResumeInEitherPrecision() throws IOException {
        Path fp32 = dir.resolve("ck-fp32"), bf16 = dir.resolve("ck-bf16");
        new Trainer(config(fp32, 1, 0, "fp32"), TrainerResumeTest.quiet()).run(false);
        new Trainer(config(bf16, 1, 0, "bf16"), TrainerResumeTest.quiet()).run(false);

        Path fp32ToBf16 = dir.resolve("ck-fp32-to-bf16"), bf16ToFp32 = dir.resolve("ck-bf16-to-fp32");
        ZeroTrainerTest.copyRun(fp32, fp32ToBf16, 3);
        new Trainer(config(fp32ToBf16, 1, 0, "bf16"), TrainerResumeTest.quiet()).run(true);
        ZeroTrainerTest.copyRun(bf16, bf16ToFp32, 3);
        new Trainer(config(bf16ToFp32, 1, 0, "fp32"), TrainerResumeTest.quiet()).run(true);

        List<Double> a = TrainerResumeTest.losses(fp32), b = TrainerResumeTest.losses(bf16);
        List<Double> ab = TrainerResumeTest.losses(fp32ToBf16), ba = TrainerResumeTest.losses(bf16ToFp32);
        assertEquals(a.subList(0, 3), ab.subList(0, 3), "steps before the resume are the fp32 run's");
        assertEquals(b.subList(0, 3), ba.subList(0, 3), "steps before the resume are the bf16 run's");
        ZeroTrainerTest.assertClose(a, ab, BF16_VS_FP32, "fp32 checkpoint resumed in bf16");
        ZeroTrainerTest.assertClose(b, ba, BF16_VS_FP32, "bf16 checkpoint resumed in fp32");
        assertNotEquals(a.subList(3, 6), ab.subList(3, 6), "the resumed steps ran in bf16");
    }

    @Test
    void bf16ConfigRoundTripsAndOtherPrecisionsAreRefused() {
        assertEquals("bf16", config(dir.resolve("rt"), 1, 0, "bf16").precision());
        assertEquals("fp32", ConfigLoader.resolve(Map.of(), "test", TrainerResumeTest.flags(data, dir.resolve("d"), 1, 0)).precision(),
                "fp32 is the default");
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> config(dir.resolve("x"), 1, 0, "fp16"));
        assertTrue(e.getMessage().contains("fp32 or bf16"), e.getMessage());
    }
}
