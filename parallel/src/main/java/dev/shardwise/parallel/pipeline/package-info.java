/**
 * Pipeline parallelism as data (ARCHITECTURE.md idea 3): a {@link dev.shardwise.parallel.pipeline.PipelineSchedule}
 * is one list of {@link dev.shardwise.parallel.pipeline.Instruction}s per stage, built by a pure function of
 * ({@link dev.shardwise.parallel.pipeline.ScheduleKind}, p, v, m); {@link dev.shardwise.parallel.pipeline.ScheduleValidator}
 * checks it by simulation before the first step, {@link dev.shardwise.parallel.pipeline.PipelineExecutor} runs one
 * stage's list against a {@link dev.shardwise.parallel.pipeline.StageWork}, and
 * {@link dev.shardwise.parallel.pipeline.Timeline} draws what ran.
 *
 * <p>Index names: {@code mb} in [0, m) micro-batch, {@code chunk} in [0, v) model chunk on a stage, {@code stage}
 * in [0, p). Chunk c of stage s is model part c·p + s. Builders: GPipe (Huang et al. 2019), 1F1B and interleaved
 * 1F1B (Narayanan et al. 2021), ZB-H1 (Qi et al. 2023); each one's Javadoc shows its table and derives its bubble.
 */
package dev.shardwise.parallel.pipeline;
