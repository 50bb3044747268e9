package dev.shardwise.core.tensor;

/**
 * Element types. F32 is the compute type; BF16 is a storage type (converted to F32 for compute);
 * F64 runs the reference kernels that finite-difference gradient checks need; I32 holds token ids.
 */
public enum DType {
    F32(4), BF16(2), F64(8), I32(4);

    private final int byteSize;

    DType(int byteSize) { this.byteSize = byteSize; }

    /** Bytes per element. */
    public int byteSize() { return byteSize; }

    /** Lower-case name as used in configs and reports ({@code f32}). */
    public String label() { return name().toLowerCase(java.util.Locale.ROOT); }
}
