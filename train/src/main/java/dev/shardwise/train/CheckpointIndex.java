package dev.shardwise.train;

import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.HashMap;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.zip.CRC32C;

/**
 * A checkpoint's table of contents, read from its manifest: which tensors it holds (global name, dtype, global
 * shape) and the pieces their bytes are stored in, each piece a file region with a CRC-32C covering runs of the
 * tensor's row-major global element offsets. It reads both formats:
 * <pre>
 *   shardwise-checkpoint-1   one tensors.bin, one whole tensor per entry (written by a single rank)
 *   shardwise-checkpoint-2   shard-RRRRR.bin per rank, each piece: {"tensor", "runs": [[start, length, count, stride]],
 *                            "offset", "bytes", "crc32c"} (the runs' elements, in order, are the piece's bytes)
 * </pre>
 * {@link #verify} checks that every file is there at its size and every piece matches its checksum; {@link #read}
 * fills a rank's spans of global elements, reading only the file regions that overlap them.
 */
final class CheckpointIndex implements TensorSource {
    static final String FORMAT_1 = "shardwise-checkpoint-1";
    static final String FORMAT_2 = "shardwise-checkpoint-2";

    /** A saved tensor: its dtype label and global shape. */
    record TensorInfo(String dtype, int[] shape) {
        long numel() {
            long n = 1;
            for (int s : shape) n *= s;
            return n;
        }
    }

    /** Stored bytes of one tensor: {@code runs} are {start, length, count, stride} in global element offsets. */
    record Piece(String tensor, String file, long offset, long bytes, String crc32c, List<long[]> runs) { }

    /** A region of global elements [globalStart, + length) of a tensor, read into {@code segment} at {@code byteOffset}. */
    record Span(long globalStart, long length, MemorySegment segment, long byteOffset) { }

    /** Stored elements [globalStart, + length) of a tensor at {@code fileOffset} of {@code file}. */
    private record Stored(long globalStart, long length, String file, long fileOffset) { }

    private final Path dir;
    private final Map<String, Object> manifest;
    private final Map<String, TensorInfo> tensors;
    private final List<Piece> pieces;
    private final Map<String, Long> fileBytes;   // expected size of each data file, or -1 when only a lower bound is known
    private Map<String, List<Stored>> stored;    // by tensor, sorted by global start; built on first read

    private CheckpointIndex(Path dir, Map<String, Object> manifest, Map<String, TensorInfo> tensors, List<Piece> pieces,
                            Map<String, Long> fileBytes) {
        this.dir = dir;
        this.manifest = manifest;
        this.tensors = tensors;
        this.pieces = pieces;
        this.fileBytes = fileBytes;
    }

    /**
     * Reads the manifest of checkpoint {@code dir}.
     *
     * @throws IOException if it is missing, unreadable, of an unknown format or malformed, saying which
     */
    @SuppressWarnings("unchecked")
    static CheckpointIndex open(Path dir) throws IOException {
        Path file = dir.resolve(Checkpoint.MANIFEST);
        if (!Files.isRegularFile(file)) {
            throw new IOException("it has no " + Checkpoint.MANIFEST);
        }
        Map<String, Object> manifest;
        try {
            manifest = Json.readObject(Files.readString(file));
        } catch (IOException | RuntimeException e) {
            throw new IOException("its " + Checkpoint.MANIFEST + " is damaged (" + e.getMessage() + ")", e);
        }
        Object format = manifest.get("format");
        try {
            if (FORMAT_1.equals(format)) return openFormat1(dir, manifest);
            if (FORMAT_2.equals(format)) return openFormat2(dir, manifest);
        } catch (ClassCastException | NullPointerException e) {
            throw new IOException("its " + Checkpoint.MANIFEST + " is damaged (a field is missing or of the wrong type)", e);
        }
        throw new IOException("its " + Checkpoint.MANIFEST + " has format '" + format + "'; this build reads '" + FORMAT_1
                + "' and '" + FORMAT_2 + "'");
    }

    @SuppressWarnings("unchecked")
    private static CheckpointIndex openFormat1(Path dir, Map<String, Object> manifest) {
        Map<String, TensorInfo> tensors = new LinkedHashMap<>();
        List<Piece> pieces = new ArrayList<>();
        for (Object o : (List<Object>) manifest.get("tensors")) {
            Map<String, Object> e = (Map<String, Object>) o;
            String name = (String) e.get("name");
            TensorInfo info = new TensorInfo((String) e.get("dtype"), ints((List<Object>) e.get("shape")));
            tensors.put(name, info);
            pieces.add(new Piece(name, Checkpoint.DATA, number(e.get("offset")), number(e.get("bytes")), (String) e.get("crc32c"),
                    List.<long[]>of(new long[]{0, info.numel(), 1, 0})));
        }
        return new CheckpointIndex(dir, manifest, tensors, pieces, Map.of(Checkpoint.DATA, -1L));
    }

    @SuppressWarnings("unchecked")
    private static CheckpointIndex openFormat2(Path dir, Map<String, Object> manifest) {
        Map<String, TensorInfo> tensors = new LinkedHashMap<>();
        for (Map.Entry<String, Object> e : ((Map<String, Object>) manifest.get("tensors")).entrySet()) {
            Map<String, Object> t = (Map<String, Object>) e.getValue();
            tensors.put(e.getKey(), new TensorInfo((String) t.get("dtype"), ints((List<Object>) t.get("shape"))));
        }
        List<Piece> pieces = new ArrayList<>();
        Map<String, Long> files = new LinkedHashMap<>();
        for (Object o : (List<Object>) manifest.get("shards")) {
            Map<String, Object> shard = (Map<String, Object>) o;
            String file = (String) shard.get("file");
            files.put(file, number(shard.get("bytes")));
            for (Object p : (List<Object>) shard.get("pieces")) {
                Map<String, Object> piece = (Map<String, Object>) p;
                List<long[]> runs = new ArrayList<>();
                for (Object r : (List<Object>) piece.get("runs")) {
                    List<Object> run = (List<Object>) r;
                    runs.add(new long[]{number(run.get(0)), number(run.get(1)), number(run.get(2)), number(run.get(3))});
                }
                pieces.add(new Piece((String) piece.get("tensor"), file, number(piece.get("offset")), number(piece.get("bytes")),
                        (String) piece.get("crc32c"), runs));
            }
        }
        return new CheckpointIndex(dir, manifest, tensors, pieces, files);
    }

    private static long number(Object o) {
        return ((Number) o).longValue();
    }

    private static int[] ints(List<Object> list) {
        return list.stream().mapToInt(o -> ((Number) o).intValue()).toArray();
    }

    Path dir() { return dir; }

    Map<String, Object> manifest() { return manifest; }

    Map<String, TensorInfo> tensors() { return tensors; }

    List<Piece> pieces() { return pieces; }

    /** The data files and their sizes as the manifest states them (-1: format 1, which states none). */
    Map<String, Long> files() { return fileBytes; }

    String format() { return (String) manifest.get("format"); }

    /**
     * Checks that every data file exists at the size the manifest states and every piece matches its checksum,
     * reading each file once through a small buffer.
     *
     * @throws IOException naming the first file or tensor that is missing, truncated or damaged
     */
    void verify() throws IOException {
        Map<String, Long> needed = new HashMap<>();
        for (Piece p : pieces) needed.merge(p.file(), p.offset() + p.bytes(), Math::max);
        for (Map.Entry<String, Long> f : fileBytes.entrySet()) {
            Path file = dir.resolve(f.getKey());
            if (!Files.isRegularFile(file)) throw new IOException("its data file " + f.getKey() + " is missing");
            long size = Files.size(file), expected = f.getValue() >= 0 ? f.getValue() : needed.getOrDefault(f.getKey(), 0L);
            if (f.getValue() >= 0 ? size != expected : size < expected) {
                throw new IOException("its data file " + f.getKey() + " is truncated or overlong (" + size + " bytes, the manifest says "
                        + expected + ")");
            }
        }
        ByteBuffer buffer = ByteBuffer.allocate(1 << 20);
        Map<String, List<Piece>> byFile = new LinkedHashMap<>();
        for (Piece p : pieces) byFile.computeIfAbsent(p.file(), k -> new ArrayList<>()).add(p);
        for (Map.Entry<String, List<Piece>> f : byFile.entrySet()) {
            try (FileChannel in = FileChannel.open(dir.resolve(f.getKey()), StandardOpenOption.READ)) {
                for (Piece p : f.getValue()) {
                    CRC32C crc = new CRC32C();
                    long position = p.offset(), end = p.offset() + p.bytes();
                    while (position < end) {
                        buffer.clear().limit((int) Math.min(buffer.capacity(), end - position));
                        int n = in.read(buffer, position);
                        if (n < 0) throw new IOException("its data file " + f.getKey() + " ends inside tensor '" + p.tensor() + "'");
                        crc.update(buffer.flip());
                        position += n;
                    }
                    String actual = HexFormat.of().toHexDigits((int) crc.getValue());
                    if (!actual.equals(p.crc32c())) {
                        throw new IOException("tensor '" + p.tensor() + "' in " + f.getKey() + " fails its checksum (crc32c " + actual
                                + ", the manifest says " + p.crc32c() + ")");
                    }
                }
            }
        }
    }

    /**
     * Fills {@code spans} of tensor {@code tensor} (elements of its global row-major order) from the checkpoint,
     * reading only the stored regions that overlap them. The tensor must be saved with {@code dtype} and
     * {@code globalShape}. Checksums are not checked here (see {@link #verify}).
     *
     * @throws IOException if the tensor is missing, has another shape or dtype, or some requested element is not stored
     */
    @Override
    public void read(String tensor, String dtype, int[] globalShape, List<Span> spans, Map<String, FileChannel> open) throws IOException {
        TensorInfo info = tensors.get(tensor);
        if (info == null) {
            throw new IOException("checkpoint " + dir + " has no tensor '" + tensor + "'; was it written by another model?");
        }
        if (!info.dtype().equals(dtype) || !Arrays.equals(info.shape(), globalShape)) {
            throw new IOException("checkpoint " + dir + ": tensor '" + tensor + "' is " + info.dtype() + Arrays.toString(info.shape())
                    + " but the model expects " + dtype + Arrays.toString(globalShape) + "; the checkpoint belongs to another model config");
        }
        int elementBytes = Math.toIntExact(pieceElementBytes(dtype));
        List<Stored> saved = stored().getOrDefault(tensor, List.of());
        List<Span> wanted = new ArrayList<>(spans);
        wanted.sort(Comparator.comparingLong(Span::globalStart));
        for (Span s : wanted) {
            long from = s.globalStart(), end = s.globalStart() + s.length(), covered = 0, next = from;
            // Pieces a tp group holds replicated (kv heads shared by several tp ranks) are stored once per holder: the
            // copies are equal, so each element is read from the first run that covers it.
            for (int k = firstEndingAfter(saved, from); k < saved.size() && saved.get(k).globalStart() < end; k++) {
                Stored r = saved.get(k);
                long a = Math.max(next, r.globalStart()), b = Math.min(end, r.globalStart() + r.length());
                if (a >= b) continue;
                next = b;
                FileChannel in = open.get(r.file());
                if (in == null) {
                    in = FileChannel.open(dir.resolve(r.file()), StandardOpenOption.READ);
                    open.put(r.file(), in);
                }
                ByteBuffer target = s.segment().asSlice(s.byteOffset() + (a - from) * elementBytes, (b - a) * elementBytes).asByteBuffer();
                long position = r.fileOffset() + (a - r.globalStart()) * elementBytes;
                while (target.hasRemaining()) {
                    int n = in.read(target, position);
                    if (n < 0) throw new IOException("checkpoint " + dir + " is truncated: " + r.file() + " ends inside tensor '" + tensor + "'");
                    position += n;
                }
                covered += b - a;
            }
            if (covered != s.length()) {
                throw new IOException("checkpoint " + dir + " does not hold all of tensor '" + tensor + "' (elements " + from + " to "
                        + end + " are asked for, " + covered + " stored); a shard is missing from its manifest");
            }
        }
    }

    /** The first stored run (sorted by start; disjoint, or equal copies of one piece) that ends after {@code element}. */
    private static int firstEndingAfter(List<Stored> saved, long element) {
        int lo = 0, hi = saved.size();
        while (lo < hi) {
            int mid = (lo + hi) >>> 1;
            Stored r = saved.get(mid);
            if (r.globalStart() + r.length() <= element) lo = mid + 1;
            else hi = mid;
        }
        return lo;
    }

    /** Bytes per element of a dtype label. */
    static long pieceElementBytes(String dtype) {
        for (dev.shardwise.core.tensor.DType t : dev.shardwise.core.tensor.DType.values()) {
            if (t.label().equals(dtype)) return t.byteSize();
        }
        throw new IllegalArgumentException("unknown dtype '" + dtype + "' in a checkpoint");
    }

    private Map<String, List<Stored>> stored() {
        if (stored != null) return stored;
        Map<String, List<Stored>> byTensor = new HashMap<>();
        for (Piece p : pieces) {
            TensorInfo info = tensors.get(p.tensor());
            long elementBytes = info == null ? 0 : pieceElementBytes(info.dtype()), at = p.offset();
            List<Stored> list = byTensor.computeIfAbsent(p.tensor(), k -> new ArrayList<>());
            for (long[] run : p.runs()) {
                for (long c = 0; c < run[2]; c++) {
                    list.add(new Stored(run[0] + c * run[3], run[1], p.file(), at));
                    at += run[1] * elementBytes;
                }
            }
        }
        for (List<Stored> list : byTensor.values()) list.sort(Comparator.comparingLong(Stored::globalStart));
        stored = byTensor;
        return stored;
    }
}
