package dev.shardwise.cli;

import dev.shardwise.core.memory.ProcessMemory;

import java.io.IOException;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.io.Reader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.TreeMap;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * Starts a job of N processes with Open MPI's {@code mpirun}, streams their output through {@link RankOutput}
 * and reports which rank failed: the machinery behind {@code shardwise launch}.
 *
 * <p>The mpirun line is fixed here: {@code --tag-output} (ranks' output is tagged, see {@link RankOutput}),
 * {@code --bind-to none} (each process sizes its own kernel threads from its share of the node, so Open MPI
 * must not pin it to one core), {@code --oversubscribe} (more processes than cores is allowed on a small
 * machine; with more processes than local cores also {@code --mca mpi_yield_when_idle 1}, so waiting ranks
 * yield the core), {@code --allow-run-as-root} (containers), {@code --mca odls_base_sigkill_timeout 0} (a failed
 * job ends at once), and {@code -x NAME=value} for the given environment variables, so that processes on other
 * hosts get them too.
 *
 * <p>When any process exits with a non-zero status or a signal, mpirun kills the others and exits non-zero;
 * {@link #run} returns then, with the failed rank read from mpirun's report, or else from which local rank's
 * process ended first (see {@code RankWatch}). Processes that outlive mpirun
 * (they should not) are killed, so none is left behind. If this JVM is stopped (Ctrl-C), mpirun is
 * stopped with it. {@link #run} blocks until mpirun and every process it started have ended.
 */
final class MpiRun {
    /** How long processes get to end after mpirun has, before they are killed, in ms. */
    private static final long STRAGGLER_GRACE_MS = 2_000;

    /** mpirun's report of a process that exited with a status: {@code Process name: [[30537,1],1]} then {@code Exit code: 3}. */
    private static final Pattern EXITED = Pattern.compile("Process name:\\s*\\[\\[\\d+,\\d+\\],(\\d+)\\]\\s*Exit code:\\s*(\\d+)");
    /** mpirun's report of a process killed by a signal. */
    private static final Pattern SIGNALLED = Pattern.compile(
            "process rank (\\d+) with PID \\d+ on node (\\S+) exited on signal (\\d+)(?: \\(([^)]*)\\))?");

    /**
     * How a job ended: mpirun's exit status, the failed rank if known, and the highest resident memory seen
     * of each rank that ran on this machine (bytes, by rank: the kernel's high-water mark VmHWM, read about
     * every second, so only growth in a rank's last second can be missed).
     */
    record Outcome(int exitStatus, Optional<Failure> failure, Map<Integer, Long> peakResidentBytes) {
        boolean succeeded() {
            return exitStatus == 0;
        }

        /** One sentence for the user, e.g. {@code rank 1 was killed by signal 9 (Killed) on node vm}. */
        String describe() {
            if (succeeded()) return "all ranks finished";
            return failure.map(Failure::describe).orElse("the job failed (mpirun exit status " + exitStatus
                    + ") without naming a rank; see mpirun's messages above");
        }
    }

    /**
     * The first rank that failed, as mpirun reports it.
     *
     * @param rank       the rank in the job's world
     * @param exitStatus its exit status, or -1 if a signal ended it
     * @param signal     the signal that ended it, or -1
     * @param detail     the signal's name and the node, when mpirun gives them, else ""
     */
    record Failure(int rank, int exitStatus, int signal, String detail) {
        String describe() {
            return signal >= 0 ? "rank " + rank + " was killed by signal " + signal + detail
                    : "rank " + rank + " exited with status " + exitStatus;
        }
    }

    private final Path mpirun;

    private MpiRun(Path mpirun) {
        this.mpirun = mpirun;
    }

    /**
     * Finds {@code mpirun} on {@code path} (a {@code PATH}-style list).
     *
     * @throws IllegalStateException saying how to install Open MPI if there is none
     */
    static MpiRun find(String path) {
        Path mpirun = JobCommands.onPath("mpirun", path);
        if (mpirun != null) return new MpiRun(mpirun);
        throw new IllegalStateException("mpirun was not found on the PATH; launch starts processes with Open MPI. "
                + "Install it (Debian/Ubuntu: sudo apt-get install openmpi-bin) and run again, or print the command for "
                + "a cluster with --print slurm or --print k8s");
    }

    /**
     * The mpirun command line for {@code processes} copies of {@code command}.
     *
     * @param hosts     hosts to place processes on (Open MPI's {@code --host} syntax, e.g. {@code a:2,b:2}),
     *                  or empty for this machine
     * @param exported  environment variables to set in every process
     */
    List<String> commandLine(int processes, List<String> hosts, Map<String, String> exported, List<String> command) {
        // more ranks than cores here: waiting ranks yield theirs
        boolean yield = hosts.isEmpty() && processes > Runtime.getRuntime().availableProcessors();
        List<String> line = JobCommands.mpirun(mpirun, processes, yield);
        line.addAll(List.of("--bind-to", "none", "--tag-output"));
        if (!hosts.isEmpty()) line.addAll(List.of("--host", String.join(",", hosts)));
        exported.forEach((name, value) -> line.addAll(List.of("-x", name + "=" + value)));
        line.addAll(command);
        return line;
    }

    /**
     * Runs the job and streams its output to {@code out} and {@code err}; see the class description.
     *
     * @param live rank 0's progress line is drawn in place (our output is a terminal)
     * @throws IOException if mpirun cannot be started
     */
    Outcome run(int processes, List<String> hosts, Map<String, String> exported, List<String> command,
                PrintStream out, PrintStream err, boolean live) throws IOException {
        ProcessBuilder builder = new ProcessBuilder(commandLine(processes, hosts, exported, command))
                .redirectErrorStream(true).redirectInput(ProcessBuilder.Redirect.INHERIT);
        Process job = builder.start();
        RankWatch watch = new RankWatch(job, processes);
        Thread stopWithUs = new Thread(() -> stop(job, watch.started), "shardwise-launch-shutdown");
        Runtime.getRuntime().addShutdownHook(stopWithUs);
        Thread watcher = Thread.ofPlatform().daemon().name("shardwise-launch-watcher").start(watch);
        RankOutput output = new RankOutput(out, err, live);
        try (Reader reader = new InputStreamReader(job.getInputStream(), StandardCharsets.UTF_8)) {
            char[] buffer = new char[8192];
            for (int n; (n = reader.read(buffer)) >= 0; ) output.accept(new String(buffer, 0, n));
        } finally {
            output.finish();
        }
        int status;
        try {
            status = job.waitFor();
            watcher.join();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            stop(job, watch.started);
            throw new IOException("interrupted while waiting for mpirun", e);
        }
        killLeftovers(watch.started);
        try {
            Runtime.getRuntime().removeShutdownHook(stopWithUs);
        } catch (IllegalStateException shuttingDown) {
            // the hook is running already; it stops what is left
        }
        Map<Integer, Long> memory = new TreeMap<>(watch.peakResident);
        if (status == 0) return new Outcome(0, Optional.empty(), memory);
        Optional<Failure> named = failure(String.join("\n", output.launcherLines()));
        return new Outcome(status, named.isPresent() ? named : watch.firstEnded(status), memory);
    }

    /**
     * Watches the job's processes on this machine, so that the failed rank is known even when mpirun's report
     * leaves it out (Open MPI 4.1 omits it in some runs, more often on a busy machine): it maps mpirun's
     * children to ranks ({@code OMPI_COMM_WORLD_RANK} in their environment) and notes the rank that ends first,
     * polling every {@value #POLL_MS} ms. The failed process ends first; mpirun stops the others only after it
     * has noticed, and a JVM takes longer than that to exit. Every process mpirun started is remembered, so
     * that none can be left behind.
     */
    private static final class RankWatch implements Runnable {
        private static final long POLL_MS = 5;
        private final Process job;
        private final int processes;
        final Set<ProcessHandle> started = ConcurrentHashMap.newKeySet();
        private final Map<Integer, ProcessHandle> ranks = new ConcurrentHashMap<>();
        final Map<Integer, Long> peakResident = new ConcurrentHashMap<>();
        private volatile List<Integer> firstEnded = List.of();

        RankWatch(Process job, int processes) {
            this.job = job;
            this.processes = processes;
        }

        @Override
        public void run() {
            long lastScan = 0;
            while (job.isAlive()) {
                long now = System.nanoTime();
                if (ranks.size() < processes || now - lastScan > 1_000_000_000L) {   // until every rank is known, then each second
                    lastScan = now;
                    job.descendants().forEach(started::add);
                    job.children().forEach(p -> rankOf(p).ifPresent(rank -> ranks.putIfAbsent(rank, p)));
                    ranks.forEach((rank, p) -> ProcessMemory.of(p.pid())
                            .ifPresent(m -> peakResident.merge(rank, m.peakResidentBytes(), Math::max)));
                }
                // Conclusive only if every rank was seen alive before the first one ended.
                if (firstEnded.isEmpty() && ranks.size() == processes) {
                    List<Integer> ended = ranks.entrySet().stream().filter(e -> !e.getValue().isAlive())
                            .map(Map.Entry::getKey).sorted().toList();
                    if (!ended.isEmpty()) firstEnded = ended;
                }
                try {
                    Thread.sleep(POLL_MS);
                } catch (InterruptedException e) {
                    return;
                }
            }
        }

        /** The rank that ended first, with mpirun's exit status (that of the first process to fail), if only one did. */
        Optional<Failure> firstEnded(int mpirunStatus) {
            List<Integer> first = firstEnded;
            if (first.size() != 1) return Optional.empty();
            // mpirun exits with the first failed process's status: 128 + n when signal n ended it.
            return Optional.of(mpirunStatus > 128 ? new Failure(first.getFirst(), -1, mpirunStatus - 128, "")
                    : new Failure(first.getFirst(), mpirunStatus, -1, ""));
        }

        private static Optional<Integer> rankOf(ProcessHandle process) {
            try {
                byte[] environ = Files.readAllBytes(Path.of("/proc", Long.toString(process.pid()), "environ"));
                for (String entry : new String(environ, StandardCharsets.UTF_8).split("\0")) {
                    if (entry.startsWith("OMPI_COMM_WORLD_RANK=")) return Optional.of(Integer.parseInt(entry.substring(21)));
                }
            } catch (IOException | RuntimeException e) {
                // not Linux, gone already, or not ours to read: this process stays unknown
            }
            return Optional.empty();
        }
    }

    /** The first failed rank that mpirun's messages name, if they name one. */
    static Optional<Failure> failure(String mpirunMessages) {
        Matcher exited = EXITED.matcher(mpirunMessages), signalled = SIGNALLED.matcher(mpirunMessages);
        boolean e = exited.find(), s = signalled.find();
        if (s && (!e || signalled.start() < exited.start())) {
            String name = signalled.group(4) == null ? "" : " (" + signalled.group(4) + ")";
            return Optional.of(new Failure(Integer.parseInt(signalled.group(1)), -1, Integer.parseInt(signalled.group(3)),
                    name + " on node " + signalled.group(2)));
        }
        if (e) return Optional.of(new Failure(Integer.parseInt(exited.group(1)), Integer.parseInt(exited.group(2)), -1, ""));
        return Optional.empty();
    }

    /** Stops mpirun (it passes SIGTERM on to the ranks), then kills whatever is left. */
    private static void stop(Process job, Set<ProcessHandle> started) {
        if (!job.isAlive()) {
            killLeftovers(started);
            return;
        }
        job.descendants().forEach(started::add);
        job.destroy();
        try {
            if (!job.waitFor(STRAGGLER_GRACE_MS, TimeUnit.MILLISECONDS)) job.destroyForcibly();
        } catch (InterruptedException e) {
            job.destroyForcibly();
            Thread.currentThread().interrupt();
        }
        killLeftovers(started);
    }

    /** Kills the processes that are still alive, politely first. */
    private static void killLeftovers(Set<ProcessHandle> processes) {
        List<ProcessHandle> alive = processes.stream().filter(MpiRun::running).toList();
        if (alive.isEmpty()) return;
        alive.forEach(ProcessHandle::destroy);
        long deadline = System.nanoTime() + STRAGGLER_GRACE_MS * 1_000_000;
        while (System.nanoTime() < deadline && alive.stream().anyMatch(MpiRun::running)) {
            try {
                Thread.sleep(50);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                break;
            }
        }
        alive.stream().filter(MpiRun::running).forEach(ProcessHandle::destroyForcibly);
    }

    /**
     * True if {@code process} still runs: alive and, on Linux, not a zombie (a process that has ended but
     * whose parent, after mpirun exits often init, has not collected its status yet).
     */
    static boolean running(ProcessHandle process) {
        if (!process.isAlive()) return false;
        try {
            String stat = Files.readString(Path.of("/proc", Long.toString(process.pid()), "stat"));
            return stat.charAt(stat.lastIndexOf(')') + 2) != 'Z';   // "pid (name) S ...": the state follows the name
        } catch (IOException | RuntimeException e) {
            return process.isAlive();   // no /proc (not Linux) or it ended meanwhile
        }
    }
}
