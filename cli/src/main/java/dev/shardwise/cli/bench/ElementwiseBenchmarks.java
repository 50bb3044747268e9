package dev.shardwise.cli.bench;

import dev.shardwise.core.exec.ComputePool;
import dev.shardwise.core.kernels.AdamW;
import dev.shardwise.core.kernels.Bf16Convert;
import dev.shardwise.core.kernels.CrossEntropy;
import dev.shardwise.core.kernels.Gelu;
import dev.shardwise.core.kernels.LayerNorm;
import dev.shardwise.core.kernels.Softmax;
import dev.shardwise.core.machine.CpuPeak;
import dev.shardwise.core.memory.MemoryCategory;
import dev.shardwise.core.memory.MemoryPool;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.SplittableRandom;
import java.util.function.Predicate;

/**
 * Memory-bound kernel cases of {@code bench kernels} (cross-entropy, layer norm, GELU, softmax, AdamW, bf16
 * conversion) at GPT-2-small shapes, each in GB/s beside a plain memory copy measured in the same run.
 *
 * <p>Bytes are what each kernel must move at least (every input read once, every output written once;
 * an accumulated output counts as read and written), stated per case in the note. The copy peer is
 * {@code MemorySegment.copy} of 256 MiB on 1 or 2 threads, whichever is faster, counting read + write bytes.
 * It is measured once up front (its own row) and again inside every case, alternating copy and kernel
 * call by call, so each ratio compares two medians taken under the same load (the machine is shared; the
 * load average is printed first). {@code peak} is not used: these kernels are bounded by memory, not flops.
 * Kernels run on {@link ComputePool#current()}. About 30 s in all; {@code wanted} picks groups by name
 * ({@link BenchKernelsCommand#GROUPS}).
 */
final class ElementwiseBenchmarks {
    private ElementwiseBenchmarks() { }

    private static final String BENCH = "kernels";
    private static final long COPY_BYTES = 256L << 20;

    static void run(BenchOutput out, CpuPeak peak, Predicate<String> wanted) {
        out.info("load average (other processes compete for the cores): " + loadAverage());
        MemoryPool pool = MemoryPool.unlimited("bench");
        List<Tensor> live = new ArrayList<>();
        try (var srcMem = pool.allocate(MemoryCategory.BUFFERS, COPY_BYTES);
             var dstMem = pool.allocate(MemoryCategory.BUFFERS, COPY_BYTES)) {
            MemorySegment src = srcMem.segment(), dst = dstMem.segment();
            src.fill((byte) 1);
            dst.fill((byte) 2);
            ComputePool cp = ComputePool.current();
            Runnable copy1 = () -> MemorySegment.copy(src, 0, dst, 0, COPY_BYTES);
            Runnable copy2 = () -> cp.parallelFor(2, t -> {
                long half = COPY_BYTES / 2;
                MemorySegment.copy(src, t * half, dst, t * half, half);
            });
            double one = Measure.medianSeconds(copy1, 2, 7, 0.5);
            double two = cp.threads() < 2 ? Double.POSITIVE_INFINITY : Measure.medianSeconds(copy2, 2, 7, 0.5);
            out.info(String.format(Locale.ROOT, "memory copy 256 MiB: 1 thread %.2f GB/s, 2 threads %.2f GB/s (read+write bytes)",
                    2 * COPY_BYTES / one / 1e9, 2 * COPY_BYTES / two / 1e9));
            double copyBytes = 2.0 * COPY_BYTES;
            out.row(BenchRow.alone(BENCH, "memory copy 256 MiB (peer)", copyBytes / Math.min(one, two) / 1e9, "GB/s", Double.NaN,
                    "MemorySegment.copy on " + (two < one ? 2 : 1) + " thread(s), read+write bytes"));
            Case bench = new Case(out, two < one ? copy2 : copy1, copyBytes);

            if (wanted.test("cross-entropy")) {
                for (int n : new int[]{4 * 256, 8 * 1024}) {
                    int v = 50257;
                    Tensor logits = alloc(pool, live, DType.F32, n, v);
                    fillRandom(logits, 1, 2f);
                    Tensor targets = alloc(pool, live, DType.I32, n);
                    for (int i = 0; i < n; i++) targets.set((i * 7919) % v, i);
                    Tensor losses = alloc(pool, live, DType.F32, n);
                    // in place: after the first call the "logits" are gradients, which is as good an input for timing
                    bench.measure("cross-entropy fwd+bwd N=" + n + " V=" + v, 8.0 * n * v,
                            () -> CrossEntropy.forwardBackward(losses, logits, logits, targets, 1.0 / n),
                            n > 2048 ? 2.0 : 1.5, "8 B/logit: read logits, write dlogits in place");
                    free(live);
                }
            }

            if (wanted.test("layernorm")) {
                int n = 8192, c = 768;
                Tensor x = alloc(pool, live, DType.F32, n, c), o = alloc(pool, live, DType.F32, n, c);
                Tensor dx = alloc(pool, live, DType.F32, n, c), dout = alloc(pool, live, DType.F32, n, c);
                Tensor mean = alloc(pool, live, DType.F32, n), rstd = alloc(pool, live, DType.F32, n);
                Tensor w = alloc(pool, live, DType.F32, c), b = alloc(pool, live, DType.F32, c);
                Tensor dw = alloc(pool, live, DType.F32, c), db = alloc(pool, live, DType.F32, c);
                fillRandom(x, 2, 1f);
                fillRandom(dout, 3, 1f);
                fillRandom(w, 4, 1f);
                bench.measure("layernorm fwd [" + n + ", " + c + "]", 8.0 * n * c,
                        () -> LayerNorm.forward(o, mean, rstd, x, w, b, LayerNorm.GPT2_EPS), 0.4,
                        "8 B/elem: read x, write out");
                bench.measure("layernorm bwd [" + n + ", " + c + "]", 16.0 * n * c,
                        () -> LayerNorm.backward(dx, dw, db, dout, x, mean, rstd, w), 0.4,
                        "16 B/elem: read dout, x, dx; write dx");
                free(live);
            }

            if (wanted.test("gelu")) {
                int n = 8192, c = 3072;
                Tensor x = alloc(pool, live, DType.F32, n, c), o = alloc(pool, live, DType.F32, n, c);
                Tensor dx = alloc(pool, live, DType.F32, n, c), dout = alloc(pool, live, DType.F32, n, c);
                fillRandom(x, 5, 2f);
                fillRandom(dout, 6, 1f);
                bench.measure("gelu fwd [" + n + ", " + c + "]", 8.0 * n * c,
                        () -> Gelu.forward(o, x), 0.4,
                        "8 B/elem: read x, write out");
                bench.measure("gelu bwd [" + n + ", " + c + "]", 16.0 * n * c,
                        () -> Gelu.backward(dx, dout, x), 0.4,
                        "16 B/elem: read dout, x, dx; write dx");
                free(live);
            }

            if (wanted.test("softmax")) {
                int n = 8192, c = 1024;
                Tensor x = alloc(pool, live, DType.F32, n, c), y = alloc(pool, live, DType.F32, n, c);
                Tensor dx = alloc(pool, live, DType.F32, n, c), dy = alloc(pool, live, DType.F32, n, c);
                fillRandom(x, 7, 3f);
                fillRandom(dy, 8, 1f);
                bench.measure("softmax fwd [" + n + ", " + c + "]", 8.0 * n * c,
                        () -> Softmax.forward(y, x), 0.4,
                        "8 B/elem: read x, write y");
                bench.measure("softmax bwd [" + n + ", " + c + "]", 16.0 * n * c,
                        () -> Softmax.backward(dx, dy, y), 0.4,
                        "16 B/elem: read dy, y, dx; write dx");
                free(live);
            }

            if (wanted.test("adamw")) {
                int n = 124_439_808;   // GPT-2 small (124M) parameter count
                Tensor p = alloc(pool, live, DType.F32, n), g = alloc(pool, live, DType.F32, n);
                Tensor m = alloc(pool, live, DType.F32, n), v = alloc(pool, live, DType.F32, n);
                fillRandom(p, 9, 0.02f);
                fillRandom(g, 10, 1e-3f);
                long[] step = {0};
                bench.measure("adamw 124M params", 28.0 * n,
                        () -> AdamW.step(p, g, m, v, 6e-4, 0.9, 0.95, 1e-8, 0.1, ++step[0]), 1.0,
                        "28 B/param: read p, g, m, v; write p, m, v");
                free(live);
            }

            if (wanted.test("bf16")) {
                int n = 64 << 20;
                Tensor f = alloc(pool, live, DType.F32, n), h = alloc(pool, live, DType.BF16, n);
                fillRandom(f, 11, 1f);
                bench.measure("bf16 <- f32 64M elements", 6.0 * n,
                        () -> Bf16Convert.fromFloat(h, f), 0.4,
                        "6 B/elem: read f32, write bf16");
                bench.measure("f32 <- bf16 64M elements", 6.0 * n,
                        () -> Bf16Convert.toFloat(f, h), 0.4,
                        "6 B/elem: read bf16, write f32");
                free(live);
            }
        } finally {
            free(live);
        }
    }

    /** Measures kernels against the copy peer, alternating the two call by call. */
    private record Case(BenchOutput out, Runnable copy, double copyBytes) {
        void measure(String name, double bytes, Runnable kernel, double seconds, String note) {
            long warm = System.nanoTime();                       // warm up (JIT): 3 calls and at least 0.3 s
            for (int i = 0; i < 3 || System.nanoTime() - warm < 300_000_000L; i++) kernel.run();
            copy.run();
            List<Double> k = new ArrayList<>(), p = new ArrayList<>();
            double spent = 0;
            while (k.size() < 5 || spent < seconds) {
                long t0 = System.nanoTime();
                copy.run();
                long t1 = System.nanoTime();
                kernel.run();
                long t2 = System.nanoTime();
                p.add((t1 - t0) / 1e9);
                k.add((t2 - t1) / 1e9);
                spent += (t2 - t0) / 1e9;
            }
            double ks = median(k), ps = median(p);
            out.row(new BenchRow(BENCH, name, bytes / ks / 1e9, "GB/s", "copy", copyBytes / ps / 1e9, Double.NaN,
                    String.format(Locale.ROOT, "%.2f ms (median of %d); %s", ks * 1e3, k.size(), note)));
        }

        private static double median(List<Double> values) {
            double[] v = values.stream().mapToDouble(Double::doubleValue).sorted().toArray();
            return v[v.length / 2];
        }
    }

    private static String loadAverage() {
        try {
            return java.nio.file.Files.readString(java.nio.file.Path.of("/proc/loadavg")).trim();
        } catch (java.io.IOException | RuntimeException e) {
            return "unknown";
        }
    }

    private static Tensor alloc(MemoryPool pool, List<Tensor> live, DType dtype, int... shape) {
        Tensor t = Tensor.allocate(pool, MemoryCategory.BUFFERS, dtype, shape);
        live.add(t);
        return t;
    }

    private static void free(List<Tensor> live) {
        for (Tensor t : live) t.close();
        live.clear();
    }

    /** Uniform values in [-scale, scale), written straight into the segment (Tensor.set is too slow for 100M elements). */
    private static void fillRandom(Tensor t, long seed, float scale) {
        SplittableRandom r = new SplittableRandom(seed);
        MemorySegment s = t.segment();
        long off = t.byteOffset();
        for (long i = 0, n = t.numel(); i < n; i++) {
            s.set(ValueLayout.JAVA_FLOAT, off + 4 * i, (float) ((r.nextDouble() * 2 - 1) * scale));
        }
    }
}
