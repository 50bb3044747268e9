package dev.shardwise.core.kernels;

import org.bytedeco.javacpp.Loader;

import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.SymbolLookup;
import java.lang.foreign.ValueLayout;
import java.lang.invoke.MethodHandle;
import java.nio.file.Path;
import java.util.Map;

/**
 * OpenBLAS's {@code cblas_sgemm}, called through the FFM API on the library shipped in the Maven artifact
 * {@code org.bytedeco:openblas} (javacpp's {@link Loader} extracts and loads it; we then look its symbols up
 * and call them with {@code invokeExact}, passing the tensors' native addresses, so nothing is copied).
 *
 * <p>Pointers are passed as {@code long} addresses (identical to {@code float*} in the x86-64 and AArch64 C
 * calling conventions), so a call allocates no slice objects. A downcall costs well under a microsecond;
 * OpenBLAS's own setup for a 1×1×1 product is about 0.6 µs.
 *
 * <p>Threads: {@link #sgemmOnPool} (what {@link GemmImpl#OPENBLAS} and AUTO use) sets OpenBLAS to one thread and
 * calls it from each thread of the compute pool on its own block of C. We chose that over OpenBLAS's own
 * threading because kernels must take their threads from the pool (ranks as threads each bind a pool with
 * their share of the cores), because OpenBLAS's threads spin for about 0.1 s after each call and halved the
 * speed of a Vector kernel run right after (measured: 90 vs 190 GFLOP/s), and because it measured as fast
 * (0.96–1.0× in {@code bench gemm}). {@link #setThreads} changes a process-wide OpenBLAS setting, so an
 * {@link GemmImpl#OPENBLAS_THREADED} call running at the same time as a pool call on another thread may
 * briefly run the latter multi-threaded (correct, but oversubscribed); that mode is for benchmarks.
 * The single instance is created on first use by {@link #instance()}.
 */
final class OpenBlas {
    static final int ROW_MAJOR = 101;
    static final int NO_TRANS = 111;
    static final int TRANS = 112;

    private final MethodHandle sgemm;
    private final MethodHandle setNumThreads;
    private final MethodHandle getNumThreads;
    private final String config;

    private OpenBlas(SymbolLookup lib) throws Throwable {
        Linker linker = Linker.nativeLinker();
        ValueLayout.OfInt i = ValueLayout.JAVA_INT;
        ValueLayout.OfFloat f = ValueLayout.JAVA_FLOAT;
        ValueLayout.OfLong p = ValueLayout.JAVA_LONG;
        sgemm = linker.downcallHandle(find(lib, "cblas_sgemm"),
                FunctionDescriptor.ofVoid(i, i, i, i, i, i, f, p, i, p, i, f, p, i));
        setNumThreads = linker.downcallHandle(find(lib, "openblas_set_num_threads"), FunctionDescriptor.ofVoid(i));
        getNumThreads = linker.downcallHandle(find(lib, "openblas_get_num_threads"), FunctionDescriptor.of(i));
        MethodHandle getConfig = linker.downcallHandle(find(lib, "openblas_get_config"),
                FunctionDescriptor.of(ValueLayout.ADDRESS));
        MethodHandle getCore = linker.downcallHandle(find(lib, "openblas_get_corename"),
                FunctionDescriptor.of(ValueLayout.ADDRESS));
        config = ((MemorySegment) getConfig.invokeExact()).reinterpret(256).getString(0)
                + ", kernels for " + ((MemorySegment) getCore.invokeExact()).reinterpret(64).getString(0);
    }

    private static MemorySegment find(SymbolLookup lib, String name) {
        return lib.find(name).orElseThrow(() -> new UnsatisfiedLinkError("OpenBLAS library has no symbol " + name));
    }

    /** Loads once; holds either the binding or the reason it could not load. */
    private static final class Holder {
        static final OpenBlas INSTANCE;
        static final String FAILURE;

        static {
            OpenBlas instance = null;
            String failure = null;
            try {
                Loader.load(org.bytedeco.openblas.global.openblas_nolapack.class);
                String path = null;
                for (Map.Entry<String, String> e : Loader.getLoadedLibraries().entrySet()) {
                    if (e.getKey().startsWith("openblas_nolapack@") || e.getKey().startsWith("openblas@")) {
                        path = e.getValue();
                    }
                }
                if (path == null) throw new UnsatisfiedLinkError("javacpp loaded no libopenblas: " + Loader.getLoadedLibraries());
                instance = new OpenBlas(SymbolLookup.libraryLookup(Path.of(path), Arena.global()));
            } catch (Throwable e) {
                failure = e.toString();
                System.err.println("shardwise: OpenBLAS could not be loaded (" + failure
                        + "); GEMM uses the Vector API kernel only");
            }
            INSTANCE = instance;
            FAILURE = failure;
        }
    }

    /** The binding, or null when OpenBLAS could not be loaded (see {@link #loadFailure()}). */
    static OpenBlas instance() {
        return Holder.INSTANCE;
    }

    /** Why OpenBLAS could not be loaded, or null when it loaded. */
    static String loadFailure() {
        return Holder.FAILURE;
    }

    /** OpenBLAS's build configuration and the kernel set it picked for this CPU. */
    String config() {
        return config;
    }

    /** Sets OpenBLAS's thread count (process-wide), if it differs from the current one. */
    void setThreads(int threads) {
        try {
            if ((int) getNumThreads.invokeExact() != threads) setNumThreads.invokeExact(threads);
        } catch (Throwable e) {
            throw new IllegalStateException("openblas_set_num_threads(" + threads + ") failed", e);
        }
    }

    /**
     * Row-major {@code cblas_sgemm} split into one block of C per thread of {@code pool}, each computed by
     * single-threaded OpenBLAS on that pool thread (so OpenBLAS starts no threads of its own). C is cut along
     * N when it is at least as wide as tall, else along M; blocks are multiples of 16 columns or 8 rows.
     */
    void sgemmOnPool(dev.shardwise.core.exec.ComputePool pool, boolean transA, boolean transB, int m, int n, int k,
                     float alpha, long a, int lda, long b, int ldb, float beta, long c, int ldc) {
        setThreads(1);
        int threads = pool.threads();
        boolean splitN = n >= m;
        int extent = splitN ? n : m, unit = splitN ? 16 : 8;
        int units = (extent + unit - 1) / unit;
        int tasks = Math.min(threads, units);
        if (tasks <= 1) {
            sgemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
            return;
        }
        long fb = Float.BYTES;
        pool.parallelFor(tasks, t -> {
            int lo = (int) ((long) units * t / tasks) * unit;
            int hi = Math.min(extent, (int) ((long) units * (t + 1) / tasks) * unit);
            if (hi <= lo) return;
            if (splitN) {
                long bj = transB ? b + lo * (long) ldb * fb : b + lo * fb;
                sgemm(transA, transB, m, hi - lo, k, alpha, a, lda, bj, ldb, beta, c + lo * fb, ldc);
            } else {
                long ai = transA ? a + lo * fb : a + lo * (long) lda * fb;
                sgemm(transA, transB, hi - lo, n, k, alpha, ai, lda, b, ldb, beta, c + lo * (long) ldc * fb, ldc);
            }
        });
    }

    /**
     * Row-major {@code cblas_sgemm}; addresses are native addresses of the first elements, leading dimensions
     * in elements.
     */
    void sgemm(boolean transA, boolean transB, int m, int n, int k, float alpha, long a, int lda,
               long b, int ldb, float beta, long c, int ldc) {
        try {
            sgemm.invokeExact(ROW_MAJOR, transA ? TRANS : NO_TRANS, transB ? TRANS : NO_TRANS, m, n, k,
                    alpha, a, lda, b, ldb, beta, c, ldc);
        } catch (Throwable e) {
            throw new IllegalStateException("cblas_sgemm failed", e);
        }
    }
}
