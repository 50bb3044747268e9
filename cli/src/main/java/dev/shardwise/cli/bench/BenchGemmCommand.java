package dev.shardwise.cli.bench;

import dev.shardwise.core.exec.ComputePool;
import dev.shardwise.core.kernels.Bf16Convert;
import dev.shardwise.core.kernels.Gemm;
import dev.shardwise.core.kernels.GemmImpl;
import dev.shardwise.core.kernels.onednn.Bf16Matmul;
import dev.shardwise.core.kernels.onednn.OneDnn;
import dev.shardwise.core.machine.CpuModel;
import dev.shardwise.core.machine.CpuPeak;
import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.SplittableRandom;

/**
 * {@code shardwise bench gemm}: our GEMM beside OpenBLAS sgemm on GPT-2-small training shapes.
 *
 * <p>Each case is a linear layer {@code C -> OC} on M rows (tokens), in the three products training runs:
 * forward NT {@code out [M, OC] = x [M, C] · W [OC, C]ᵀ}, backward-data NN {@code dx [M, C] = dout [M, OC] · W},
 * backward-weight TN {@code dW [OC, C] = dout [M, OC]ᵀ · x [M, C]}. For each case it times {@link GemmImpl#VECTOR},
 * {@link GemmImpl#AUTO} and the peer {@link GemmImpl#OPENBLAS_THREADED} (OpenBLAS as it runs out of the box,
 * with its own threads, as many as the compute pool has) in the same run and prints two rows: AUTO against
 * OpenBLAS (the note says where AUTO routed) and the Vector kernel alone against OpenBLAS.
 *
 * <p>With {@code --bf16} each round also times {@link Bf16Matmul} (oneDNN matmul, A and B in bf16, fp32
 * accumulation and output) on bf16 copies of the same operands and prints a third row against the same fp32
 * OpenBLAS figure. The copies are made once, before timing: the row measures the product, not the conversion
 * (weights would be kept in bf16; activations would be converted once per layer). The header names the CPU and
 * whether it has avx512_bf16 / amx_bf16, which decide oneDNN's bf16 speed.
 */
@Command(name = "gemm", mixinStandardHelpOptions = true,
        description = "GEMM GFLOP/s on GPT-2-small shapes beside OpenBLAS sgemm in the same run.")
public final class BenchGemmCommand implements Runnable {
    @Option(names = "--json", description = "One JSON object per case instead of a table.")
    boolean json;

    @Option(names = "--quick", description = "A subset that runs in about 20 seconds.")
    boolean quick;

    @Option(names = "--bf16", description = "Also time bf16 products on oneDNN (libdnnl2) beside the fp32 ones.")
    boolean bf16;

    /** GPT-2 small's linear layers, C -> OC. */
    private record Layer(String name, int in, int out) { }

    private static final List<Layer> LAYERS = List.of(
            new Layer("qkv", 768, 2304), new Layer("attn-proj", 768, 768), new Layer("fc", 768, 3072),
            new Layer("fc-proj", 3072, 768), new Layer("lm-head", 768, 50257));

    /** One product: c [m, n] = op(a) · op(b) with a, b stored as the transposes say. */
    private record Case(String name, int m, int n, int k, boolean transA, boolean transB) {
        double flops() { return 2.0 * m * n * k; }
    }

    /**
     * OpenBLAS keeps its own threads spinning for about 2^28 cycles (0.1 s) after a call; a kernel timed right
     * then would share its cores with them, so each round pauses this long first, and the OpenBLAS peer runs
     * last in the round (ms).
     */
    private static final long OPENBLAS_SPIN_PAUSE_MS = 150;

    /** Each timed sample runs the product back to back for at least this long (seconds). */
    private static final double MIN_SAMPLE_SECONDS = 0.05;

    @Override
    public void run() {
        BenchOutput out = new BenchOutput(System.out, json);
        ComputePool pool = ComputePool.current();
        CpuPeak peak = CpuPeak.measure();
        out.info(CpuModel.read().describe());
        out.info(peak.describe());
        out.info("threads: " + pool.threads() + "; " + Gemm.openBlasDescription());
        if (!Gemm.openBlasAvailable()) {
            throw new IllegalStateException("bench gemm needs OpenBLAS as its peer, and it could not be loaded: "
                    + Gemm.openBlasDescription());
        }
        if (bf16 && !OneDnn.isAvailable()) {
            throw new IllegalStateException("bench gemm --bf16 needs oneDNN: " + OneDnn.unavailableReason());
        }
        if (bf16) out.info(OneDnn.description());
        List<Case> cases = cases(quick);
        MemoryPool memory = MemoryPool.unlimited("bench gemm");
        try (Bf16Matmul onednn = bf16 ? new Bf16Matmul() : null) {
            for (Case c : cases) measure(out, memory, peak, c, onednn);
        }
    }

    private static List<Case> cases(boolean quick) {
        List<Case> cases = new ArrayList<>();
        cases.add(new Case("sanity NN 2048x2048x2048", 2048, 2048, 2048, false, false));
        int[] rows = quick ? new int[]{1024} : new int[]{1024, 4096};
        for (int m : rows) {
            for (Layer l : LAYERS) {
                if (quick && !(l.name().equals("qkv") || l.name().equals("fc-proj"))) continue;
                String shape = String.format(Locale.ROOT, "M=%d %s %d->%d", m, l.name(), l.in(), l.out());
                cases.add(new Case(shape + " fwd NT", m, l.out(), l.in(), false, true));
                cases.add(new Case(shape + " dx NN", m, l.in(), l.out(), false, false));
                cases.add(new Case(shape + " dW TN", l.out(), l.in(), m, true, false));
            }
        }
        return cases;
    }

    /** @param onednn the bf16 kernel to time beside the fp32 ones, or null */
    private static void measure(BenchOutput out, MemoryPool memory, CpuPeak peak, Case c, Bf16Matmul onednn) {
        int ar = c.transA() ? c.k() : c.m(), ac = c.transA() ? c.m() : c.k();
        int br = c.transB() ? c.n() : c.k(), bc = c.transB() ? c.k() : c.n();
        try (Tensor a = random(memory, ar, ac, 1); Tensor b = random(memory, br, bc, 2);
             Tensor cc = Tensor.allocate(memory, MemoryCategory.ACTIVATIONS, DType.F32, c.m(), c.n());
             Tensor aHalf = onednn != null ? Tensor.allocate(memory, MemoryCategory.ACTIVATIONS, DType.BF16, ar, ac) : null;
             Tensor bHalf = onednn != null ? Tensor.allocate(memory, MemoryCategory.ACTIVATIONS, DType.BF16, br, bc) : null) {
            // Order within a round: OpenBLAS last (its threads spin after a call; see OPENBLAS_SPIN_PAUSE_MS).
            GemmImpl[] impls = {GemmImpl.VECTOR, GemmImpl.AUTO, GemmImpl.OPENBLAS_THREADED};
            int kernels = impls.length + (onednn != null ? 1 : 0);
            Runnable[] bodies = new Runnable[kernels];
            int[] index = new int[kernels];
            int slot = 0;
            for (int i = 0; i < impls.length; i++) {
                GemmImpl impl = impls[i];
                if (impl == GemmImpl.OPENBLAS_THREADED && onednn != null) {
                    Bf16Convert.fromFloat(aHalf, a);
                    Bf16Convert.fromFloat(bHalf, b);
                    index[slot] = impls.length;
                    bodies[slot++] = () -> onednn.matmul(cc, aHalf, bHalf, c.transA(), c.transB(), 1f, 0f);
                }
                index[slot] = i;
                bodies[slot++] = () -> Gemm.matmul(cc, a, b, c.transA(), c.transB(), 1f, 0f, impl);
            }
            // Big cases (a lm-head product is 79-316 GFLOP) get fewer rounds so the full run stays near 3 minutes.
            boolean big = c.flops() > 50e9;
            int rounds = big ? 3 : 5;
            // Small cases warm up (JIT, OpenBLAS buffers) and size their samples; big ones are warm from the
            // cases before them and take one call per sample.
            int calls = 1;
            if (!big) {
                double callSeconds = Double.MAX_VALUE;
                for (Runnable body : bodies) {
                    for (int w = 0; w < 2; w++) callSeconds = Math.min(callSeconds, seconds(body, 1));
                }
                calls = (int) Math.max(1, Math.ceil(MIN_SAMPLE_SECONDS / callSeconds));
            }
            // Rounds interleave the implementations, so load from elsewhere on the machine hits all alike.
            double[][] samples = new double[kernels][rounds];
            for (int r = 0; r < rounds; r++) {
                sleep(OPENBLAS_SPIN_PAUSE_MS);
                for (int i = 0; i < kernels; i++) samples[index[i]][r] = seconds(bodies[i], calls);
            }
            double vector = c.flops() / median(samples[0]) / 1e9;
            double auto = c.flops() / median(samples[1]) / 1e9;
            double blas = c.flops() / median(samples[2]) / 1e9;
            double peakGflops = peak.measuredFlops() / 1e9;
            GemmImpl routed = Gemm.route(c.m(), c.n(), c.k(), c.transA(), c.transB());
            String note = "auto->" + routed.name().toLowerCase(Locale.ROOT);
            out.row(new BenchRow("gemm", c.name(), auto, "GFLOP/s", "openblas", blas, auto / peakGflops, note));
            out.row(new BenchRow("gemm", c.name() + " vector", vector, "GFLOP/s", "openblas", blas,
                    vector / peakGflops, "vector kernel alone"));
            if (onednn != null) {
                double half = c.flops() / median(samples[impls.length]) / 1e9;
                // The fraction is of the fp32 peak: bf16 products can exceed it (AMX; vdpbf16ps does 2 per fp32 lane).
                out.row(new BenchRow("gemm", c.name() + " bf16", half, "GFLOP/s", "openblas", blas, half / peakGflops,
                        "bf16 oneDNN " + String.join(",", onednn.implementations(c.m(), c.n(), c.k()))
                                + "; fraction of fp32 peak"));
            }
        }
    }

    /** Seconds per call, over {@code calls} back-to-back calls. */
    private static double seconds(Runnable body, int calls) {
        long start = System.nanoTime();
        for (int i = 0; i < calls; i++) body.run();
        return (System.nanoTime() - start) / 1e9 / calls;
    }

    private static double median(double[] values) {
        double[] sorted = values.clone();
        Arrays.sort(sorted);
        return sorted[sorted.length / 2];
    }

    /** A [rows, cols] F32 tensor of uniform values in [-1, 1) from {@code seed}. */
    static Tensor random(MemoryPool memory, int rows, int cols, long seed) {
        Tensor t = Tensor.allocate(memory, MemoryCategory.ACTIVATIONS, DType.F32, rows, cols);
        SplittableRandom rnd = new SplittableRandom(seed);
        float[] v = new float[Math.multiplyExact(rows, cols)];
        for (int i = 0; i < v.length; i++) v[i] = (float) (rnd.nextDouble() * 2 - 1);
        // Bulk copy: Tensor.copyFrom goes element by element, too slow for the 38M-element lm-head weight.
        MemorySegment.copy(v, 0, t.segment(), ValueLayout.JAVA_FLOAT, t.byteOffset(), v.length);
        return t;
    }

    private static void sleep(long ms) {
        try {
            Thread.sleep(ms);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException("bench gemm interrupted", e);
        }
    }
}
