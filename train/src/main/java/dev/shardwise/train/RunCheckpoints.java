package dev.shardwise.train;

import dev.shardwise.core.tensor.Tensor;
import dev.shardwise.data.BatchSampler;
import dev.shardwise.data.DatasetPreparer;
import dev.shardwise.model.Parameter;
import dev.shardwise.model.ParameterSet;

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
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * A run's state as a distributed, layout-independent checkpoint ({@code shardwise-checkpoint-2}): every rank writes
 * only what it owns, its ZeRO shard (or its share of replicated state) of the parameters and AdamW moments, as
 * pieces keyed by global name with the global elements each covers, into its own {@code shard-RRRRR.bin}, in
 * parallel; after a barrier one rank writes the manifest (tensors, pieces, checksums, the layout, the step, the
 * data sampler's position, the optimizer's step count) and renames the directory into place, which commits it.
 * Loading reads into each rank's own holdings only the stored regions that overlap them, so a checkpoint loads
 * under any dp, pp, vpp, ZeRO stage and world size; no rank ever holds a tensor it does not own.
 * <pre>
 *   checkpoints/step-000200.partial/   while being written (never read)
 *   checkpoints/step-000200/manifest.json, shard-00000.bin, shard-00001.bin, ... (tokenizer.json)
 * </pre>
 */
final class RunCheckpoints {
    private final TrainConfig config;

    RunCheckpoints(TrainConfig config) {
        this.config = config;
    }

    /**
     * Where a rank stands for saving: its global rank of {@code worldSize}, its data-parallel rank of {@code dpSize}
     * (ranks that replicate state split the saving), the parameters it holds but another rank writes (a pipeline's
     * tied embedding, held again by the last stage; under tensor parallelism, replicated tensors on tp rank > 0), and a
     * barrier over every rank.
     */
    record Place(int globalRank, int worldSize, int dpRank, int dpSize, Set<String> writtenElsewhere, Runnable barrier) {
        static final Place SINGLE = new Place(0, 1, 0, 1, Set.of(), () -> { });
    }

    /**
     * Collective over every rank of the job: writes this rank's shard, then the leader commits the checkpoint of
     * {@code state.step()} under {@code checkpoints} (replacing one of the same step) and prunes old ones.
     */
    void save(boolean leader, Path checkpoints, ParameterSet params, OptimizerState optimizer, TrainState state,
              TrainingData data, Place place) throws IOException {
        Path tmp = begin(leader, checkpoints, state.step(), place);
        optimizer.forSave(place.dpRank(), place.dpSize(), held -> writeShard(tmp, place.globalRank(), params, held,
                place.writtenElsewhere()));
        place.barrier().run();   // every shard and its index are on disk
        if (leader) commitWhenComplete(checkpoints, tmp, place.worldSize(), metadata(optimizer, state, data));
    }

    /**
     * Collective: the leader makes the empty temporary directory of step {@code step}'s checkpoint
     * ({@code step-N.partial}, replacing a stale one), then every rank passes a barrier; returns the directory.
     */
    static Path begin(boolean leader, Path checkpoints, long step, Place place) throws IOException {
        Path tmp = checkpoints.resolve(Checkpoint.directoryName(step) + PARTIAL);
        if (leader) {
            Files.createDirectories(checkpoints);
            Checkpoint.deleteRecursively(tmp);
            Files.createDirectory(tmp);
        }
        place.barrier().run();
        return tmp;
    }

    static final String PARTIAL = ".partial";

    /**
     * Deletes the {@code step-N.partial} directories under {@code checkpoints}: saves a stopped run began but never
     * committed (never read, they would stay until that step was saved again). Call before this run saves anything.
     *
     * @return the directories removed
     */
    static List<Path> removeUnfinished(Path checkpoints) throws IOException {
        List<Path> stale = new ArrayList<>();
        if (!Files.isDirectory(checkpoints)) return stale;
        try (DirectoryStream<Path> dirs = Files.newDirectoryStream(checkpoints, "step-*" + PARTIAL)) {
            for (Path d : dirs) if (Files.isDirectory(d)) stale.add(d);
        }
        for (Path d : stale) Checkpoint.deleteRecursively(d);
        return stale;
    }

    /**
     * Writes rank {@code globalRank}'s pieces of {@code held} into {@code tmp}: its shard file, fsynced, then its
     * index ({@code shard-RRRRR.json}, renamed into place last: its presence says the shard is complete).
     */
    static void writeShard(Path tmp, int globalRank, ParameterSet params, List<OptimizerState.Holding> held, Set<String> skip)
            throws IOException {
        String shard = String.format("shard-%05d", globalRank);
        Map<String, Object> tensors = new LinkedHashMap<>();
        Map<String, Object> entry;
        try (ShardWriter writer = new ShardWriter(tmp.resolve(shard + ".bin"))) {
            write(writer, params, held, skip, tensors);
            entry = writer.finish();
        }
        writeSynced(tmp.resolve(shard + ".json"), Json.write(Map.of("tensors", tensors, "shard", entry)));
    }

    /** Marks rank {@code globalRank}'s shard of {@code tmp} as failed, so the committing rank stops waiting for it. */
    static void markFailed(Path tmp, int globalRank, Exception e) {
        try {
            writeSynced(tmp.resolve(String.format("shard-%05d.failed", globalRank)), String.valueOf(e.getMessage()));
        } catch (IOException ignored) {
            // the directory itself is gone or unwritable: the committing rank times out and says so
        }
    }

    /** How long the committing rank waits for the other ranks' shards of an asynchronous save (ms). */
    static final long SHARD_WAIT_MS = 30 * 60 * 1000;

    /**
     * The leader's commit: waits until every rank's shard index is in {@code tmp} (at once after a barrier; while
     * the others' background writers finish, asynchronously), writes the manifest, renames the directory into place,
     * and deletes all but the newest {@code keepCheckpoints}.
     *
     * @throws IOException if a rank marked its shard failed, or the wait timed out
     */
    void commitWhenComplete(Path checkpoints, Path tmp, int worldSize, Map<String, Object> metadata) throws IOException {
        long deadline = System.currentTimeMillis() + SHARD_WAIT_MS;
        for (int r = 0; r < worldSize; r++) {
            Path index = tmp.resolve(String.format("shard-%05d.json", r)), failed = tmp.resolve(String.format("shard-%05d.failed", r));
            while (!Files.exists(index)) {
                if (Files.exists(failed)) {
                    throw new IOException("checkpoint " + tmp.getFileName() + " not committed: rank " + r + " could not write its shard ("
                            + Files.readString(failed) + ")");
                }
                if (System.currentTimeMillis() > deadline) {
                    throw new IOException("checkpoint " + tmp.getFileName() + " not committed: rank " + r + "'s shard did not appear in "
                            + SHARD_WAIT_MS / 1000 + " s");
                }
                try {
                    Thread.sleep(2);
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    throw new IOException("interrupted while waiting for rank " + r + "'s checkpoint shard", e);
                }
            }
        }
        String name = tmp.getFileName().toString();
        commit(checkpoints, tmp, name.substring(0, name.length() - PARTIAL.length()), worldSize, metadata);
        prune(checkpoints, config.keepCheckpoints());
    }

    /** The manifest's fields beside the tensors: the state, the model, the tokenizer, the data and the saving layout. */
    Map<String, Object> metadata(OptimizerState optimizer, TrainState state, TrainingData data) {
        Map<String, Object> stateMap = new LinkedHashMap<>();
        stateMap.put("step", state.step());
        stateMap.put("samplerEpoch", state.samplerEpoch());
        stateMap.put("samplerIndex", state.samplerIndex());
        stateMap.put("tokensSeen", state.tokensSeen());
        stateMap.put("optimizerSteps", optimizer.update().steps());
        stateMap.put("seed", config.seed());
        Map<String, Object> layout = new LinkedHashMap<>();
        layout.put("ranks", config.ranks());
        layout.put("dp", config.layout().dp());
        layout.put("tp", config.layout().tp());
        layout.put("pp", config.layout().pp());
        layout.put("vpp", config.layout().vpp());
        layout.put("ep", config.layout().ep());
        layout.put("zero", config.zero());
        Map<String, Object> metadata = new LinkedHashMap<>();
        metadata.put("state", stateMap);
        metadata.put("layout", layout);
        metadata.put("model", ConfigLoader.modelMap(config.model()));
        if (data == null) return metadata;   // a benchmark's checkpoint: no data behind it
        metadata.put("tokenizer", data.tokenizer().name());
        metadata.put("data", data.directory().toAbsolutePath().toString());
        Path tokenizerFile = data.directory().resolve(DatasetPreparer.TOKENIZER_FILE);
        if (Files.isRegularFile(tokenizerFile)) metadata.put("attachment", tokenizerFile.toString());
        return metadata;
    }

    /** Merges the shards' indexes into the manifest, writes it last, and renames the directory into place. */
    @SuppressWarnings("unchecked")
    private static void commit(Path checkpoints, Path tmp, String name, int worldSize, Map<String, Object> metadata)
            throws IOException {
        Map<String, Object> tensors = new LinkedHashMap<>();
        List<Object> shards = new ArrayList<>();
        for (int r = 0; r < worldSize; r++) {
            Path index = tmp.resolve(String.format("shard-%05d.json", r));
            Map<String, Object> shard = Json.readObject(Files.readString(index));
            ((Map<String, Object>) shard.get("tensors")).forEach(tensors::putIfAbsent);
            shards.add(shard.get("shard"));
        }
        Map<String, Object> ordered = new LinkedHashMap<>();   // values, then first moments, then second moments
        for (OptimizerState.Kind kind : OptimizerState.Kind.values()) {
            tensors.forEach((tensor, info) -> { if (tensor.startsWith(kind.prefix)) ordered.put(tensor, info); });
        }
        tensors.forEach(ordered::putIfAbsent);
        tensors = ordered;
        Object attachment = metadata.remove("attachment");
        if (attachment != null) Files.copy(Path.of(attachment.toString()), tmp.resolve(Path.of(attachment.toString()).getFileName()));
        Map<String, Object> manifest = new LinkedHashMap<>();
        manifest.put("format", CheckpointIndex.FORMAT_2);
        manifest.put("step", ((Map<String, Object>) metadata.get("state")).get("step"));
        manifest.putAll(metadata);
        manifest.put("tensors", tensors);
        manifest.put("shards", shards);
        writeSynced(tmp.resolve(Checkpoint.MANIFEST), Json.write(manifest) + "\n");
        for (int r = 0; r < worldSize; r++) Files.delete(tmp.resolve(String.format("shard-%05d.json", r)));
        syncDirectory(tmp);
        Path target = checkpoints.resolve(name), old = checkpoints.resolve(name + ".old");
        Checkpoint.deleteRecursively(old);
        if (Files.exists(target)) Files.move(target, old);
        try {
            Files.move(tmp, target, StandardCopyOption.ATOMIC_MOVE);
        } catch (AtomicMoveNotSupportedException e) {
            Files.move(tmp, target);
        }
        syncDirectory(checkpoints);
        Checkpoint.deleteRecursively(old);
    }

    private static void writeSynced(Path file, String text) throws IOException {
        Path partial = file.resolveSibling(file.getFileName() + ".tmp");
        try (FileChannel out = FileChannel.open(partial, StandardOpenOption.CREATE, StandardOpenOption.TRUNCATE_EXISTING,
                StandardOpenOption.WRITE)) {
            ByteBuffer bytes = ByteBuffer.wrap(text.getBytes(StandardCharsets.UTF_8));
            while (bytes.hasRemaining()) out.write(bytes);
            out.force(true);
        }
        Files.move(partial, file, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
    }

    /** Forces a directory's entries to disk (where the platform allows opening a directory). */
    private static void syncDirectory(Path dir) {
        try (FileChannel d = FileChannel.open(dir, StandardOpenOption.READ)) {
            d.force(true);
        } catch (IOException | UnsupportedOperationException e) {
            // not every file system lets a directory be opened; the renames are still ordered after the data's fsync
        }
    }

    /** Writes each parameter's part of {@code held} as a piece; notes each tensor's dtype and global shape. */
    private static void write(ShardWriter writer, ParameterSet params, List<OptimizerState.Holding> held, Set<String> skip,
                              Map<String, Object> tensors) throws IOException {
        int elementBytes = Math.toIntExact(params.dtype().byteSize());
        for (OptimizerState.Holding h : held) {
            long from = h.flatStart(), to = from + h.data().numel();
            for (Parameter p : params.parameters()) {
                long start = params.offsetOf(p), a = Math.max(from, start), b = Math.min(to, start + p.numel());
                if (a >= b || skip.contains(p.name())) continue;
                String tensor = h.kind().prefix + p.name();
                writer.write(tensor, GlobalRuns.of(p, a - start, b - a), h.data().segment(),
                        h.data().byteOffset() + (start - from) * elementBytes, elementBytes);
                tensors.computeIfAbsent(tensor, k -> Map.of("dtype", params.dtype().label(), "shape", GlobalRuns.globalShape(p)));
            }
        }
    }

    /**
     * Fills {@code held} (ranges of {@code params}' flat layout) from checkpoint {@code index}, reading only the stored
     * regions that overlap each parameter's global elements.
     */
    static void read(TensorSource index, ParameterSet params, List<OptimizerState.Holding> held) throws IOException {
        int elementBytes = Math.toIntExact(params.dtype().byteSize());
        Map<String, List<CheckpointIndex.Span>> spans = new LinkedHashMap<>();
        Map<String, Parameter> of = new HashMap<>();
        for (OptimizerState.Holding h : held) {
            long from = h.flatStart(), to = from + h.data().numel();
            for (Parameter p : params.parameters()) {
                long start = params.offsetOf(p), a = Math.max(from, start), b = Math.min(to, start + p.numel());
                if (a >= b) continue;
                String tensor = h.kind().prefix + p.name();
                of.put(tensor, p);
                long localZero = h.data().byteOffset() + (start - from) * elementBytes;
                for (GlobalRuns.Run r : GlobalRuns.of(p, a - start, b - a)) {
                    spans.computeIfAbsent(tensor, k -> new ArrayList<>()).add(new CheckpointIndex.Span(r.globalStart(), r.length(),
                            h.data().segment(), localZero + r.localStart() * elementBytes));
                }
            }
        }
        Map<String, FileChannel> open = new HashMap<>();
        try {
            for (Map.Entry<String, List<CheckpointIndex.Span>> e : spans.entrySet()) {
                index.read(e.getKey(), params.dtype().label(), GlobalRuns.globalShape(of.get(e.getKey())), e.getValue(), open);
            }
        } finally {
            for (FileChannel c : open.values()) c.close();
        }
    }

    /** Deletes all but the {@code keep} newest checkpoints under {@code checkpoints} (0 keeps all). */
    static void prune(Path checkpoints, int keep) throws IOException {
        if (keep <= 0) return;
        List<Path> all = ResumeChoice.steps(checkpoints);
        for (Path old : all.subList(Math.min(keep, all.size()), all.size())) Checkpoint.deleteRecursively(old);
    }

    /**
     * Every rank reads its own holdings of the checkpoint in {@code dir} (any layout wrote it: pieces are keyed by
     * global name and global elements), then the data sampler's position and the step.
     */
    @SuppressWarnings("unchecked")
    void restore(Path dir, ParameterSet params, OptimizerState optimizer, BatchSampler sampler, TrainState state)
            throws IOException {
        CheckpointIndex index = Checkpoint.index(dir);
        Map<String, Object> manifest = index.manifest();
        Object savedModel = manifest.get("model");
        Map<String, Object> current = ConfigLoader.modelMap(config.model());
        if (!current.toString().equals(String.valueOf(savedModel))) {
            throw new IllegalArgumentException("checkpoint " + dir + " holds model " + savedModel + " but the config asks for "
                    + current + "; resume with the run's own config.yaml");
        }
        Map<String, Object> s = (Map<String, Object>) manifest.get("state");
        optimizer.forLoad(held -> read(index, params, held), ((Number) s.get("optimizerSteps")).longValue());
        long epoch = ((Number) s.get("samplerEpoch")).longValue(), index2 = ((Number) s.get("samplerIndex")).longValue();
        sampler.seek(new BatchSampler.Position(epoch, index2));
        state.restore(((Number) s.get("step")).longValue(), epoch, index2, ((Number) s.get("tokensSeen")).longValue());
    }
}
