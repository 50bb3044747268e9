package dev.shardwise.data;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.AccessDeniedException;
import java.nio.file.AtomicMoveNotSupportedException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.nio.file.attribute.PosixFileAttributeView;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.ArrayList;
import java.util.List;

/**
 * Writes files so that readers see either the old file or the complete new one: data goes to a temporary
 * file in the target's directory, is forced to disk, and is then renamed over the target (an atomic rename
 * within one file system), after which the directory itself is forced.
 */
final class AtomicFiles {
    private AtomicFiles() {}

    /** Writes {@code bytes} to {@code target} atomically. */
    static void write(Path target, byte[] bytes) throws IOException {
        Move move = writeTemp(target, bytes);
        try {
            commit(List.of(move));
        } finally {
            Files.deleteIfExists(move.temp());
        }
    }

    /** Writes {@code bytes} to a forced temporary file beside {@code target}, to be {@link #commit committed}. */
    static Move writeTemp(Path target, byte[] bytes) throws IOException {
        Path temp = createTemp(target);
        try (FileChannel ch = FileChannel.open(temp, StandardOpenOption.WRITE)) {
            ByteBuffer buf = ByteBuffer.wrap(bytes);
            while (buf.hasRemaining()) ch.write(buf);
            ch.force(true);
        } catch (IOException | RuntimeException e) {
            Files.deleteIfExists(temp);
            throw e;
        }
        return new Move(temp, target);
    }

    /**
     * Creates an empty temporary file beside {@code target}, named {@code .NAME.RANDOM.tmp}.
     *
     * @throws IOException with a message that names the directory and says what to do
     */
    static Path createTemp(Path target) throws IOException {
        Path dir = target.toAbsolutePath().getParent();
        try {
            Path temp = Files.createTempFile(dir, "." + target.getFileName() + ".", ".tmp");
            // Temporary files start as rw-------; outputs are ordinary data files, readable by others (rw-r--r--).
            if (Files.getFileStore(temp).supportsFileAttributeView(PosixFileAttributeView.class)) {
                Files.setPosixFilePermissions(temp, PosixFilePermissions.fromString("rw-r--r--"));
            }
            return temp;
        } catch (AccessDeniedException e) {
            throw new IOException("cannot write to directory " + dir + ": permission denied; choose another "
                    + "output directory or fix its permissions", e);
        } catch (NoSuchFileException e) {
            throw new IOException("cannot write " + target + ": directory " + dir + " does not exist", e);
        } catch (IOException e) {
            throw new IOException("cannot create a file in directory " + dir + ": " + e.getMessage()
                    + "; check that it is a writable directory with free space", e);
        }
    }

    /** A finished temporary file and the name it will get. */
    record Move(Path temp, Path target) {}

    /**
     * Renames every temp file over its target. If a rename fails, the targets already renamed in this call
     * are deleted (they were new data; the old files are gone either way) and the exception is rethrown.
     */
    static void commit(List<Move> moves) throws IOException {
        List<Path> done = new ArrayList<>();
        try {
            for (Move m : moves) {
                try {
                    Files.move(m.temp(), m.target(), StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
                } catch (AtomicMoveNotSupportedException e) {
                    Files.move(m.temp(), m.target(), StandardCopyOption.REPLACE_EXISTING);
                }
                done.add(m.target());
            }
        } catch (IOException e) {
            for (Path p : done) Files.deleteIfExists(p);
            throw new IOException("cannot rename finished output into place: " + e.getMessage(), e);
        }
        for (Path dir : moves.stream().map(m -> m.target().toAbsolutePath().getParent()).distinct().toList()) {
            forceDirectory(dir);
        }
    }

    /** Forces a directory's entries to disk; a no-op where the platform cannot open directories. */
    static void forceDirectory(Path dir) {
        try (FileChannel ch = FileChannel.open(dir, StandardOpenOption.READ)) {
            ch.force(true);
        } catch (IOException | UnsupportedOperationException e) {
            // Not possible on every OS (e.g. Windows); the rename itself is still atomic.
        }
    }
}
