package dev.shardwise.comm;

import java.time.Duration;
import java.util.List;

/** The conformance suite on the {@code local} backend (ranks as threads of one JVM). */
class LocalCommunicatorConformanceTest extends CommunicatorConformanceTest {
    @Override
    <T> List<T> runRanks(int ranks, Duration timeout, LocalCluster.RankBody<T> body) {
        return LocalCluster.run(ranks, LocalCluster.Options.defaults().withTimeout(timeout), body);
    }

    @Override
    String backend() {
        return "local";
    }
}
