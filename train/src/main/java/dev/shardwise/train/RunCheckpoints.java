package dev.shardwise.train;

import dev.shardwise.core.tensor.Tensor;
import dev.shardwise.data.BatchSampler;
import dev.shardwise.data.DatasetPreparer;
import dev.shardwise.comm.Communicator;
import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.model.Parameter;
import dev.shardwise.model.ParameterSet;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.function.IntFunction;

/**
 * A run's state as a layout-independent {@link Checkpoint}: parameters and AdamW moments by global name and shape
 * (however the ranks held them: replicated, or sharded by ZeRO and gathered for saving), plus the step, the data
 * sampler's position and the optimizer's step count, so that {@code --resume} continues bit for bit under any
 * ZeRO stage and rank count.
 */
final class RunCheckpoints {
    private final TrainConfig config;

    RunCheckpoints(TrainConfig config) {
        this.config = config;
    }

    /**
     * Where a rank's parameters sit in the model, for saving: the pipeline group (rank = stage; null when the model
     * is not cut), whether this rank is its stage's first data-parallel replica (those ranks carry their stage's
     * tensors to stage 0), the flat layout of any stage's parameters as stage 0 receives them (names, shapes,
     * offsets; no memory: a stage's global layout under tensor parallelism), and how the stage's tensor-parallel
     * slices are put together ({@link TensorParallelSlices#NONE} without tensor parallelism).
     */
    record Stages(Communicator pipeline, boolean firstReplica, IntFunction<ParameterSet> layoutOf, TensorParallelSlices tensor) {
        static final Stages SINGLE = new Stages(null, true, null, TensorParallelSlices.NONE);
    }

    private static final int VALUES_TAG = 31_000;

    /**
     * Every rank calls it (the moments are gathered under ZeRO; under a pipeline the first replica of each stage
     * sends its stage's parameters and moments to stage 0, which holds them in buffers until the write is done);
     * the leader writes the checkpoint, every tensor by its global name, so it loads under any layout.
     */
    void save(boolean leader, Path checkpoints, ParameterSet params, OptimizerState optimizer, TrainState state,
              TrainingData data, Stages stages, MemoryPool pool) throws IOException {
        Tensor values = optimizer.valuesToSave();
        Tensor[] moments = optimizer.momentsToSave();
        List<Tensor> received = new ArrayList<>();
        try {
            ParameterSet mine = params;
            if (stages.tensor().active()) {   // tp rank 0 of the first replica puts its stage's slices together
                if (!stages.firstReplica()) return;
                Tensor[] whole = stages.tensor().gather(params, new Tensor[]{values, moments[0], moments[1]}, pool);
                if (whole == null) return;
                received.addAll(List.of(whole));
                mine = stages.tensor().globalLayout();
                values = whole[0];
                moments = new Tensor[]{whole[1], whole[2]};
            }
            Map<String, Tensor> tensors = checkpointTensors(mine, values, moments);
            if (stages.pipeline() != null && stages.firstReplica()) {
                Communicator pipeline = stages.pipeline();
                if (pipeline.rank() != 0) {
                    pipeline.send(values, 0, VALUES_TAG);
                    pipeline.send(moments[0], 0, VALUES_TAG + 1);
                    pipeline.send(moments[1], 0, VALUES_TAG + 2);
                    return;
                }
                for (int s = 1; s < pipeline.size(); s++) {
                    try (ParameterSet layout = stages.layoutOf().apply(s)) {
                        Tensor[] flat = new Tensor[3];
                        for (int k = 0; k < 3; k++) {
                            flat[k] = Tensor.allocate(pool, MemoryCategory.BUFFERS, params.dtype(), Math.toIntExact(layout.paddedCount()));
                            received.add(flat[k]);
                            pipeline.receive(flat[k], s, VALUES_TAG + k);
                        }
                        // the head's copy of wte is the embedding's (their gradients are summed): stage 0's is kept
                        checkpointTensors(layout, flat[0], new Tensor[]{flat[1], flat[2]}).forEach(tensors::putIfAbsent);
                    }
                }
            }
            if (!leader) return;
            Map<String, Object> stateMap = new LinkedHashMap<>();
            stateMap.put("step", state.step());
            stateMap.put("samplerEpoch", state.samplerEpoch());
            stateMap.put("samplerIndex", state.samplerIndex());
            stateMap.put("tokensSeen", state.tokensSeen());
            stateMap.put("optimizerSteps", optimizer.update().steps());
            stateMap.put("seed", config.seed());
            Map<String, Object> metadata = new LinkedHashMap<>();
            metadata.put("state", stateMap);
            metadata.put("model", ConfigLoader.modelMap(config.model()));
            metadata.put("tokenizer", data.tokenizer().name());
            metadata.put("data", data.directory().toAbsolutePath().toString());
            Path tokenizerFile = data.directory().resolve(DatasetPreparer.TOKENIZER_FILE);
            Checkpoint.write(checkpoints, state.step(), tensors, metadata,
                    Files.isRegularFile(tokenizerFile) ? List.of(tokenizerFile) : List.of());
        } finally {
            for (Tensor t : received) t.close();
            optimizer.saved();
        }
    }

    /** Parameters and AdamW moments by global name and shape: what makes a checkpoint layout-independent. */
    private static Map<String, Tensor> checkpointTensors(ParameterSet params, Tensor values, Tensor[] moments) {
        Map<String, Tensor> tensors = Checkpoint.parameterTensors(params, values);
        for (int k = 0; k < 2; k++) {
            for (Parameter p : params.parameters()) {
                tensors.put((k == 0 ? "adam_m/" : "adam_v/") + p.name(), moments[k]
                        .slice(0, Math.toIntExact(params.offsetOf(p)), Math.toIntExact(p.numel())).view(p.shape()));
            }
        }
        return tensors;
    }

    /**
     * Every rank reads the tensors of its own parameters (any layout wrote them: they are keyed by global name); under
     * tensor parallelism it takes its slices of them ({@code slices}).
     */
    @SuppressWarnings("unchecked")
    void restore(Path dir, ParameterSet params, OptimizerState optimizer, BatchSampler sampler, TrainState state,
                 TensorParallelSlices slices, MemoryPool pool) throws IOException {
        Map<String, Object> manifest = Checkpoint.readManifest(dir);
        Object savedModel = manifest.get("model");
        Map<String, Object> current = ConfigLoader.modelMap(config.model());
        if (!current.toString().equals(String.valueOf(savedModel))) {
            throw new IllegalArgumentException("checkpoint " + dir + " holds model " + savedModel + " but the config asks for "
                    + current + "; resume with the run's own config.yaml");
        }
        Map<String, Tensor> mine = checkpointTensors(params, optimizer.valuesToLoad(), optimizer.momentsToLoad());
        if (slices.active()) slices.read(dir, params, mine, pool);
        else Checkpoint.read(dir, mine);
        Map<String, Object> s = (Map<String, Object>) manifest.get("state");
        optimizer.loaded(((Number) s.get("optimizerSteps")).longValue());
        long epoch = ((Number) s.get("samplerEpoch")).longValue(), index = ((Number) s.get("samplerIndex")).longValue();
        sampler.seek(new BatchSampler.Position(epoch, index));
        state.restore(((Number) s.get("step")).longValue(), epoch, index, ((Number) s.get("tokensSeen")).longValue());
    }
}
