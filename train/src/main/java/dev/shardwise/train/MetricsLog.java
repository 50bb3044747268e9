package dev.shardwise.train;

import java.io.BufferedWriter;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/**
 * {@code metrics.jsonl}: one JSON object per optimizer step ({@code step, loss, lr, grad_norm, tokens_per_s,
 * mfu, step_ms, mem_peak_bytes}, plus {@code val_loss} on evaluation steps), losses at full double precision
 * so two runs can be compared exactly. Each line is flushed as written.
 */
final class MetricsLog implements AutoCloseable {
    private final BufferedWriter out;

    /**
     * Opens {@code file} for appending. When resuming from {@code keepThroughStep}, lines of later steps (from the
     * interrupted run) are dropped first, so the file reads as one uninterrupted run; a fresh run starts it empty.
     */
    MetricsLog(Path file, long keepThroughStep) throws IOException {
        List<String> kept = new ArrayList<>();
        if (keepThroughStep > 0 && Files.isRegularFile(file)) {
            for (String line : Files.readAllLines(file)) {
                if (line.isBlank()) continue;
                Object step = Json.readObject(line).get("step");
                if (step instanceof Number n && n.longValue() <= keepThroughStep) kept.add(line);
            }
        }
        Path tmp = file.resolveSibling(file.getFileName() + ".tmp");
        Files.write(tmp, kept, StandardCharsets.UTF_8);
        Files.move(tmp, file, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
        this.out = Files.newBufferedWriter(file, StandardCharsets.UTF_8, StandardOpenOption.APPEND);
    }

    void write(Map<String, Object> metrics) throws IOException {
        out.write(Json.write(metrics));
        out.newLine();
        out.flush();
    }

    /** Reads back every line as a map (for plots and tests). */
    static List<Map<String, Object>> read(Path file) throws IOException {
        List<Map<String, Object>> rows = new ArrayList<>();
        for (String line : Files.readAllLines(file)) if (!line.isBlank()) rows.add(Json.readObject(line));
        return rows;
    }

    @Override
    public void close() throws IOException {
        out.close();
    }
}
