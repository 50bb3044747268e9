package dev.shardwise.cli;

import org.junit.jupiter.api.Test;
import org.yaml.snakeyaml.LoaderOptions;
import org.yaml.snakeyaml.Yaml;
import org.yaml.snakeyaml.constructor.SafeConstructor;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * The job examples a user adapts (they cannot run here): the Slurm script is valid bash that submits one srun
 * step, and the Kubernetes manifest, like {@code launch --print k8s}, is an MPIJob with a launcher and workers.
 */
class ExamplesTest {

    private static Path examples() {
        Path root = Path.of("").toAbsolutePath();
        for (Path p = root; p != null; p = p.getParent()) {
            if (Files.isDirectory(p.resolve("examples"))) return p.resolve("examples");
        }
        throw new AssertionError("no examples/ directory above " + root);
    }

    @Test
    void slurmScriptIsValidBashWithSbatchHeaderAndOneSrunStep() throws Exception {
        Path script = examples().resolve("slurm/train.sbatch");
        String text = Files.readString(script);
        assertTrue(text.startsWith("#!/bin/bash\n"), "starts with a bash shebang");
        assertTrue(text.contains("\n#SBATCH --nodes=") && text.contains("\n#SBATCH --ntasks-per-node="), "SBATCH header");
        assertEquals(1, text.lines().filter(l -> l.startsWith("srun ")).count(), "one srun line");
        assertTrue(text.contains("export SHARDWISE_SKIP_BUILD=1"), "tasks skip the build check");
        boolean hasBash = Files.isExecutable(Path.of("/bin/bash")) || Files.isExecutable(Path.of("/usr/bin/bash"));
        assumeTrue(hasBash, "no bash here to check the syntax with");
        Process p = new ProcessBuilder("bash", "-n", script.toString()).redirectErrorStream(true).start();
        assertTrue(p.waitFor(10, TimeUnit.SECONDS), "bash -n finished");
        assertEquals(0, p.exitValue(), "bash -n " + script + ": " + new String(p.getInputStream().readAllBytes()));
    }

    @Test
    void kubernetesExampleIsAnMpiJobWithLauncherAndWorkers() throws IOException {
        Map<String, Object> job = yaml(Files.readString(examples().resolve("k8s/mpijob.yaml")));
        checkMpiJob("examples/k8s/mpijob.yaml", job, 4);
    }

    @Test
    void printedKubernetesFormIsAnMpiJobToo() {
        String printed = JobForms.kubernetes(3, List.of("train", "--preset", "tiny", "--run-dir", "runs/a \"b\""));
        Map<String, Object> job = yaml(printed);
        checkMpiJob("launch --print k8s", job, 3);
        List<?> command = (List<?>) container(job, "Launcher").get("command");
        assertEquals("runs/a \"b\"", command.getLast(), "arguments survive YAML quoting");
    }

    @Test
    void printedSlurmFormQuotesArgumentsForTheShell() {
        String printed = JobForms.slurm(4, List.of("n1", "n2"), "/opt/shardwise/shardwise", List.of("train", "--run-dir", "my runs/it's"));
        String srun = printed.lines().filter(l -> !l.startsWith("#")).findFirst().orElseThrow();
        assertEquals("SHARDWISE_SKIP_BUILD=1 srun --ntasks=4 --nodelist=n1,n2 --mpi=pmix --cpu-bind=none "
                + "/opt/shardwise/shardwise train --run-dir 'my runs/it'\\''s'", srun);
    }

    @SuppressWarnings("unchecked")
    private static Map<String, Object> yaml(String text) {
        return (Map<String, Object>) new Yaml(new SafeConstructor(new LoaderOptions())).load(text);
    }

    @SuppressWarnings("unchecked")
    private static Map<String, Object> container(Map<String, Object> job, String replica) {
        Map<String, Object> spec = (Map<String, Object>) job.get("spec");
        Map<String, Object> replicas = (Map<String, Object>) spec.get("mpiReplicaSpecs");
        Map<String, Object> template = (Map<String, Object>) ((Map<String, Object>) replicas.get(replica)).get("template");
        List<Object> containers = (List<Object>) ((Map<String, Object>) template.get("spec")).get("containers");
        return (Map<String, Object>) containers.getFirst();
    }

    @SuppressWarnings("unchecked")
    private static void checkMpiJob(String name, Map<String, Object> job, int workers) {
        assertEquals("kubeflow.org/v2beta1", job.get("apiVersion"), name + ": apiVersion");
        assertEquals("MPIJob", job.get("kind"), name + ": kind");
        Map<String, Object> spec = (Map<String, Object>) job.get("spec");
        Map<String, Object> replicas = (Map<String, Object>) spec.get("mpiReplicaSpecs");
        assertEquals(List.of("Launcher", "Worker"), List.copyOf(replicas.keySet()), name + ": replica kinds");
        assertEquals(1, ((Map<String, Object>) replicas.get("Launcher")).get("replicas"), name + ": one launcher");
        assertEquals(workers, ((Map<String, Object>) replicas.get("Worker")).get("replicas"), name + ": workers");
        List<String> command = ((List<Object>) container(job, "Launcher").get("command")).stream().map(String::valueOf).toList();
        assertEquals("mpirun", command.getFirst(), name + ": the launcher runs mpirun");
        int np = command.indexOf("-np");
        assertTrue(np > 0, name + ": -np given");
        int slots = ((Number) spec.getOrDefault("slotsPerWorker", 1)).intValue();
        assertEquals(workers * slots, Integer.parseInt(command.get(np + 1)), name + ": -np equals workers x slotsPerWorker");
        assertTrue(command.contains("train"), name + ": runs shardwise train");
        assertTrue(container(job, "Worker").get("image") instanceof String, name + ": worker image");
    }
}
