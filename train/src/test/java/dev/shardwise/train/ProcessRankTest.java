package dev.shardwise.train;

import dev.shardwise.comm.RankEnvironment;
import dev.shardwise.comm.RankEnvironment.Source;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** {@link ProcessRank#kernelThreads}: SHARDWISE_THREADS per process when set, else the process's share of its node's cores. */
class ProcessRankTest {
    /** Rank 5 of 8, the second of 4 processes on its node. */
    private static final RankEnvironment FOUR_ON_THE_NODE = new RankEnvironment(5, 8, 1, 4, Source.OPEN_MPI);

    @Test
    void withoutTheVariableEachProcessTakesItsShareOfTheCores() {
        assertEquals(4, ProcessRank.kernelThreads(Map.of(), FOUR_ON_THE_NODE, 16), "16 cores, 4 processes on the node");
        assertEquals(1, ProcessRank.kernelThreads(Map.of(), FOUR_ON_THE_NODE, 2), "2 cores, 4 processes: at least 1 thread");
        assertEquals(2, ProcessRank.kernelThreads(Map.of("SHARDWISE_THREADS", " "), FOUR_ON_THE_NODE, 8), "blank counts as unset");
    }

    @Test
    void theVariableSetsEachProcesssThreadsWhateverTheNodeSize() {
        assertEquals(3, ProcessRank.kernelThreads(Map.of("SHARDWISE_THREADS", "3"), FOUR_ON_THE_NODE, 16), "3 of 16 cores' share of 4");
        assertEquals(6, ProcessRank.kernelThreads(Map.of("SHARDWISE_THREADS", "6"), FOUR_ON_THE_NODE, 2), "more than the cores: as asked");
        assertEquals(2, ProcessRank.kernelThreads(Map.of("SHARDWISE_THREADS", " 2\n"), RankEnvironment.SINGLE, 16), "surrounding space");
    }

    @ParameterizedTest(name = "SHARDWISE_THREADS=''{0}''")
    @ValueSource(strings = {"0", "-2", "four", "1.5"})
    void aValueThatIsNotAPositiveIntegerIsRefusedNamingTheVariable(String value) {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> ProcessRank.kernelThreads(Map.of("SHARDWISE_THREADS", value), FOUR_ON_THE_NODE, 16));
        assertTrue(e.getMessage().contains("SHARDWISE_THREADS='" + value + "'") && e.getMessage().contains("e.g. 4"),
                "the message names the variable, its value and the default: " + e.getMessage());
    }
}
