package dev.shardwise.train;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;

/**
 * What {@code shardwise ckpt} does with a checkpoint: {@link #inspect} (its tensors, the layout it was saved under,
 * its files and whether every checksum holds) and {@link #exportSafetensors} (Hugging Face GPT-2 or LLaMA layout).
 */
public final class CheckpointTools {
    private CheckpointTools() { }

    /** A saved tensor: global name, dtype, global shape, bytes, and how many pieces (rank shards) hold it. */
    public record TensorRow(String name, String dtype, List<Integer> shape, long bytes, int pieces) { }

    /** A data file and its size in bytes. */
    public record FileRow(String name, long bytes) { }

    /**
     * A checkpoint as {@code ckpt inspect} shows it.
     *
     * @param layout  the layout it was saved under (ranks, dp, tp, pp, vpp, zero); empty for format 1
     * @param problem why it cannot be used (a checksum, a missing or truncated file), or empty when every check holds
     */
    public record Inspection(Path dir, String format, long step, Map<String, Object> layout, Map<String, Object> model,
                             List<TensorRow> tensors, List<FileRow> files, Optional<String> problem) { }

    /**
     * Reads checkpoint {@code path} (a checkpoint, or a run directory: its newest) and verifies every checksum.
     *
     * @throws IOException if there is no readable manifest there, saying what to pass
     */
    @SuppressWarnings("unchecked")
    public static Inspection inspect(Path path) throws IOException {
        CheckpointIndex index = Checkpoint.index(Checkpoint.resolve(path));
        Map<String, Integer> pieces = new LinkedHashMap<>();
        for (CheckpointIndex.Piece p : index.pieces()) pieces.merge(p.tensor(), 1, Integer::sum);
        List<TensorRow> tensors = new ArrayList<>();
        index.tensors().forEach((name, info) -> tensors.add(new TensorRow(name, info.dtype(),
                java.util.Arrays.stream(info.shape()).boxed().toList(), info.numel() * CheckpointIndex.pieceElementBytes(info.dtype()),
                pieces.getOrDefault(name, 0))));
        List<FileRow> files = new ArrayList<>();
        for (String f : index.files().keySet()) {
            Path file = index.dir().resolve(f);
            files.add(new FileRow(f, Files.isRegularFile(file) ? Files.size(file) : -1));
        }
        Object layout = index.manifest().get("layout"), model = index.manifest().get("model");
        Object step = index.manifest().get("step");
        return new Inspection(index.dir(), index.format(), step instanceof Number n ? n.longValue() : -1,
                layout instanceof Map<?, ?> l ? (Map<String, Object>) l : Map.of(), model instanceof Map<?, ?> m ? (Map<String, Object>) m : Map.of(),
                tensors, files, ResumeChoice.problem(index.dir()));
    }

    /**
     * Writes the weights of checkpoint {@code path} (or a run directory's newest) into {@code out} as a Hugging Face
     * GPT-2 or LLaMA: {@code model.safetensors} and {@code config.json}. Checksums are verified first.
     *
     * @throws IOException              if the checkpoint is damaged or unreadable, or {@code out} cannot be written
     * @throws IllegalArgumentException if its model is neither a GPT-2 nor a LLaMA
     */
    public static Path exportSafetensors(Path path, Path out) throws IOException {
        Path dir = Checkpoint.resolve(path);
        CheckpointIndex index = Checkpoint.index(dir);
        Optional<String> problem = ResumeChoice.problem(dir);
        if (problem.isPresent()) throw new IOException("checkpoint " + dir + " is damaged (" + problem.get() + "); export another one");
        SafetensorsModel.export(index, Checkpoint.modelConfig(dir), out);
        return out;
    }
}
