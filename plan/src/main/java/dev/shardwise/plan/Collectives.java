package dev.shardwise.plan;

/**
 * Alpha-beta costs of the collectives a layout runs, on the links its group spans. Ranks are numbered as
 * Megatron and {@code ParallelLayout} order them, tp fastest: globalRank = tpRank + dpRank·t + ppStage·t·d, and
 * consecutive ranks fill a node. A group of n ranks at stride {@code stride} therefore has k = min(n,
 * max(1, devicesPerNode / stride)) members in each node it touches: all inside one node (k = n) it runs on
 * NVLink; spread one per node (k = 1) on the network; in between hierarchically (reduce-scatter inside the node,
 * all-reduce of the 1/k shard across nodes, all-gather inside the node), as NCCL's tree and ring over NVLink+IB do.
 */
final class Collectives {
    private final ClusterSpec cluster;
    private final double efficiency;

    Collectives(ClusterSpec cluster, CostParameters parameters) {
        this.cluster = cluster;
        this.efficiency = parameters.commEfficiency();
    }

    /** Ring all-reduce of {@code bytes} over n ranks at {@code stride}: 2(n−1)/n·bytes/bw + 2(n−1)·alpha. */
    double allReduce(double bytes, int n, int stride) {
        if (n <= 1) return 0;
        int k = membersPerNode(n, stride);
        if (k == n) return ringAllReduce(bytes, n, cluster.intraNodeBandwidth(), cluster.intraNodeLatency());
        if (k == 1) return ringAllReduce(bytes, n, cluster.interNodeBandwidth(), cluster.interNodeLatency());
        return 2 * ring(bytes, k, cluster.intraNodeBandwidth(), cluster.intraNodeLatency())
                + ringAllReduce(bytes / k, n / k, cluster.interNodeBandwidth(), cluster.interNodeLatency());
    }

    /** Ring all-gather (or reduce-scatter) whose full result is {@code bytes}: (n−1)/n·bytes/bw + (n−1)·alpha. */
    double allGather(double bytes, int n, int stride) {
        if (n <= 1) return 0;
        int k = membersPerNode(n, stride);
        if (k == n) return ring(bytes, n, cluster.intraNodeBandwidth(), cluster.intraNodeLatency());
        if (k == 1) return ring(bytes, n, cluster.interNodeBandwidth(), cluster.interNodeLatency());
        return ring(bytes, k, cluster.intraNodeBandwidth(), cluster.intraNodeLatency())
                + ring(bytes / k, n / k, cluster.interNodeBandwidth(), cluster.interNodeLatency());
    }

    /**
     * All-to-all in which each of n ranks at {@code stride} sends {@code bytes} in all, 1/n to each rank (itself
     * included): the (k−1)/n that stay in the node cross its links and the (n−k)/n that leave it the network, at
     * once, so the slower of the two, plus (n−1)·alpha.
     */
    double allToAll(double bytes, int n, int stride) {
        if (n <= 1) return 0;
        int k = membersPerNode(n, stride);
        double inside = (k - 1.0) / n * bytes / (efficiency * cluster.intraNodeBandwidth());
        double outside = (double) (n - k) / n * bytes / (efficiency * cluster.interNodeBandwidth());
        double latency = k == n ? cluster.intraNodeLatency() : cluster.interNodeLatency();
        return Math.max(inside, outside) + (n - 1) * latency;
    }

    /** One point-to-point message of {@code bytes} between ranks {@code distance} apart: alpha + bytes/bw. */
    double sendReceive(double bytes, int distance) {
        boolean sameNode = distance < cluster.devicesPerNode();
        return sameNode ? cluster.intraNodeLatency() + bytes / (efficiency * cluster.intraNodeBandwidth())
                : cluster.interNodeLatency() + bytes / (efficiency * cluster.interNodeBandwidth());
    }

    /** Members per node of a group of n ranks at {@code stride}; 1 when each member sits on its own node. */
    int membersPerNode(int n, int stride) {
        return Math.min(n, Math.max(1, cluster.devicesPerNode() / stride));
    }

    private double ringAllReduce(double bytes, int n, double bandwidth, double latency) {
        return 2 * ring(bytes, n, bandwidth, latency);
    }

    private double ring(double bytes, int n, double bandwidth, double latency) {
        if (n <= 1) return 0;
        return (n - 1.0) / n * bytes / (efficiency * bandwidth) + (n - 1) * latency;
    }
}
