package dev.shardwise.cli;

import java.io.PrintStream;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * Turns the merged output of {@code mpirun --tag-output} into lines prefixed {@code [rank r]}, with rank 0's
 * carriage-return progress line shown as the job's one live line.
 *
 * <p>Open MPI tags each chunk a process writes, and each line within it, with {@code [job,rank]<stdout>:}
 * (or {@code <stderr>:}); a chunk without a final newline (a progress update) can be followed on the same
 * line by another rank's tagged chunk, so tags are recognised anywhere, also when split across reads.
 * Text after a newline that carries no tag is mpirun's own (its error banners): it is passed through
 * unchanged to {@code err} and kept for {@link #launcherLines()}, from which the failed rank is read.
 *
 * <p>Each rank and stream has its own partial line. A line ending in {@code \n} is printed with its rank's
 * prefix, to {@code out} for stdout and to {@code err} for stderr. Rank 0's stdout text after a {@code \r}
 * is its progress line: with {@code live} (our own output is a terminal) it is redrawn in place after every
 * read and cleared before any other line is printed, then redrawn below it; without {@code live} a {@code \r}
 * only drops what came before it on that line. The JVM's incubator-module notice, which every process prints
 * at start, is left out. Not thread-safe: one thread feeds it.
 */
final class RankOutput {
    /** {@code [1,3]<stdout>:} - Open MPI 4's tag: job id, rank, stream. */
    private static final Pattern TAG = Pattern.compile("\\[\\d+,(\\d+)\\]<(stdout|stderr|stddiag)>:");
    /** Longer than any tag, so a '[' that starts no tag is released soon. */
    private static final int MAX_TAG_LENGTH = 40;

    /** The JVM's start-up notice, printed by every process; launch's own JVM has printed it once already. */
    private static final String INCUBATOR_NOTICE = "WARNING: Using incubator modules: jdk.incubator.vector";

    /** A rank's stream; rank -1 is mpirun itself. */
    private record Source(int rank, boolean stderr) implements Comparable<Source> {
        @Override
        public int compareTo(Source o) {
            return rank != o.rank ? Integer.compare(rank, o.rank) : Boolean.compare(stderr, o.stderr);
        }
    }

    private static final Source LAUNCHER = new Source(-1, true);

    private final PrintStream out;
    private final PrintStream err;
    private final boolean live;
    private final Map<Source, StringBuilder> partial = new HashMap<>();
    private final List<String> launcherLines = new ArrayList<>();
    private final StringBuilder candidate = new StringBuilder();   // text that may still turn out to be a tag
    private Source current = LAUNCHER;
    private String shownProgress = "";                            // the live line on screen now, or ""

    RankOutput(PrintStream out, PrintStream err, boolean live) {
        this.out = out;
        this.err = err;
        this.live = live;
    }

    /** Feeds the next characters read from mpirun, then redraws the live progress line if it changed. */
    void accept(CharSequence text) {
        for (int i = 0; i < text.length(); i++) accept(text.charAt(i));
        if (live) showProgress(progressText());
    }

    /** Ends the input: clears the live line and prints every unfinished line. */
    void finish() {
        String pending = candidate.toString();
        candidate.setLength(0);
        for (int i = 0; i < pending.length(); i++) text(pending.charAt(i));
        new java.util.TreeMap<>(partial).forEach((source, line) -> {
            String last = afterLastCarriageReturn(line);
            if (!last.isBlank()) emit(source, last);
        });
        partial.clear();
        if (live && !shownProgress.isEmpty()) clearProgress();
        out.flush();
        err.flush();
    }

    /** mpirun's own lines so far (what it printed outside any rank's tag). */
    List<String> launcherLines() {
        return List.copyOf(launcherLines);
    }

    private void accept(char c) {
        if (candidate.isEmpty() && c != '[') {
            text(c);
            return;
        }
        candidate.append(c);
        Matcher m = TAG.matcher(candidate);
        if (m.matches()) {
            current = new Source(Integer.parseInt(m.group(1)), !m.group(2).equals("stdout"));
            candidate.setLength(0);
        } else if (!m.hitEnd() || candidate.length() > MAX_TAG_LENGTH) {
            // Not a tag after all: its first character is text; the rest may hold the start of a real tag.
            String rest = candidate.substring(1);
            char first = candidate.charAt(0);
            candidate.setLength(0);
            text(first);
            for (int i = 0; i < rest.length(); i++) accept(rest.charAt(i));
        }
    }

    private void text(char c) {
        StringBuilder line = partial.computeIfAbsent(current, s -> new StringBuilder());
        if (c == '\n') {
            emit(current, afterLastCarriageReturn(line));
            line.setLength(0);
            current = LAUNCHER;   // mpirun tags again after every newline that a rank's chunk contains
        } else {
            line.append(c);
        }
    }

    private void emit(Source source, String line) {
        if (source.stderr() && line.equals(INCUBATOR_NOTICE)) return;
        if (live && !shownProgress.isEmpty()) clearProgress();   // accept() redraws it after this chunk
        PrintStream to = source.stderr() ? err : out;
        if (source.equals(LAUNCHER)) {
            launcherLines.add(line);
            to.println(line);
        } else {
            to.println("[rank " + source.rank() + "] " + line.stripTrailing());
        }
        to.flush();
    }

    /** Rank 0's unfinished stdout line if it holds a carriage return (a progress update), else "". */
    private String progressText() {
        StringBuilder line = partial.get(new Source(0, false));
        return line == null || line.indexOf("\r") < 0 ? "" : afterLastCarriageReturn(line).strip();
    }

    private void showProgress(String text) {
        if (text.isEmpty() || text.equals(shownProgress)) return;
        String shown = "[rank 0] " + text;
        out.print("\r" + shown + " ".repeat(Math.max(0, visibleLength() - shown.length())));
        out.flush();
        shownProgress = text;
    }

    private void clearProgress() {
        out.print("\r" + " ".repeat(visibleLength()) + "\r");
        out.flush();
        shownProgress = "";
    }

    private int visibleLength() {
        return shownProgress.isEmpty() ? 0 : "[rank 0] ".length() + shownProgress.length();
    }

    private static String afterLastCarriageReturn(CharSequence line) {
        String s = line.toString();
        int cr = s.lastIndexOf('\r');
        return cr < 0 ? s : s.substring(cr + 1);
    }
}
