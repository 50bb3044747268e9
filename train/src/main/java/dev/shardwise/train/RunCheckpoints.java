package dev.shardwise.train;

import dev.shardwise.core.tensor.Tensor;
import dev.shardwise.data.BatchSampler;
import dev.shardwise.data.DatasetPreparer;
import dev.shardwise.model.Gpt;
import dev.shardwise.model.Parameter;
import dev.shardwise.model.ParameterSet;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

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

    /** Every rank calls it (the moments are gathered under ZeRO); the leader writes the checkpoint. */
    void save(boolean leader, Path checkpoints, Gpt model, OptimizerState optimizer, TrainState state,
                      TrainingData data) throws IOException {
        Tensor values = optimizer.valuesToSave();
        Tensor[] moments = optimizer.momentsToSave();
        try {
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
            Checkpoint.write(checkpoints, state.step(), checkpointTensors(model.parameters(), values, moments), metadata,
                    Files.isRegularFile(tokenizerFile) ? List.of(tokenizerFile) : List.of());
        } finally {
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

    @SuppressWarnings("unchecked")
    void restore(Path dir, Gpt model, OptimizerState optimizer, BatchSampler sampler, TrainState state)
            throws IOException {
        Map<String, Object> manifest = Checkpoint.readManifest(dir);
        Object savedModel = manifest.get("model");
        Map<String, Object> current = ConfigLoader.modelMap(config.model());
        if (!current.toString().equals(String.valueOf(savedModel))) {
            throw new IllegalArgumentException("checkpoint " + dir + " holds model " + savedModel + " but the config asks for "
                    + current + "; resume with the run's own config.yaml");
        }
        Checkpoint.read(dir, checkpointTensors(model.parameters(), optimizer.valuesToLoad(), optimizer.momentsToLoad()));
        Map<String, Object> s = (Map<String, Object>) manifest.get("state");
        optimizer.loaded(((Number) s.get("optimizerSteps")).longValue());
        long epoch = ((Number) s.get("samplerEpoch")).longValue(), index = ((Number) s.get("samplerIndex")).longValue();
        sampler.seek(new BatchSampler.Position(epoch, index));
        state.restore(((Number) s.get("step")).longValue(), epoch, index, ((Number) s.get("tokensSeen")).longValue());
    }
}
