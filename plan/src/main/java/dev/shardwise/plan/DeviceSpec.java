package dev.shardwise.plan;

/**
 * One accelerator as the cost model sees it: dense peak rates, memory and links. Presets live in
 * {@code devices.yaml} (datasheet numbers, cited there).
 *
 * @param name              preset name, e.g. {@code a100-80gb}
 * @param flops16           dense bf16/fp16 tensor-core peak, FLOP/s
 * @param flops32           fp32 (non-tensor-core) peak, FLOP/s
 * @param memoryBytes       device memory, bytes
 * @param memoryBandwidth   device memory bandwidth, bytes/s
 * @param nvlinkBandwidth   default intra-node bandwidth per GPU and direction, bytes/s
 * @param networkBandwidth  default inter-node bandwidth per GPU and direction (its share of the node's NICs), bytes/s
 */
public record DeviceSpec(String name, double flops16, double flops32, double memoryBytes, double memoryBandwidth,
                         double nvlinkBandwidth, double networkBandwidth) {
    /** @throws IllegalArgumentException naming the field if a rate or size is not positive */
    public DeviceSpec {
        Specs.positive("device " + name, "flops16_tflops", flops16);
        Specs.positive("device " + name, "flops32_tflops", flops32);
        Specs.positive("device " + name, "memory_gb", memoryBytes);
        Specs.positive("device " + name, "memory_bandwidth_gb_per_s", memoryBandwidth);
        Specs.positive("device " + name, "nvlink_gb_per_s", nvlinkBandwidth);
        Specs.positive("device " + name, "network_gb_per_s", networkBandwidth);
    }
}
