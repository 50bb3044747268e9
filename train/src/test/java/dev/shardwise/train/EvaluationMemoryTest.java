package dev.shardwise.train;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.file.Path;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Validation runs a micro-batch at a time: under data parallelism the leader evaluates the global batch, and doing
 * that in one pass would need ranks × a training step's activations on one rank.
 */
class EvaluationMemoryTest {
    @TempDir
    Path dir;

    @Test
    void leaderEvaluatesWithinTheMemoryOfATrainingStep() throws IOException {
        Path data = TrainerResumeTest.tinyData(dir);
        Path run = dir.resolve("dp4");
        Trainer.Result r = new Trainer(TrainerResumeTest.config(data, run, 4, 0), TrainerResumeTest.quiet()).run(false);
        long stepPeak = 0;
        for (Map<String, Object> row : MetricsLog.read(run.resolve("metrics.jsonl"))) {
            stepPeak = Math.max(stepPeak, ((Number) row.get("mem_peak_bytes")).longValue());
        }
        long evalBatchTensor = 4L * (8 + 1);   // one row of i32 tokens, the only extra allocation of evaluation
        assertTrue(r.peakMemoryBytes() <= stepPeak + evalBatchTensor, "rank 0's peak with evaluation "
                + r.peakMemoryBytes() + " B exceeds its training steps' peak " + stepPeak + " B: evaluation ran more rows at once");
    }
}
