package dev.shardwise.comm;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * Where this process sits in a multi-process job, read from the environment variables that the launchers of
 * the ecosystem set: Open MPI's {@code mpirun}, MPICH's Hydra, Slurm's {@code srun} and PyTorch's
 * {@code torchrun}. A process started on its own has no such variables and is rank 0 of 1.
 *
 * <p>Conventions are tried in this order; the first whose rank and size variables are both set wins, and
 * its values must be consistent (integers, {@code 0 <= rank < size}):
 * <table>
 * <caption>Variables read</caption>
 * <tr><th>source</th><th>rank</th><th>size</th><th>local rank</th><th>local size</th></tr>
 * <tr><td>Open MPI</td><td>OMPI_COMM_WORLD_RANK</td><td>OMPI_COMM_WORLD_SIZE</td>
 *     <td>OMPI_COMM_WORLD_LOCAL_RANK</td><td>OMPI_COMM_WORLD_LOCAL_SIZE</td></tr>
 * <tr><td>MPICH / Hydra (PMI)</td><td>PMI_RANK</td><td>PMI_SIZE</td>
 *     <td>MPI_LOCALRANKID</td><td>MPI_LOCALNRANKS</td></tr>
 * <tr><td>Slurm ({@code srun})</td><td>SLURM_PROCID</td><td>SLURM_STEP_NUM_TASKS</td>
 *     <td>SLURM_LOCALID</td><td>SLURM_STEP_TASKS_PER_NODE at SLURM_NODEID</td></tr>
 * <tr><td>torchrun</td><td>RANK</td><td>WORLD_SIZE</td><td>LOCAL_RANK</td><td>LOCAL_WORLD_SIZE</td></tr>
 * </table>
 * Slurm's size is the step's task count, not {@code SLURM_NTASKS}: a batch script itself (outside
 * {@code srun}) also carries {@code SLURM_PROCID=0} and the allocation's task count, and must not be taken
 * for rank 0 of a job whose other ranks never start. When a convention does not give the local rank and size,
 * the process is taken to be alone on its node if the world has one rank, and otherwise to share the node
 * with every rank (local rank = rank, local size = size): the safe guess for sizing kernel threads.
 *
 * @param rank      this process's rank in the world, in [0, size)
 * @param size      number of processes in the job
 * @param localRank this process's index among the job's processes on this node, in [0, localSize)
 * @param localSize number of the job's processes on this node (they share its cores)
 * @param source    which convention the values came from
 */
public record RankEnvironment(int rank, int size, int localRank, int localSize, Source source) {

    /** The launcher convention a {@link RankEnvironment} was read from. */
    public enum Source {
        OPEN_MPI("Open MPI (mpirun)"),
        PMI("MPICH/Hydra (PMI)"),
        SLURM("Slurm (srun)"),
        TORCHRUN("torchrun"),
        /** No launcher variables: a process started on its own. */
        NONE("no launcher");

        private final String description;

        Source(String description) {
            this.description = description;
        }

        /** How messages name the convention, e.g. {@code Open MPI (mpirun)}. */
        public String description() {
            return description;
        }
    }

    /** One entry of Slurm's tasks-per-node list: {@code 2} or {@code 2(x3)} (2 tasks on each of 3 nodes). */
    private static final Pattern TASKS_PER_NODE_ENTRY = Pattern.compile("(\\d+)(?:\\(x(\\d+)\\))?");

    /** The single-process environment: rank 0 of 1. */
    public static final RankEnvironment SINGLE = new RankEnvironment(0, 1, 0, 1, Source.NONE);

    /**
     * @throws IllegalArgumentException if a rank is outside [0, size) or a size is below 1
     */
    public RankEnvironment {
        if (size < 1) throw new IllegalArgumentException("world size must be >= 1, got " + size + " (" + source + ")");
        if (rank < 0 || rank >= size) {
            throw new IllegalArgumentException("rank " + rank + " is outside [0, " + size + ") (" + source + ")");
        }
        if (localSize < 1 || localSize > size) {
            throw new IllegalArgumentException("local size " + localSize + " is outside [1, " + size + "] (" + source + ")");
        }
        if (localRank < 0 || localRank >= localSize) {
            throw new IllegalArgumentException("local rank " + localRank + " is outside [0, " + localSize + ") (" + source + ")");
        }
    }

    /** {@link #from(Map)} of this process's environment. */
    public static RankEnvironment current() {
        return from(System.getenv());
    }

    /**
     * Reads the first convention (in the order of the class description) whose rank and size variables are
     * set in {@code env}, or {@link #SINGLE} if none is.
     *
     * @throws IllegalArgumentException naming the variable and its value if a value is not a non-negative
     *                                  integer, or if the values are inconsistent (rank >= size, local rank >=
     *                                  local size)
     */
    public static RankEnvironment from(Map<String, String> env) {
        return openMpi(env).or(() -> pmi(env)).or(() -> slurm(env)).or(() -> torchrun(env)).orElse(SINGLE);
    }

    /** True if this process is one of several in a job. */
    public boolean isMultiProcess() {
        return size > 1;
    }

    /** {@code max(1, cores / localSize)}: this process's share of the node's cores, for its kernel threads. */
    public int threadsPerProcess(int cores) {
        return Math.max(1, cores / localSize);
    }

    private static Optional<RankEnvironment> openMpi(Map<String, String> env) {
        return read(env, Source.OPEN_MPI, "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE",
                "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE");
    }

    private static Optional<RankEnvironment> pmi(Map<String, String> env) {
        return read(env, Source.PMI, "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", "MPI_LOCALNRANKS");
    }

    private static Optional<RankEnvironment> torchrun(Map<String, String> env) {
        return read(env, Source.TORCHRUN, "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE");
    }

    private static Optional<RankEnvironment> slurm(Map<String, String> env) {
        if (!env.containsKey("SLURM_PROCID") || !env.containsKey("SLURM_STEP_NUM_TASKS")) return Optional.empty();
        int rank = integer(env, "SLURM_PROCID"), size = integer(env, "SLURM_STEP_NUM_TASKS");
        checkRank(Source.SLURM, "SLURM_PROCID", rank, "SLURM_STEP_NUM_TASKS", size);
        if (!env.containsKey("SLURM_LOCALID") || !env.containsKey("SLURM_STEP_TASKS_PER_NODE")
                || !env.containsKey("SLURM_NODEID")) {
            return Optional.of(withGuessedLocal(rank, size, Source.SLURM));
        }
        int localRank = integer(env, "SLURM_LOCALID"), node = integer(env, "SLURM_NODEID");
        List<Integer> perNode = tasksPerNode(env.get("SLURM_STEP_TASKS_PER_NODE"));
        if (node >= perNode.size()) {
            throw new IllegalArgumentException("SLURM_NODEID=" + node + " but SLURM_STEP_TASKS_PER_NODE="
                    + env.get("SLURM_STEP_TASKS_PER_NODE") + " lists " + perNode.size() + " node(s); the job's environment is inconsistent");
        }
        int localSize = perNode.get(node);
        checkRank(Source.SLURM, "SLURM_LOCALID", localRank, "SLURM_STEP_TASKS_PER_NODE[SLURM_NODEID]", localSize);
        return Optional.of(new RankEnvironment(rank, size, localRank, localSize, Source.SLURM));
    }

    /**
     * Expands Slurm's compressed tasks-per-node list, e.g. {@code 2(x3),1} to [2, 2, 2, 1].
     *
     * @throws IllegalArgumentException naming the value if it is not in that form
     */
    static List<Integer> tasksPerNode(String value) {
        List<Integer> out = new ArrayList<>();
        for (String part : value.split(",")) {
            Matcher m = TASKS_PER_NODE_ENTRY.matcher(part.trim());
            if (!m.matches()) {
                throw new IllegalArgumentException("SLURM_STEP_TASKS_PER_NODE='" + value
                        + "' is not a list like 2(x3),1; check the job's environment");
            }
            int tasks = Integer.parseInt(m.group(1)), repeat = m.group(2) == null ? 1 : Integer.parseInt(m.group(2));
            for (int i = 0; i < repeat; i++) out.add(tasks);
        }
        return out;
    }

    private static Optional<RankEnvironment> read(Map<String, String> env, Source source, String rankVar, String sizeVar,
                                                  String localRankVar, String localSizeVar) {
        if (!env.containsKey(rankVar) || !env.containsKey(sizeVar)) return Optional.empty();
        int rank = integer(env, rankVar), size = integer(env, sizeVar);
        checkRank(source, rankVar, rank, sizeVar, size);
        if (!env.containsKey(localRankVar) || !env.containsKey(localSizeVar)) {
            return Optional.of(withGuessedLocal(rank, size, source));
        }
        int localRank = integer(env, localRankVar), localSize = integer(env, localSizeVar);
        checkRank(source, localRankVar, localRank, localSizeVar, localSize);
        if (localSize > size) {
            throw new IllegalArgumentException(localSizeVar + "=" + localSize + " exceeds " + sizeVar + "=" + size
                    + " (" + source.description() + "); the job's environment is inconsistent");
        }
        return Optional.of(new RankEnvironment(rank, size, localRank, localSize, source));
    }

    private static RankEnvironment withGuessedLocal(int rank, int size, Source source) {
        return new RankEnvironment(rank, size, rank, size, source);
    }

    private static void checkRank(Source source, String rankVar, int rank, String sizeVar, int size) {
        if (size < 1) {
            throw new IllegalArgumentException(sizeVar + "=" + size + " (" + source.description() + "): a job needs at least 1 process");
        }
        if (rank >= size) {
            throw new IllegalArgumentException(rankVar + "=" + rank + " is not below " + sizeVar + "=" + size + " ("
                    + source.description() + "); ranks run from 0 to size-1, so the job's environment is inconsistent");
        }
    }

    private static int integer(Map<String, String> env, String name) {
        String value = env.get(name);
        try {
            int v = Integer.parseInt(value.trim());
            if (v >= 0) return v;
        } catch (NumberFormatException ignored) {
            // reported below
        }
        throw new IllegalArgumentException("environment variable " + name + "='" + value
                + "' is not a non-negative integer; it is set by the job launcher (unset it to run a single process)");
    }
}
