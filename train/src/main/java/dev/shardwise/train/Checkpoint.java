package dev.shardwise.train;

import dev.shardwise.core.tensor.Tensor;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.AtomicMoveNotSupportedException;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.zip.CRC32C;

/**
 * A layout-independent checkpoint (ARCHITECTURE idea 4): tensors saved by global name with their global shape,
 * a CRC-32C checksum each, and the run's {@link TrainState}, in one directory:
 * <pre>
 *   checkpoints/step-000200/manifest.json   {"format", "step", "state": {...}, "model": {...},
 *                                            "tensors": [{"name", "dtype", "shape", "offset", "bytes", "crc32c"}]}
 *   checkpoints/step-000200/tensors.bin      the tensors' bytes, little-endian, one after another
 * </pre>
 * A checkpoint is written into a temporary directory, fsynced, then renamed into place, so a crash never leaves
 * a half-written checkpoint under the final name. Small files the run needs to be used later (the tokenizer)
 * are copied in beside the tensors. Reading checks every checksum and shape and refuses a
 * damaged or mismatched checkpoint with a message naming the tensor. Each entry describes a whole tensor here;
 * the manifest's per-entry offsets leave room for a rank to save only the slice it owns.
 */
public final class Checkpoint {
    static final String FORMAT = CheckpointIndex.FORMAT_1;
    static final String MANIFEST = "manifest.json";
    static final String DATA = "tensors.bin";

    private Checkpoint() { }

    /** Directory name of the checkpoint after {@code step} steps. */
    static String directoryName(long step) {
        return String.format("step-%06d", step);
    }

    /**
     * Writes {@code tensors} (contiguous) and {@code metadata} as the checkpoint of {@code step} under
     * {@code checkpointsDir}, atomically; returns its directory. An existing checkpoint of the same step is replaced.
     */
    static Path write(Path checkpointsDir, long step, Map<String, Tensor> tensors, Map<String, Object> metadata,
                      List<Path> attachments) throws IOException {
        Files.createDirectories(checkpointsDir);
        return writeAt(checkpointsDir.resolve(directoryName(step)), step, tensors, metadata, attachments);
    }

    /**
     * Writes the parameters of a model, {@code extra} tensors (names must not start with {@code param/}) and
     * {@code metadata} (its {@code step} becomes the manifest's) as one checkpoint in directory {@code dir} itself,
     * atomically (a temporary sibling directory, fsynced, renamed into place); an existing {@code dir} is replaced.
     * {@link #loadParameters} reads the parameters back and ignores the extras; {@link #readTensors} reads any.
     *
     * @throws IllegalArgumentException if an extra's name collides with a parameter's
     */
    public static Path writeModel(Path dir, dev.shardwise.model.ParameterSet params, Map<String, Tensor> extra,
                                  Map<String, Object> metadata, List<Path> attachments) throws IOException {
        Map<String, Tensor> tensors = parameterTensors(params);
        for (Map.Entry<String, Tensor> e : extra.entrySet()) {
            if (tensors.putIfAbsent(e.getKey(), e.getValue()) != null || e.getKey().startsWith("param/")) {
                throw new IllegalArgumentException("extra checkpoint tensor '" + e.getKey() + "' collides with the "
                        + "parameters' names (param/...); give it another prefix");
            }
        }
        Map<String, Object> rest = new LinkedHashMap<>(metadata);
        Object step = rest.remove("step");
        Path parent = dir.toAbsolutePath().getParent();
        if (parent != null) Files.createDirectories(parent);
        return writeAt(dir, step instanceof Number n ? n.longValue() : 0, tensors, rest, attachments);
    }

    /** The manifest of checkpoint {@code dir} beside its tensor list: step, state, model, tokenizer, and any others. */
    public static Map<String, Object> metadata(Path dir) throws IOException {
        Map<String, Object> m = new LinkedHashMap<>(readManifest(dir));
        m.remove("format");
        m.remove("tensors");
        m.remove("shards");
        return m;
    }

    /**
     * Fills each tensor of {@code into} (contiguous, of the saved dtype and shape) with the checkpoint tensor of
     * {@code dir} its key names, after checking every checksum of the checkpoint.
     *
     * @throws IOException naming the tensor if it is missing, of another dtype or shape, or damaged
     */
    public static void readTensors(Path dir, Map<String, Tensor> into) throws IOException {
        CheckpointIndex index = index(dir);
        index.verify();
        Map<String, FileChannel> open = new java.util.HashMap<>();
        try {
            for (Map.Entry<String, Tensor> e : into.entrySet()) {
                Tensor t = e.getValue();
                if (!t.isContiguous()) throw new IllegalArgumentException("readTensors needs contiguous tensors, got " + t.describe());
                index.read(e.getKey(), t.dtype().label(), t.shape(),
                        List.of(new CheckpointIndex.Span(0, t.numel(), t.segment(), t.byteOffset())), open);
            }
        } finally {
            for (FileChannel c : open.values()) c.close();
        }
    }

    /** Writes the checkpoint files into a temporary sibling of {@code target}, then renames it to {@code target}. */
    private static Path writeAt(Path target, long step, Map<String, Tensor> tensors, Map<String, Object> metadata,
                                List<Path> attachments) throws IOException {
        Path parentDir = target.toAbsolutePath().getParent();
        String base = target.getFileName().toString();
        Path tmp = parentDir.resolve(base + ".tmp-" + ProcessHandle.current().pid());
        deleteRecursively(tmp);
        Files.createDirectory(tmp);
        List<Map<String, Object>> entries = new ArrayList<>();
        try (FileChannel out = FileChannel.open(tmp.resolve(DATA), StandardOpenOption.CREATE_NEW, StandardOpenOption.WRITE)) {
            long offset = 0;
            for (Map.Entry<String, Tensor> e : tensors.entrySet()) {
                Tensor t = e.getValue();
                if (!t.isContiguous()) throw new IllegalArgumentException("checkpoint tensor " + e.getKey() + " is not contiguous");
                long bytes = t.numel() * t.dtype().byteSize();
                ByteBuffer buffer = t.segment().asSlice(t.byteOffset(), bytes).asByteBuffer();
                CRC32C crc = new CRC32C();
                crc.update(buffer.duplicate());
                while (buffer.hasRemaining()) out.write(buffer);
                Map<String, Object> entry = new LinkedHashMap<>();
                entry.put("name", e.getKey());
                entry.put("dtype", t.dtype().label());
                entry.put("shape", t.shape());
                entry.put("offset", offset);
                entry.put("bytes", bytes);
                entry.put("crc32c", HexFormat.of().toHexDigits((int) crc.getValue()));
                entries.add(entry);
                offset += bytes;
            }
            out.force(true);
        }
        for (Path file : attachments) Files.copy(file, tmp.resolve(file.getFileName()));
        Map<String, Object> manifest = new LinkedHashMap<>();
        manifest.put("format", FORMAT);
        manifest.put("step", step);
        manifest.putAll(metadata);
        manifest.put("tensors", entries);
        try (FileChannel out = FileChannel.open(tmp.resolve(MANIFEST), StandardOpenOption.CREATE_NEW, StandardOpenOption.WRITE)) {
            out.write(ByteBuffer.wrap((Json.write(manifest) + "\n").getBytes(StandardCharsets.UTF_8)));
            out.force(true);
        }
        Path old = null;
        if (Files.exists(target)) {
            old = parentDir.resolve(base + ".old-" + ProcessHandle.current().pid());
            Files.move(target, old);
        }
        try {
            Files.move(tmp, target, StandardCopyOption.ATOMIC_MOVE);
        } catch (AtomicMoveNotSupportedException e) {
            Files.move(tmp, target);
        }
        if (old != null) deleteRecursively(old);
        return target;
    }

    /** The checkpoint with the most steps under {@code checkpointsDir}, if any. */
    static Optional<Path> latest(Path checkpointsDir) throws IOException {
        if (!Files.isDirectory(checkpointsDir)) return Optional.empty();
        List<Path> found = new ArrayList<>();
        try (DirectoryStream<Path> dirs = Files.newDirectoryStream(checkpointsDir, "step-[0-9]*")) {
            for (Path d : dirs) {
                if (d.getFileName().toString().matches("step-\\d+") && Files.isRegularFile(d.resolve(MANIFEST))) found.add(d);
            }
        }
        return found.stream().max(Comparator.comparing(p -> Long.parseLong(p.getFileName().toString().substring(5))));
    }

    /**
     * The model config a checkpoint was written with.
     *
     * @throws IOException if {@code dir} is not a readable checkpoint
     */
    public static dev.shardwise.model.ModelConfig modelConfig(Path dir) throws IOException {
        Object model = readManifest(dir).get("model");
        if (!(model instanceof Map<?, ?> map)) throw new IOException("checkpoint " + dir + " has no model config in its manifest");
        @SuppressWarnings("unchecked")
        Map<String, Object> m = (Map<String, Object>) map;
        return ConfigLoader.modelFromMap(m);
    }

    /**
     * Loads the weights saved in checkpoint {@code dir} into {@code params}, by name.
     *
     * @throws IOException naming the tensor that is missing, mismatched or damaged
     */
    public static void loadParameters(Path dir, dev.shardwise.model.ParameterSet params) throws IOException {
        CheckpointIndex index = index(dir);
        index.verify();
        RunCheckpoints.read(index, params, List.of(new OptimizerState.Holding(OptimizerState.Kind.VALUES, 0, params.values())));
    }

    /** The parameters by their checkpoint names ({@code param/<name>}), in declaration order. */
    static Map<String, Tensor> parameterTensors(dev.shardwise.model.ParameterSet params) {
        Map<String, Tensor> tensors = new LinkedHashMap<>();
        for (dev.shardwise.model.Parameter p : params.parameters()) tensors.put("param/" + p.name(), p.value());
        return tensors;
    }

    /**
     * As {@link #parameterTensors(dev.shardwise.model.ParameterSet)}, the values taken from {@code flat} [P'], a
     * tensor laid out like the set's flat buffers (whole values gathered from ZeRO shards, say).
     */
    static Map<String, Tensor> parameterTensors(dev.shardwise.model.ParameterSet params, Tensor flat) {
        Map<String, Tensor> tensors = new LinkedHashMap<>();
        for (dev.shardwise.model.Parameter p : params.parameters()) {
            tensors.put("param/" + p.name(), flat.slice(0, Math.toIntExact(params.offsetOf(p)), Math.toIntExact(p.numel()))
                    .view(p.shape()));
        }
        return tensors;
    }

    /**
     * The checkpoint {@code path} names: itself if it holds a manifest, else the latest checkpoint of a run
     * directory (or of its {@code checkpoints/} folder).
     *
     * @throws IOException if there is none, saying where it looked
     */
    public static Path resolve(Path path) throws IOException {
        if (Files.isRegularFile(path.resolve(MANIFEST))) return path;
        Optional<Path> latest = latest(path.resolve("checkpoints")).or(() -> {
            try {
                return latest(path);
            } catch (IOException e) {
                return Optional.empty();
            }
        });
        return latest.orElseThrow(() -> new IOException("no checkpoint at " + path + " (looked for " + MANIFEST
                + ", then checkpoints/step-*); pass a run directory or one of its checkpoints/step-NNNNNN"));
    }

    /** The tokenizer a checkpoint's run used: its own copy of a trained one, else the built-in it names. */
    public static dev.shardwise.data.Tokenizer tokenizer(Path dir) throws IOException {
        Path file = dir.resolve(dev.shardwise.data.DatasetPreparer.TOKENIZER_FILE);
        if (Files.isRegularFile(file)) return dev.shardwise.data.Tokenizers.load(file);
        Object name = readManifest(dir).get("tokenizer");
        if (name == null) throw new IOException("checkpoint " + dir + " names no tokenizer and holds no tokenizer file");
        return dev.shardwise.data.Tokenizers.named(name.toString());
    }

    /** Reads a checkpoint's manifest (its metadata and tensor list), of either format. */
    static Map<String, Object> readManifest(Path dir) throws IOException {
        return index(dir).manifest();
    }

    /**
     * The table of contents of checkpoint {@code dir}.
     *
     * @throws IOException if it has no readable manifest, saying so and what to pass instead
     */
    static CheckpointIndex index(Path dir) throws IOException {
        try {
            return CheckpointIndex.open(dir);
        } catch (IOException e) {
            throw new IOException("checkpoint " + dir + " cannot be read: " + e.getMessage() + " (pass a directory such as "
                    + "runs/x/checkpoints/step-000200, or a run directory to take its newest checkpoint)", e);
        }
    }

    static void deleteRecursively(Path path) throws IOException {
        if (!Files.exists(path)) return;
        try (var walk = Files.walk(path)) {
            for (Path p : walk.sorted(Comparator.reverseOrder()).toList()) Files.delete(p);
        }
    }
}
