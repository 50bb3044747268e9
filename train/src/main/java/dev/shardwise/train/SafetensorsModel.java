package dev.shardwise.train;

import dev.shardwise.model.ModelConfig;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * A model in Hugging Face's layout: {@code model.safetensors} (fp32 tensors under the names of a
 * {@link HfArchitecture}, GPT-2's or LLaMA's) beside a {@code config.json}. {@link #export} writes a checkpoint's
 * weights so; {@link #open} reads such a directory as a {@link TensorSource} under Shardwise's names
 * ({@code param/...}), transposing GPT-2's Conv1D weights and joining LLaMA's q, k and v projections into our qkv
 * as it reads, for {@code train --init-from}.
 */
final class SafetensorsModel implements TensorSource {
    static final String WEIGHTS = "model.safetensors";
    static final String CONFIG = "config.json";

    /**
     * Writes the weights of checkpoint {@code index} (model {@code model}) as a Hugging Face GPT-2 or LLaMA into
     * directory {@code out}: {@code model.safetensors} (fp32) and {@code config.json}, each through a temporary name,
     * fsynced, then renamed. One tensor is held in memory at a time.
     *
     * @throws IllegalArgumentException if the model is neither a GPT-2 nor a LLaMA
     */
    static void export(CheckpointIndex index, ModelConfig model, Path out) throws IOException {
        HfArchitecture architecture = HfArchitecture.of(model, "the checkpoint's model");
        List<HfArchitecture.Tensor> tensors = architecture.tensors(model);
        Map<String, Object> header = new LinkedHashMap<>();
        Map<String, int[]> shapes = new LinkedHashMap<>();
        long at = 0;
        for (HfArchitecture.Tensor t : tensors) {
            CheckpointIndex.TensorInfo info = index.tensors().get("param/" + t.name());
            if (info == null) throw new IOException("checkpoint " + index.dir() + " has no tensor 'param/" + t.name() + "'");
            if (!info.dtype().equals("f32")) throw new IOException("tensor " + t.name() + " is " + info.dtype() + "; export writes f32 only");
            int[] shape = info.shape().clone();
            if (t.rows() >= 0) shape[0] = t.rows();
            shapes.put(t.hfName(), info.shape());
            long bytes = 4 * Arrays.stream(shape).asLongStream().reduce(1, (a, b) -> a * b);
            header.put(t.hfName(), Map.of("dtype", "F32", "shape", t.transposed() ? new int[]{shape[1], shape[0]} : shape,
                    "data_offsets", List.of(at, at + bytes)));
            at += bytes;
        }
        header.put("__metadata__", Map.of("format", "pt", "source", "shardwise " + index.dir().getFileName()));
        byte[] json = Json.write(header).getBytes(StandardCharsets.UTF_8);
        int padded = (json.length + 7) / 8 * 8;   // the data starts 8-byte aligned, as safetensors recommends
        Files.createDirectories(out);
        Path tmp = out.resolve(WEIGHTS + ".tmp");
        try (FileChannel file = FileChannel.open(tmp, StandardOpenOption.CREATE, StandardOpenOption.TRUNCATE_EXISTING,
                StandardOpenOption.WRITE); Arena arena = Arena.ofConfined()) {
            ByteBuffer head = ByteBuffer.allocate(8 + padded).order(ByteOrder.LITTLE_ENDIAN);
            head.putLong(padded).put(json);
            while (head.hasRemaining()) head.put((byte) ' ');
            head.flip();
            while (head.hasRemaining()) file.write(head);
            Map<String, FileChannel> open = new LinkedHashMap<>();
            try {
                for (HfArchitecture.Tensor t : tensors) {
                    int[] shape = shapes.get(t.hfName());
                    long n = Arrays.stream(shape).asLongStream().reduce(1, (a, b) -> a * b), cols = n / shape[0];
                    long rows = t.rows() >= 0 ? t.rows() : shape[0];
                    MemorySegment part = arena.allocate(rows * cols * 4, 64);
                    index.read("param/" + t.name(), "f32", shape,
                            List.of(new CheckpointIndex.Span(t.firstRow() * cols, rows * cols, part, 0)), open);
                    MemorySegment data = t.transposed() ? transpose(arena, part, shape[0], shape[1]) : part;
                    ByteBuffer buffer = data.asByteBuffer();
                    while (buffer.hasRemaining()) file.write(buffer);
                }
            } finally {
                for (FileChannel c : open.values()) c.close();
            }
            file.force(true);
        }
        Files.move(tmp, out.resolve(WEIGHTS), StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
        Path configTmp = out.resolve(CONFIG + ".tmp");
        try (FileChannel file = FileChannel.open(configTmp, StandardOpenOption.CREATE, StandardOpenOption.TRUNCATE_EXISTING,
                StandardOpenOption.WRITE)) {
            ByteBuffer text = ByteBuffer.wrap((Json.write(architecture.config(model)) + "\n").getBytes(StandardCharsets.UTF_8));
            while (text.hasRemaining()) file.write(text);
            file.force(true);
        }
        Files.move(configTmp, out.resolve(CONFIG), StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
    }

    /** [rows, cols] row-major -> [cols, rows] row-major, fp32. */
    private static MemorySegment transpose(Arena arena, MemorySegment in, int rows, int cols) {
        MemorySegment out = arena.allocate((long) rows * cols * 4, 64);
        for (int i = 0; i < rows; i++) {
            for (int j = 0; j < cols; j++) {
                out.setAtIndex(java.lang.foreign.ValueLayout.JAVA_FLOAT_UNALIGNED, (long) j * rows + i,
                        in.getAtIndex(java.lang.foreign.ValueLayout.JAVA_FLOAT_UNALIGNED, (long) i * cols + j));
            }
        }
        return out;
    }

    // ------------------------------------------------------------------ reading (train --init-from)

    /**
     * Where a Hugging Face tensor's bytes lie ([begin, end) of the data section), whether they are the transpose of
     * the Shardwise tensor, and which of its rows they hold ({@code rows} -1: all).
     */
    private record Stored(String hfName, long begin, long end, boolean transposed, int firstRow, int rows) { }

    private final Path file;
    private final long dataStart;
    private final Map<String, List<Stored>> entries;   // Shardwise name -> the stored tensors that make it, by first row
    private final ModelConfig model;

    private SafetensorsModel(Path file, long dataStart, Map<String, List<Stored>> entries, ModelConfig model) {
        this.file = file;
        this.dataStart = dataStart;
        this.entries = entries;
        this.model = model;
    }

    /** The model {@code config.json} describes, as a Shardwise config. */
    ModelConfig model() { return model; }

    /**
     * Opens a Hugging Face GPT-2 or LLaMA directory ({@code model.safetensors} + {@code config.json}, or a path to
     * the {@code .safetensors} file with {@code config.json} beside it).
     *
     * @throws IOException if a file is missing or malformed, or the model is not one Shardwise can run, saying which
     */
    @SuppressWarnings("unchecked")
    static SafetensorsModel open(Path path) throws IOException {
        Path dir = Files.isDirectory(path) ? path : path.toAbsolutePath().getParent();
        Path weights = Files.isDirectory(path) ? path.resolve(WEIGHTS) : path, configFile = dir.resolve(CONFIG);
        for (Path f : List.of(weights, configFile)) {
            if (!Files.isRegularFile(f)) {
                throw new IOException("--init-from " + path + ": " + f + " does not exist; pass a directory holding " + WEIGHTS + " and "
                        + CONFIG + " (as shardwise ckpt export --format safetensors writes)");
            }
        }
        Map<String, Object> config;
        Map<String, Object> header;
        long dataStart;
        try (FileChannel in = FileChannel.open(weights, StandardOpenOption.READ)) {
            ByteBuffer size = ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN);
            while (size.hasRemaining()) if (in.read(size) < 0) throw new IOException(weights + " is truncated: no safetensors header");
            long n = size.flip().getLong();
            if (n <= 0 || n > 100_000_000 || 8 + n > in.size()) throw new IOException(weights + " is not a safetensors file (header size " + n + ")");
            ByteBuffer json = ByteBuffer.allocate((int) n);
            while (json.hasRemaining()) if (in.read(json) < 0) throw new IOException(weights + " is truncated inside its header");
            try {
                header = Json.readObject(new String(json.array(), StandardCharsets.UTF_8));
                config = Json.readObject(Files.readString(configFile));
            } catch (RuntimeException e) {
                throw new IOException(weights + " or " + configFile + " is not valid JSON where expected (" + e.getMessage() + ")", e);
            }
            dataStart = 8 + n;
        }
        HfArchitecture architecture;
        ModelConfig model;
        try {
            architecture = HfArchitecture.fromConfig(config);
            model = architecture.model(config);
        } catch (IllegalArgumentException e) {
            throw new IOException(configFile + ": " + e.getMessage(), e);
        }
        Map<String, List<Stored>> entries = new LinkedHashMap<>();
        for (HfArchitecture.Tensor t : architecture.tensors(model)) {
            Object o = header.get(t.hfName());
            if (!(o instanceof Map<?, ?> e)) {
                throw new IOException(weights + " has no tensor " + t.hfName() + "; is it a " + architecture.className + "?");
            }
            Map<String, Object> entry = (Map<String, Object>) e;
            if (!"F32".equals(entry.get("dtype"))) {
                throw new IOException(weights + ": " + t.hfName() + " is " + entry.get("dtype") + "; --init-from reads F32 only");
            }
            List<Object> offsets = (List<Object>) entry.get("data_offsets");
            entries.computeIfAbsent("param/" + t.name(), k -> new ArrayList<>()).add(new Stored(t.hfName(),
                    ((Number) offsets.get(0)).longValue(), ((Number) offsets.get(1)).longValue(), t.transposed(), t.firstRow(), t.rows()));
        }
        return new SafetensorsModel(weights, dataStart, entries, model);
    }

    @Override
    public void read(String tensor, String dtype, int[] globalShape, List<CheckpointIndex.Span> spans, Map<String, FileChannel> open)
            throws IOException {
        List<Stored> stored = entries.get(tensor);
        if (stored == null) throw new IOException(file + " holds no tensor for " + tensor + " (an adam_ moment? --init-from imports weights only)");
        long n = Arrays.stream(globalShape).asLongStream().reduce(1, (a, b) -> a * b), rows = globalShape[0], cols = n / rows;
        for (Stored e : stored) {
            long partRows = e.rows() >= 0 ? e.rows() : rows;
            if (!dtype.equals("f32") || e.end() - e.begin() != partRows * cols * 4) {
                throw new IOException(file + ": " + e.hfName() + " holds " + (e.end() - e.begin()) / 4 + " F32 elements but the model expects "
                        + partRows + " x " + cols + " " + dtype + " there; the config's model differs from the file's config.json");
            }
        }
        FileChannel in = open.get(file.toString());
        if (in == null) {
            in = FileChannel.open(file, StandardOpenOption.READ);
            open.put(file.toString(), in);
        }
        for (CheckpointIndex.Span s : spans) {
            for (Stored e : stored) {
                long partFirst = e.firstRow() * cols, partEnd = e.rows() >= 0 ? partFirst + e.rows() * cols : n;
                long first = Math.max(s.globalStart(), partFirst), end = Math.min(s.globalStart() + s.length(), partEnd);
                if (first >= end) continue;
                long into = s.byteOffset() + (first - s.globalStart()) * 4, base = dataStart + e.begin();
                if (!e.transposed()) {
                    readFully(in, s.segment().asSlice(into, (end - first) * 4).asByteBuffer(), base + (first - partFirst) * 4);
                } else {
                    readTransposed(in, base, rows, cols, first, end, s.segment(), into);
                }
            }
        }
    }

    /**
     * Elements [first, end) of a [rows, cols] tensor stored transposed at {@code base}: element (i, j) lies at (j, i)
     * of [cols, rows]. Reads each stored row's stretch of i for the wanted rows, then places the wanted elements.
     */
    private void readTransposed(FileChannel in, long base, long rows, long cols, long first, long end, MemorySegment target,
                                long targetOffset) throws IOException {
        long i0 = first / cols, i1 = (end - 1) / cols + 1;
        ByteBuffer stretch = ByteBuffer.allocate(Math.toIntExact((i1 - i0) * 4)).order(ByteOrder.LITTLE_ENDIAN);
        for (long j = 0; j < cols; j++) {
            stretch.clear();
            readFully(in, stretch, base + (j * rows + i0) * 4);
            for (long i = i0; i < i1; i++) {
                long g = i * cols + j;
                if (g < first || g >= end) continue;
                target.set(java.lang.foreign.ValueLayout.JAVA_FLOAT_UNALIGNED, targetOffset + (g - first) * 4,
                        stretch.getFloat(Math.toIntExact((i - i0) * 4)));
            }
        }
    }

    private void readFully(FileChannel in, ByteBuffer target, long position) throws IOException {
        while (target.hasRemaining()) {
            int n = in.read(target, position);
            if (n < 0) throw new IOException(file + " is truncated");
            position += n;
        }
    }
}
