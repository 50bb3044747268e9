package dev.shardwise.train;

import java.io.IOException;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Optional;
import java.util.function.Consumer;

/**
 * Which checkpoint a resumed run starts from: the newest intact one, passing over damaged ones (bad checksum,
 * missing or truncated data file, missing or unreadable manifest) with one line saying which and why; or the one
 * {@code --resume-from} names, which must be intact. Every candidate is {@linkplain CheckpointIndex#verify verified}
 * in full before it is chosen.
 */
final class ResumeChoice {
    private ResumeChoice() { }

    /**
     * The checkpoint to resume from under {@code checkpointsDir}: {@code resumeFrom} (a directory name such as
     * {@code step-000200}, a step number, or a path) when given, else the newest intact one; empty when there is none
     * at all (the run starts from scratch).
     *
     * @param say receives one line when newer checkpoints were passed over
     * @throws IOException if {@code resumeFrom} names no checkpoint or a damaged one, or every checkpoint is damaged;
     *                     the message says what to do
     */
    static Optional<Path> choose(Path checkpointsDir, String resumeFrom, Consumer<String> say) throws IOException {
        if (resumeFrom != null) return Optional.of(named(checkpointsDir, resumeFrom));
        List<Path> candidates = steps(checkpointsDir);
        List<String> passed = new ArrayList<>();
        for (Path c : candidates) {
            Optional<String> problem = problem(c);
            if (problem.isEmpty()) {
                if (!passed.isEmpty()) {
                    say.accept("checkpoint " + String.join("; ", passed) + ": resuming from the newest intact one, " + c.getFileName());
                }
                return Optional.of(c);
            }
            passed.add(c.getFileName() + " is damaged (" + problem.get() + ")");
        }
        if (!passed.isEmpty()) {
            throw new IOException("no intact checkpoint in " + checkpointsDir + ": " + String.join("; ", passed)
                    + "; start the run over in a new --run-dir");
        }
        return Optional.empty();
    }

    /** Why checkpoint {@code dir} cannot be used, or empty when it is intact. */
    static Optional<String> problem(Path dir) {
        try {
            CheckpointIndex.open(dir).verify();
            return Optional.empty();
        } catch (IOException e) {
            return Optional.of(e.getMessage());
        }
    }

    private static Path named(Path checkpointsDir, String name) throws IOException {
        Path dir;
        if (name.matches("\\d+")) dir = checkpointsDir.resolve(Checkpoint.directoryName(Long.parseLong(name)));
        else if (name.matches("step-\\d+")) dir = checkpointsDir.resolve(Checkpoint.directoryName(Long.parseLong(name.substring(5))));
        else dir = Path.of(name);
        if (!Files.isDirectory(dir)) {
            List<Path> all = steps(checkpointsDir);
            throw new IOException("--resume-from " + name + ": there is no checkpoint " + dir + "; the run has "
                    + (all.isEmpty() ? "none" : all.stream().map(p -> p.getFileName().toString()).toList()));
        }
        Optional<String> problem = problem(dir);
        if (problem.isPresent()) {
            throw new IOException("--resume-from " + name + ": checkpoint " + dir + " is damaged (" + problem.get()
                    + "); pick another with --resume-from, or use --resume to take the newest intact one");
        }
        return dir;
    }

    /** Every {@code step-N} directory under {@code checkpointsDir}, newest first (whether intact or not). */
    static List<Path> steps(Path checkpointsDir) throws IOException {
        List<Path> found = new ArrayList<>();
        if (!Files.isDirectory(checkpointsDir)) return found;
        try (DirectoryStream<Path> dirs = Files.newDirectoryStream(checkpointsDir, "step-[0-9]*")) {
            for (Path d : dirs) if (d.getFileName().toString().matches("step-\\d+") && Files.isDirectory(d)) found.add(d);
        }
        found.sort(Comparator.comparingLong((Path p) -> Long.parseLong(p.getFileName().toString().substring(5))).reversed());
        return found;
    }
}
