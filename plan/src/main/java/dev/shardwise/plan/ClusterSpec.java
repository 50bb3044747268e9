package dev.shardwise.plan;

/**
 * Identical nodes of identical devices: fast links inside a node (NVLink/NVSwitch), a network between nodes
 * (InfiniBand). Bandwidths are per GPU and per direction; latencies are per message (alpha of the alpha-beta model).
 *
 * @param name               preset or file name
 * @param device             the device every slot holds
 * @param devicesPerNode     GPUs per node, at least 1
 * @param nodes              nodes, at least 1
 * @param intraNodeBandwidth bytes/s per GPU and direction inside a node
 * @param intraNodeLatency   seconds per message inside a node
 * @param interNodeBandwidth bytes/s per GPU and direction between nodes (its share of the node's NICs)
 * @param interNodeLatency   seconds per message between nodes
 */
public record ClusterSpec(String name, DeviceSpec device, int devicesPerNode, int nodes, double intraNodeBandwidth,
                          double intraNodeLatency, double interNodeBandwidth, double interNodeLatency) {
    /** @throws IllegalArgumentException naming the field if a size is below 1 or a rate not positive */
    public ClusterSpec {
        if (devicesPerNode < 1) throw new IllegalArgumentException("cluster " + name + ": devices_per_node=" + devicesPerNode + " must be at least 1");
        if (nodes < 1) throw new IllegalArgumentException("cluster " + name + ": nodes=" + nodes + " must be at least 1");
        Specs.positive("cluster " + name, "intra_node_gb_per_s", intraNodeBandwidth);
        Specs.positive("cluster " + name, "inter_node_gb_per_s", interNodeBandwidth);
        if (intraNodeLatency < 0 || interNodeLatency < 0) {
            throw new IllegalArgumentException("cluster " + name + ": latencies must not be negative");
        }
    }

    /** A cluster of {@code nodes} nodes of {@code device}, with the device's default links and latencies 5 and 10 µs. */
    public static ClusterSpec of(String name, DeviceSpec device, int devicesPerNode, int nodes) {
        return new ClusterSpec(name, device, devicesPerNode, nodes, device.nvlinkBandwidth(), 5e-6, device.networkBandwidth(), 10e-6);
    }

    /** Total devices: devicesPerNode · nodes. */
    public int devices() {
        return Math.multiplyExact(devicesPerNode, nodes);
    }

    /** The same cluster with {@code nodes} nodes (for a run that used part of it). */
    public ClusterSpec withNodes(int nodes) {
        return new ClusterSpec(name, device, devicesPerNode, nodes, intraNodeBandwidth, intraNodeLatency, interNodeBandwidth, interNodeLatency);
    }
}
