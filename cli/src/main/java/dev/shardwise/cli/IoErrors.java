package dev.shardwise.cli;

import java.io.IOException;
import java.nio.file.AccessDeniedException;
import java.nio.file.FileSystemException;
import java.nio.file.NoSuchFileException;
import java.nio.file.NotDirectoryException;

/** One line for a person from a file error: the JDK's file exceptions carry only a path, so say what went wrong and what to do. */
final class IoErrors {
    private IoErrors() { }

    static String describe(Throwable e) {
        return switch (e) {
            case NoSuchFileException f -> f.getFile() + " does not exist; check the path (and --run-dir, --data, --config)";
            case AccessDeniedException f -> "cannot read or write " + f.getFile() + " (permission denied); fix its permissions or choose another path";
            case NotDirectoryException f -> f.getFile() + " is not a directory; pass a directory";
            case FileSystemException f -> f.getFile() + ": " + (f.getReason() != null ? f.getReason() : f.getMessage());
            case IOException io -> io.getMessage();
            default -> String.valueOf(e.getMessage());
        };
    }
}
