package dev.shardwise.comm;

import java.time.Duration;
import java.util.List;
import java.util.concurrent.atomic.AtomicIntegerArray;

/** The conformance suite on the {@code local} backend (ranks as threads of one JVM). */
class LocalCommunicatorConformanceTest extends CommunicatorConformanceTest {
    @Override
    <T> List<T> runRanks(int ranks, Duration timeout, LocalCluster.RankBody<T> body) {
        return LocalCluster.run(ranks, LocalCluster.Options.defaults().withTimeout(timeout), body);
    }

    @Override
    SharedInts sharedInts(String name, int n) {
        AtomicIntegerArray ints = new AtomicIntegerArray(n);
        return new SharedInts() {
            @Override public int get(int i) { return ints.get(i); }
            @Override public void set(int i, int value) { ints.set(i, value); }
        };
    }

    @Override
    String backend() {
        return "local";
    }
}
