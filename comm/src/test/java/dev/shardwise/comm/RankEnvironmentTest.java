package dev.shardwise.comm;

import dev.shardwise.comm.RankEnvironment.Source;
import org.junit.jupiter.api.Test;

import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** {@link RankEnvironment} reads each launcher's convention, in the documented order, and rejects bad values by name. */
class RankEnvironmentTest {

    @Test
    void noLauncherVariablesMeansOneProcess() {
        RankEnvironment env = RankEnvironment.from(Map.of("PATH", "/usr/bin"));
        assertEquals(RankEnvironment.SINGLE, env);
        assertFalse(env.isMultiProcess());
    }

    @Test
    void readsOpenMpi() {
        assertEquals(new RankEnvironment(3, 8, 1, 4, Source.OPEN_MPI), RankEnvironment.from(Map.of(
                "OMPI_COMM_WORLD_RANK", "3", "OMPI_COMM_WORLD_SIZE", "8",
                "OMPI_COMM_WORLD_LOCAL_RANK", "1", "OMPI_COMM_WORLD_LOCAL_SIZE", "4")));
    }

    @Test
    void readsMpichHydraPmi() {
        assertEquals(new RankEnvironment(2, 4, 0, 2, Source.PMI), RankEnvironment.from(Map.of(
                "PMI_RANK", "2", "PMI_SIZE", "4", "MPI_LOCALRANKID", "0", "MPI_LOCALNRANKS", "2")));
    }

    @Test
    void readsSlurmStepWithCompressedTasksPerNode() {
        // 7 tasks on 4 nodes: 2, 2, 2, 1; task 6 is the only one on node 3
        assertEquals(new RankEnvironment(6, 7, 0, 1, Source.SLURM), RankEnvironment.from(Map.of(
                "SLURM_PROCID", "6", "SLURM_STEP_NUM_TASKS", "7", "SLURM_LOCALID", "0",
                "SLURM_NODEID", "3", "SLURM_STEP_TASKS_PER_NODE", "2(x3),1", "SLURM_NTASKS", "7")));
        assertEquals(new RankEnvironment(3, 7, 1, 2, Source.SLURM), RankEnvironment.from(Map.of(
                "SLURM_PROCID", "3", "SLURM_STEP_NUM_TASKS", "7", "SLURM_LOCALID", "1",
                "SLURM_NODEID", "1", "SLURM_STEP_TASKS_PER_NODE", "2(x3),1")));
        assertEquals(List.of(2, 2, 2, 1), RankEnvironment.tasksPerNode("2(x3),1"));
        assertEquals(List.of(4), RankEnvironment.tasksPerNode("4"));
    }

    @Test
    void slurmBatchScriptOutsideSrunIsOneProcess() {
        // sbatch's own shell has SLURM_PROCID=0 and the allocation's task count, but no step
        assertEquals(RankEnvironment.SINGLE, RankEnvironment.from(Map.of("SLURM_PROCID", "0", "SLURM_NTASKS", "8",
                "SLURM_JOB_ID", "1234")));
    }

    @Test
    void readsTorchrun() {
        assertEquals(new RankEnvironment(5, 8, 1, 4, Source.TORCHRUN), RankEnvironment.from(Map.of(
                "RANK", "5", "WORLD_SIZE", "8", "LOCAL_RANK", "1", "LOCAL_WORLD_SIZE", "4")));
    }

    @Test
    void missingLocalValuesAssumeEveryRankSharesTheNode() {
        RankEnvironment env = RankEnvironment.from(Map.of("RANK", "1", "WORLD_SIZE", "4"));
        assertEquals(new RankEnvironment(1, 4, 1, 4, Source.TORCHRUN), env);
        assertEquals(1, env.threadsPerProcess(2), "2 cores over 4 processes");
        assertEquals(4, env.threadsPerProcess(16), "16 cores over 4 processes");
    }

    @Test
    void firstConventionWinsInTheDocumentedOrder() {
        Map<String, String> all = Map.of("OMPI_COMM_WORLD_RANK", "1", "OMPI_COMM_WORLD_SIZE", "2",
                "PMI_RANK", "2", "PMI_SIZE", "3", "SLURM_PROCID", "3", "SLURM_STEP_NUM_TASKS", "4",
                "RANK", "4", "WORLD_SIZE", "5");
        assertEquals(Source.OPEN_MPI, RankEnvironment.from(all).source());
        Map<String, String> noOmpi = new java.util.HashMap<>(all);
        noOmpi.remove("OMPI_COMM_WORLD_RANK");
        assertEquals(Source.PMI, RankEnvironment.from(noOmpi).source());
        noOmpi.remove("PMI_SIZE");
        assertEquals(Source.SLURM, RankEnvironment.from(noOmpi).source());
        noOmpi.remove("SLURM_STEP_NUM_TASKS");
        assertEquals(Source.TORCHRUN, RankEnvironment.from(noOmpi).source());
        assertTrue(RankEnvironment.from(noOmpi).isMultiProcess());
    }

    @Test
    void inconsistentValuesAreErrorsNamingTheVariable() {
        record Case(Map<String, String> env, String expected) { }
        List<Case> cases = List.of(
                new Case(Map.of("OMPI_COMM_WORLD_RANK", "4", "OMPI_COMM_WORLD_SIZE", "4"), "OMPI_COMM_WORLD_RANK=4 is not below OMPI_COMM_WORLD_SIZE=4"),
                new Case(Map.of("PMI_RANK", "one", "PMI_SIZE", "4"), "PMI_RANK='one' is not a non-negative integer"),
                new Case(Map.of("RANK", "0", "WORLD_SIZE", "-2"), "WORLD_SIZE='-2' is not a non-negative integer"),
                new Case(Map.of("RANK", "0", "WORLD_SIZE", "0"), "WORLD_SIZE=0"),
                new Case(Map.of("RANK", "0", "WORLD_SIZE", "2", "LOCAL_RANK", "2", "LOCAL_WORLD_SIZE", "2"), "LOCAL_RANK=2 is not below LOCAL_WORLD_SIZE=2"),
                new Case(Map.of("RANK", "0", "WORLD_SIZE", "2", "LOCAL_RANK", "0", "LOCAL_WORLD_SIZE", "3"), "LOCAL_WORLD_SIZE=3 exceeds WORLD_SIZE=2"),
                new Case(Map.of("SLURM_PROCID", "0", "SLURM_STEP_NUM_TASKS", "2", "SLURM_LOCALID", "0",
                        "SLURM_NODEID", "0", "SLURM_STEP_TASKS_PER_NODE", "two"), "SLURM_STEP_TASKS_PER_NODE='two'"),
                new Case(Map.of("SLURM_PROCID", "0", "SLURM_STEP_NUM_TASKS", "2", "SLURM_LOCALID", "0",
                        "SLURM_NODEID", "2", "SLURM_STEP_TASKS_PER_NODE", "1(x2)"), "SLURM_NODEID=2"));
        for (Case c : cases) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> RankEnvironment.from(c.env()),
                    "should be refused: " + c.env());
            assertTrue(e.getMessage().contains(c.expected()), c.env() + ": message was " + e.getMessage());
        }
    }
}
