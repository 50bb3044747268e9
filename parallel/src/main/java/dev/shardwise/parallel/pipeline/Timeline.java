package dev.shardwise.parallel.pipeline;

import dev.shardwise.parallel.pipeline.Instruction.Backward;
import dev.shardwise.parallel.pipeline.Instruction.BackwardInput;
import dev.shardwise.parallel.pipeline.Instruction.BackwardWeight;
import dev.shardwise.parallel.pipeline.Instruction.Forward;
import dev.shardwise.parallel.pipeline.Instruction.OptimizerStep;
import dev.shardwise.parallel.pipeline.Instruction.ReceiveActivation;
import dev.shardwise.parallel.pipeline.Instruction.ReceiveGradient;
import dev.shardwise.parallel.pipeline.Instruction.ReduceGradients;
import dev.shardwise.parallel.pipeline.Instruction.SendActivation;
import dev.shardwise.parallel.pipeline.Instruction.SendGradient;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.util.List;
import java.util.Locale;

/**
 * Writes an executed pipeline step of every rank as a Chrome trace (the Trace Event Format that Perfetto and
 * chrome://tracing open): ARCHITECTURE.md idea 3's timeline, drawn from the same instruction lists the executor
 * ran. One row per rank (pid = tid = the stage), one complete ("X") event per instruction, named like the
 * builders' tables: {@code F3.0} (forward of micro-batch 3 on chunk 0), {@code B3.0} (backward, or its input half),
 * {@code W3.0}, {@code recv-act 3.0}, {@code recv-grad 3.0}, {@code send-act 3.0}, {@code send-grad 3.0},
 * {@code reduce}, {@code optimizer}; the category is the phase (forward-compute, backward-compute, pipeline-wait,
 * pipeline-send, grads-reduce, optimizer). Times are microseconds since each rank's step began, so ranks that start
 * the step together (a barrier before it) line up. Finer {@link Span}s (an MoE block's all-to-alls) are drawn on
 * their stage's row too, nested inside the instruction that ran them.
 */
public final class Timeline {
    private Timeline() { }

    /**
     * A span inside a stage's step that no instruction names, such as an expert-parallel all-to-all.
     *
     * @param stage    the stage whose row it is drawn on
     * @param name     the event's name, e.g. {@code a2a dispatch}
     * @param category its phase, e.g. {@code expert-all-to-all}
     * @param startNs  when it started, in nanoseconds since the stage's step began
     * @param endNs    when it ended, same origin
     */
    public record Span(int stage, String name, String category, long startNs, long endNs) { }

    /** {@link #write(Path, List, List)} without finer spans. */
    public static void write(Path file, List<PipelineExecutor.Step> steps) throws IOException {
        write(file, steps, List.of());
    }

    /**
     * Writes {@code steps} (one per rank, any order) and {@code spans} to {@code file}: to a temporary file beside it, forced to disk,
     * then renamed over it, so a reader sees the old file or the whole new one.
     *
     * @throws IOException if the directory cannot be written; the message names the file
     */
    public static void write(Path file, List<PipelineExecutor.Step> steps, List<Span> spans) throws IOException {
        Path target = file.toAbsolutePath();
        Path temp = Files.createTempFile(target.getParent(), "." + target.getFileName(), ".tmp");
        try {
            try (FileChannel out = FileChannel.open(temp, StandardOpenOption.WRITE, StandardOpenOption.TRUNCATE_EXISTING)) {
                ByteBuffer bytes = ByteBuffer.wrap(json(steps, spans).getBytes(StandardCharsets.UTF_8));
                while (bytes.hasRemaining()) out.write(bytes);
                out.force(true);
            }
            Files.move(temp, target, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
        } catch (IOException e) {
            Files.deleteIfExists(temp);
            throw new IOException("timeline: could not write " + target + ": " + e.getMessage(), e);
        }
    }

    /** The trace as JSON: {@code {"traceEvents":[...],"displayTimeUnit":"ms"}}, one line per event. */
    static String json(List<PipelineExecutor.Step> steps) {
        return json(steps, List.of());
    }

    /** As {@link #json(List)}, with {@code spans} after the instructions. */
    static String json(List<PipelineExecutor.Step> steps, List<Span> spans) {
        StringBuilder out = new StringBuilder("{\"traceEvents\":[\n");
        boolean first = true;
        for (PipelineExecutor.Step step : steps) {
            int rank = step.stage();
            for (String meta : List.of("process_name", "thread_name")) {
                if (!first) out.append(",\n");
                first = false;
                out.append("{\"name\":\"").append(meta).append("\",\"ph\":\"M\",\"pid\":").append(rank).append(",\"tid\":")
                        .append(rank).append(",\"args\":{\"name\":\"stage ").append(rank).append("\"}}");
            }
            for (PipelineExecutor.Event e : step.events()) {
                out.append(",\n{\"name\":\"").append(name(e.instruction())).append("\",\"cat\":\"").append(category(e.instruction()))
                        .append("\",\"ph\":\"X\",\"pid\":").append(rank).append(",\"tid\":").append(rank)
                        .append(",\"ts\":").append(micros(e.startNs())).append(",\"dur\":").append(micros(e.endNs() - e.startNs()))
                        .append(",\"args\":{\"instruction\":\"").append(e.instruction()).append("\"}}");
            }
        }
        for (Span s : spans) {
            out.append(",\n{\"name\":\"").append(s.name()).append("\",\"cat\":\"").append(s.category())
                    .append("\",\"ph\":\"X\",\"pid\":").append(s.stage()).append(",\"tid\":").append(s.stage())
                    .append(",\"ts\":").append(micros(s.startNs())).append(",\"dur\":").append(micros(s.endNs() - s.startNs())).append("}");
        }
        return out.append("\n],\"displayTimeUnit\":\"ms\"}\n").toString();
    }

    private static String micros(long nanos) {
        return String.format(Locale.ROOT, "%.3f", nanos / 1e3);
    }

    /** The event's name, as the builders' tables write it. */
    static String name(Instruction instruction) {
        return switch (instruction) {
            case Forward f -> "F" + f.mb() + "." + f.chunk();
            case Backward b -> "B" + b.mb() + "." + b.chunk();
            case BackwardInput b -> "B" + b.mb() + "." + b.chunk();
            case BackwardWeight w -> "W" + w.mb() + "." + w.chunk();
            case SendActivation s -> "send-act " + s.mb() + "." + s.chunk();
            case ReceiveActivation r -> "recv-act " + r.mb() + "." + r.chunk();
            case SendGradient s -> "send-grad " + s.mb() + "." + s.chunk();
            case ReceiveGradient r -> "recv-grad " + r.mb() + "." + r.chunk();
            case ReduceGradients r -> "reduce";
            case OptimizerStep o -> "optimizer";
        };
    }

    /** The phase the executor counts the instruction's time in. */
    static String category(Instruction instruction) {
        return switch (instruction) {
            case Forward f -> "forward-compute";
            case Backward b -> "backward-compute";
            case BackwardInput b -> "backward-compute";
            case BackwardWeight w -> "backward-compute";
            case SendActivation s -> "pipeline-send";
            case ReceiveActivation r -> "pipeline-wait";
            case SendGradient s -> "pipeline-send";
            case ReceiveGradient r -> "pipeline-wait";
            case ReduceGradients r -> "grads-reduce";
            case OptimizerStep o -> "optimizer";
        };
    }
}
