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
 * A GPT-2 model in Hugging Face's layout: {@code model.safetensors} (tensors named as {@code GPT2LMHeadModel}'s,
 * {@code transformer.h.0.attn.c_attn.weight} ...) beside a {@code config.json}. GPT-2's linear layers are
 * {@code Conv1D}, whose weights are stored [in, out], the transpose of Shardwise's [out, in]; the head is tied to
 * {@code wte} and not stored. {@link #export} writes a checkpoint's weights so; {@link #open} reads such a directory
 * as a {@link TensorSource} under Shardwise's names ({@code param/...}), transposing as it reads, for
 * {@code train --init-from}.
 */
final class SafetensorsGpt2 implements TensorSource {
    static final String WEIGHTS = "model.safetensors";
    static final String CONFIG = "config.json";

    /** A Hugging Face tensor: its name, the Shardwise parameter it holds, and whether it is stored transposed (Conv1D). */
    private record Mapped(String hfName, String name, boolean transposed) { }

    /** The Hugging Face names of a GPT-2 of {@code layers} blocks, in file order. */
    private static List<Mapped> names(int layers) {
        List<Mapped> m = new ArrayList<>();
        m.add(new Mapped("transformer.wte.weight", "wte", false));
        m.add(new Mapped("transformer.wpe.weight", "wpe", false));
        for (int l = 0; l < layers; l++) {
            String hf = "transformer.h." + l + ".", sw = "h." + l + ".";
            m.add(new Mapped(hf + "ln_1.weight", sw + "ln1.weight", false));
            m.add(new Mapped(hf + "ln_1.bias", sw + "ln1.bias", false));
            m.add(new Mapped(hf + "attn.c_attn.weight", sw + "attn.qkv.weight", true));
            m.add(new Mapped(hf + "attn.c_attn.bias", sw + "attn.qkv.bias", false));
            m.add(new Mapped(hf + "attn.c_proj.weight", sw + "attn.proj.weight", true));
            m.add(new Mapped(hf + "attn.c_proj.bias", sw + "attn.proj.bias", false));
            m.add(new Mapped(hf + "ln_2.weight", sw + "ln2.weight", false));
            m.add(new Mapped(hf + "ln_2.bias", sw + "ln2.bias", false));
            m.add(new Mapped(hf + "mlp.c_fc.weight", sw + "mlp.fc.weight", true));
            m.add(new Mapped(hf + "mlp.c_fc.bias", sw + "mlp.fc.bias", false));
            m.add(new Mapped(hf + "mlp.c_proj.weight", sw + "mlp.proj.weight", true));
            m.add(new Mapped(hf + "mlp.c_proj.bias", sw + "mlp.proj.bias", false));
        }
        m.add(new Mapped("transformer.ln_f.weight", "ln_f.weight", false));
        m.add(new Mapped("transformer.ln_f.bias", "ln_f.bias", false));
        return m;
    }

    /**
     * Checks that {@code model} is a GPT-2 (LayerNorm, GELU MLP, learned positions, pre-LN, biases, one KV head per
     * head, no top-query layer).
     *
     * @throws IllegalArgumentException naming what differs
     */
    static void requireGpt2(ModelConfig model, String what) {
        List<String> differs = new ArrayList<>();
        if (model.norm() != ModelConfig.Norm.LAYER_NORM) differs.add("norm " + model.norm());
        if (model.mlp() != ModelConfig.Mlp.GELU) differs.add("mlp " + model.mlp());
        if (model.positions() != ModelConfig.Positions.LEARNED) differs.add("positions " + model.positions());
        if (model.residual() != ModelConfig.Residual.PRE_LN) differs.add("residual " + model.residual());
        if (!model.bias()) differs.add("no biases");
        if (model.kvHeads() != model.heads()) differs.add("kvHeads " + model.kvHeads() + " != heads " + model.heads());
        if (model.topQueryLayer()) differs.add("a top-query layer");
        if (!differs.isEmpty()) {
            throw new IllegalArgumentException(what + " is not a GPT-2 (" + String.join(", ", differs)
                    + "); only GPT-2 models export to and import from Hugging Face's GPT-2 layout");
        }
    }

    /**
     * Writes the weights of checkpoint {@code index} (model {@code model}) as a Hugging Face GPT-2 into directory
     * {@code out}: {@code model.safetensors} (fp32) and {@code config.json}, each through a temporary name, fsynced,
     * then renamed. One tensor is held in memory at a time.
     *
     * @throws IllegalArgumentException if the model is not a GPT-2
     */
    static void export(CheckpointIndex index, ModelConfig model, Path out) throws IOException {
        requireGpt2(model, "the checkpoint's model");
        List<Mapped> names = names(model.layers());
        Map<String, Object> header = new LinkedHashMap<>();
        Map<String, int[]> shapes = new LinkedHashMap<>();
        long at = 0;
        for (Mapped m : names) {
            CheckpointIndex.TensorInfo info = index.tensors().get("param/" + m.name());
            if (info == null) throw new IOException("checkpoint " + index.dir() + " has no tensor 'param/" + m.name() + "'");
            if (!info.dtype().equals("f32")) throw new IOException("tensor " + m.name() + " is " + info.dtype() + "; export writes f32 only");
            int[] shape = m.transposed() ? new int[]{info.shape()[1], info.shape()[0]} : info.shape();
            shapes.put(m.hfName(), info.shape());
            long bytes = info.numel() * 4;
            header.put(m.hfName(), Map.of("dtype", "F32", "shape", shape, "data_offsets", List.of(at, at + bytes)));
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
                for (Mapped m : names) {
                    int[] shape = shapes.get(m.hfName());
                    long n = (long) Arrays.stream(shape).asLongStream().reduce(1, (a, b) -> a * b);
                    MemorySegment whole = arena.allocate(n * 4, 64);
                    index.read("param/" + m.name(), "f32", shape, List.of(new CheckpointIndex.Span(0, n, whole, 0)), open);
                    MemorySegment data = m.transposed() ? transpose(arena, whole, shape[0], shape[1]) : whole;
                    ByteBuffer buffer = data.asByteBuffer();
                    while (buffer.hasRemaining()) file.write(buffer);
                }
            } finally {
                for (FileChannel c : open.values()) c.close();
            }
            file.force(true);
        }
        Files.move(tmp, out.resolve(WEIGHTS), StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
        Map<String, Object> config = new LinkedHashMap<>();
        config.put("architectures", List.of("GPT2LMHeadModel"));
        config.put("model_type", "gpt2");
        config.put("vocab_size", model.vocabSize());
        config.put("n_positions", model.contextLength());
        config.put("n_ctx", model.contextLength());
        config.put("n_embd", model.hidden());
        config.put("n_layer", model.layers());
        config.put("n_head", model.heads());
        config.put("n_inner", model.ffnHidden());
        config.put("activation_function", "gelu_new");
        config.put("layer_norm_epsilon", model.normEps());
        config.put("tie_word_embeddings", true);
        config.put("torch_dtype", "float32");
        Path configTmp = out.resolve(CONFIG + ".tmp");
        try (FileChannel file = FileChannel.open(configTmp, StandardOpenOption.CREATE, StandardOpenOption.TRUNCATE_EXISTING,
                StandardOpenOption.WRITE)) {
            ByteBuffer text = ByteBuffer.wrap((Json.write(config) + "\n").getBytes(StandardCharsets.UTF_8));
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

    private final Path file;
    private final long dataStart;
    private final Map<String, long[]> entries;   // Shardwise name -> {begin, end, transposed 0/1, rows, cols} (Shardwise shape)
    private final ModelConfig model;

    private SafetensorsGpt2(Path file, long dataStart, Map<String, long[]> entries, ModelConfig model) {
        this.file = file;
        this.dataStart = dataStart;
        this.entries = entries;
        this.model = model;
    }

    /** The model {@code config.json} describes, as a Shardwise GPT-2 config. */
    ModelConfig model() { return model; }

    /**
     * Opens a Hugging Face GPT-2 directory ({@code model.safetensors} + {@code config.json}, or a path to the
     * {@code .safetensors} file with {@code config.json} beside it).
     *
     * @throws IOException if a file is missing or malformed, saying which
     */
    @SuppressWarnings("unchecked")
    static SafetensorsGpt2 open(Path path) throws IOException {
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
        ModelConfig model;
        try {
            int hidden = ((Number) config.get("n_embd")).intValue();
            Object inner = config.get("n_inner");
            model = new ModelConfig(((Number) config.get("vocab_size")).intValue(), ((Number) config.get("n_positions")).intValue(),
                    ((Number) config.get("n_layer")).intValue(), hidden, ((Number) config.get("n_head")).intValue(),
                    ((Number) config.get("n_head")).intValue(), inner instanceof Number i ? i.intValue() : 4 * hidden,
                    ModelConfig.Norm.LAYER_NORM, ModelConfig.Mlp.GELU, ModelConfig.Positions.LEARNED, ModelConfig.Residual.PRE_LN,
                    true, false, config.get("layer_norm_epsilon") instanceof Number e ? e.doubleValue() : 1e-5);
        } catch (RuntimeException e) {
            throw new IOException(configFile + " is not a GPT-2 config.json (" + e.getMessage() + ")", e);
        }
        Map<String, long[]> entries = new LinkedHashMap<>();
        for (Mapped m : names(model.layers())) {
            Object o = header.get(m.hfName());
            if (!(o instanceof Map<?, ?> e)) throw new IOException(weights + " has no tensor " + m.hfName() + "; is it a GPT-2?");
            Map<String, Object> entry = (Map<String, Object>) e;
            if (!"F32".equals(entry.get("dtype"))) {
                throw new IOException(weights + ": " + m.hfName() + " is " + entry.get("dtype") + "; --init-from reads F32 only");
            }
            List<Object> shape = (List<Object>) entry.get("shape"), offsets = (List<Object>) entry.get("data_offsets");
            long rows = ((Number) shape.get(0)).longValue(), cols = shape.size() > 1 ? ((Number) shape.get(1)).longValue() : 1;
            entries.put("param/" + m.name(), new long[]{((Number) offsets.get(0)).longValue(), ((Number) offsets.get(1)).longValue(),
                    m.transposed() ? 1 : 0, m.transposed() ? cols : rows, m.transposed() ? rows : cols});
        }
        return new SafetensorsGpt2(weights, dataStart, entries, model);
    }

    @Override
    public void read(String tensor, String dtype, int[] globalShape, List<CheckpointIndex.Span> spans, Map<String, FileChannel> open)
            throws IOException {
        long[] e = entries.get(tensor);
        if (e == null) throw new IOException(file + " holds no tensor for " + tensor + " (an adam_ moment? --init-from imports weights only)");
        long rows = e[3], cols = e[4], n = Arrays.stream(globalShape).asLongStream().reduce(1, (a, b) -> a * b);
        if (!dtype.equals("f32") || rows * cols != n || e[1] - e[0] != n * 4 || globalShape[0] != rows) {
            throw new IOException(file + ": " + tensor + " is stored as " + rows + " x " + cols + " F32 but the model expects " + dtype
                    + Arrays.toString(globalShape) + "; the config's model differs from the file's config.json");
        }
        FileChannel in = open.get(file.toString());
        if (in == null) {
            in = FileChannel.open(file, StandardOpenOption.READ);
            open.put(file.toString(), in);
        }
        long base = dataStart + e[0];
        for (CheckpointIndex.Span s : spans) {
            if (e[2] == 0) {
                readFully(in, s.segment().asSlice(s.byteOffset(), s.length() * 4).asByteBuffer(), base + s.globalStart() * 4);
                continue;
            }
            // Shardwise element (i, j) of [rows, cols] is stored at (j, i) of [cols, rows]: read each stored row's
            // stretch of i for the span's rows, then place the elements the span wants.
            long first = s.globalStart(), end = first + s.length(), i0 = first / cols, i1 = (end - 1) / cols + 1;
            ByteBuffer stretch = ByteBuffer.allocate(Math.toIntExact((i1 - i0) * 4)).order(ByteOrder.LITTLE_ENDIAN);
            for (long j = 0; j < cols; j++) {
                stretch.clear();
                readFully(in, stretch, base + (j * rows + i0) * 4);
                for (long i = i0; i < i1; i++) {
                    long g = i * cols + j;
                    if (g < first || g >= end) continue;
                    s.segment().set(java.lang.foreign.ValueLayout.JAVA_FLOAT_UNALIGNED, s.byteOffset() + (g - first) * 4,
                            stretch.getFloat(Math.toIntExact((i - i0) * 4)));
                }
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
