package dev.shardwise.cli;

import java.util.List;
import java.util.regex.Pattern;
import java.util.stream.Collectors;

/**
 * What {@code shardwise launch --print} shows: the same job as an {@code srun} line for Slurm or as a Kubeflow
 * MPIJob for Kubernetes, for a user to paste into a job script or manifest and adapt. The complete, commented
 * versions are {@code examples/slurm/train.sbatch} and {@code examples/k8s/mpijob.yaml}.
 */
final class JobForms {
    /** Where the Kubernetes example expects Shardwise inside its image. */
    static final String IMAGE_HOME = "/opt/shardwise";

    private static final Pattern SHELL_SAFE = Pattern.compile("[A-Za-z0-9_./:=,@%+-]+");

    private JobForms() { }

    /**
     * An {@code srun} line that starts {@code processes} ranks of {@code command} (arguments of {@code shardwise}).
     *
     * @param script the {@code shardwise} script as the cluster's nodes reach it
     * @param hosts  nodes to run on ({@code --nodelist}), or empty to let Slurm choose
     */
    static String slurm(int processes, List<String> hosts, String script, List<String> command) {
        StringBuilder sb = new StringBuilder();
        sb.append("# Slurm: one task per rank. srun sets SLURM_PROCID, SLURM_STEP_NUM_TASKS, SLURM_LOCALID, which each\n")
                .append("# process reads to find its rank; --mpi=pmix lets Open MPI in the processes join the step.\n")
                .append("# Build once before srun (").append(script).append(" --version) so the tasks do not all build at once.\n")
                .append("# Complete job script to adapt: examples/slurm/train.sbatch\n")
                .append("SHARDWISE_SKIP_BUILD=1 srun --ntasks=").append(processes);
        if (!hosts.isEmpty()) sb.append(" --nodelist=").append(String.join(",", hosts));
        sb.append(" --mpi=pmix --cpu-bind=none ").append(shell(script));
        for (String arg : command) sb.append(' ').append(shell(arg));
        return sb.append('\n').toString();
    }

    /** A Kubeflow MPIJob (v2beta1) of {@code processes} workers, one rank each, running {@code command}. */
    static String kubernetes(int processes, List<String> command) {
        List<String> launcher = new java.util.ArrayList<>(List.of("mpirun", "--allow-run-as-root", "--bind-to", "none",
                "--tag-output", "-np", Integer.toString(processes), "-x", "SHARDWISE_SKIP_BUILD=1", IMAGE_HOME + "/shardwise"));
        launcher.addAll(command);
        String image = "REGISTRY/shardwise:latest";
        return """
                # Kubeflow MPI Operator: %d worker pods, one rank each; the launcher pod runs mpirun.
                # Replace the image with yours (JDK 25, Open MPI and Shardwise built in %s); complete,
                # commented manifest to adapt: examples/k8s/mpijob.yaml
                apiVersion: kubeflow.org/v2beta1
                kind: MPIJob
                metadata:
                  name: shardwise-train
                spec:
                  slotsPerWorker: 1
                  runPolicy:
                    cleanPodPolicy: Running
                  mpiReplicaSpecs:
                    Launcher:
                      replicas: 1
                      template:
                        spec:
                          containers:
                          - name: launcher
                            image: %s
                            command: [%s]
                    Worker:
                      replicas: %d
                      template:
                        spec:
                          containers:
                          - name: worker
                            image: %s
                """.formatted(processes, IMAGE_HOME, image, yamlList(launcher), processes, image);
    }

    private static String shell(String word) {
        return SHELL_SAFE.matcher(word).matches() ? word : "'" + word.replace("'", "'\\''") + "'";
    }

    private static String yamlList(List<String> words) {
        return words.stream().map(w -> "\"" + w.replace("\\", "\\\\").replace("\"", "\\\"") + "\"")
                .collect(Collectors.joining(", "));
    }
}
