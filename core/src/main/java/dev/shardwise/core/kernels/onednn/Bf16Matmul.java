package dev.shardwise.core.kernels.onednn;

import dev.shardwise.core.exec.ComputePool;
import dev.shardwise.core.kernels.Gemm;
import dev.shardwise.core.tensor.DType;
import dev.shardwise.core.tensor.Tensor;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeSet;

import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_FLOAT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

/**
 * Mixed-precision matrix multiply on oneDNN's matmul primitive: {@code C = alpha·op(A)·op(B) + beta·C} with A and
 * B in bfloat16, products accumulated and C stored in fp32 (on CPUs with AVX512_BF16 oneDNN uses
 * {@code vdpbf16ps}; with AMX, tile multiplies; otherwise a slower reference path, same contract).
 *
 * <p>Shapes as {@link dev.shardwise.core.kernels.Gemm#matmul}: {@code op(A) [M, K]}, {@code op(B) [K, N]},
 * {@code c [M, N]}; A is stored {@code [M, K]}, or {@code [K, M]} when {@code transA}; B is stored {@code [K, N]},
 * or {@code [N, K]} when {@code transB}. {@code a} and {@code b} are BF16, {@code c} is F32; all 2-D, off-heap,
 * with unit inner stride (rows may be padded). {@code beta == 0} ignores C's old contents. C must not overlap A or B.
 *
 * <p>Each distinct (M, N, K, transposes, row strides, alpha, beta, thread count) gets its own oneDNN primitive,
 * created on first use and kept in this object's cache (at most {@link #MAX_CACHED} of them, least recently used
 * dropped first), because creating a matmul primitive costs far more than running a small one. alpha and beta are
 * baked into the primitive (output scale and a sum post-op) rather than passed at run time; training uses few
 * distinct values (1 and 0 or 1).
 *
 * <p>Threads: the product runs on oneDNN's OpenMP threads, as many as {@link ComputePool#current()} has; the
 * count is set for the calling thread before each call ({@link OneDnn#useThreads}), not process-wide. The pool's
 * own threads stay idle meanwhile. Calls block until C is written and may come from any thread; calls that share a
 * cached primitive run one at a time. Results are deterministic for a fixed thread count and CPU.
 *
 * <p>The caller owns the tensors; this object owns native oneDNN primitives and memory objects and must be
 * {@linkplain #close() closed}.
 */
public final class Bf16Matmul implements AutoCloseable {
    /** Cached primitives per instance: a GPT training step uses a few dozen distinct products. */
    public static final int MAX_CACHED = 256;

    private final OneDnn lib;
    private final int maxCached;
    private final Map<Key, Plan> cache = new LinkedHashMap<>(16, 0.75f, true);
    private boolean closed;

    /**
     * Binds to oneDNN (loading it if needed).
     *
     * @throws UnsupportedOperationException if oneDNN is not installed; the message names {@code apt-get install libdnnl2}
     */
    public Bf16Matmul() {
        this(MAX_CACHED);
    }

    /** As {@link #Bf16Matmul()} with room for {@code maxCached} primitives (tests of eviction). */
    Bf16Matmul(int maxCached) {
        if (maxCached < 1) throw new IllegalArgumentException("maxCached must be >= 1, got " + maxCached);
        lib = OneDnn.instance();
        this.maxCached = maxCached;
    }

    /** One product's primitive key. */
    private record Key(int m, int n, int k, boolean transA, boolean transB, long lda, long ldb, long ldc,
                       float alpha, float beta, int threads) { }

    /**
     * {@code c (f32) = alpha·op(a (bf16))·op(b (bf16)) + beta·c}.
     *
     * @throws IllegalArgumentException if ranks, shapes, dtypes, strides or memory kinds do not fit (the message
     *                                  names the argument, its shape and what was expected)
     * @throws IllegalStateException    if a oneDNN call fails (the message names the call) or this object is closed
     */
    public void matmul(Tensor c, Tensor a, Tensor b, boolean transA, boolean transB, float alpha, float beta) {
        check(c, a, b, transA, transB);
        int m = c.dim(0), n = c.dim(1), k = transA ? a.dim(0) : a.dim(1);
        if (m == 0 || n == 0) return;
        if (k == 0 || alpha == 0f) {
            Gemm.scaleOutput(c, beta);
            return;
        }
        int threads = ComputePool.current().threads();
        Key key = new Key(m, n, k, transA, transB, ld(a), ld(b), ld(c), alpha, beta, threads);
        lib.useThreads(threads);
        // A plan evicted from the cache between plan() and its run refuses to run; plan() then makes a new one.
        while (!plan(key).execute(address(a), address(b), address(c))) {
            Thread.onSpinWait();
        }
    }

    /** How many primitives are cached now. */
    public synchronized int cachedPrimitives() {
        return cache.size();
    }

    /** The names of the oneDNN implementations the cached primitives use, e.g. {@code brg:avx512_core_bf16}. */
    public synchronized List<String> implementations() {
        TreeSet<String> names = new TreeSet<>();
        for (Plan p : cache.values()) names.add(p.implementation);
        return new ArrayList<>(names);
    }

    /** The implementation names of the cached primitives for products of this size (any transposes, alpha, beta). */
    public synchronized List<String> implementations(int m, int n, int k) {
        TreeSet<String> names = new TreeSet<>();
        cache.forEach((key, p) -> {
            if (key.m() == m && key.n() == n && key.k() == k) names.add(p.implementation);
        });
        return new ArrayList<>(names);
    }

    /** Destroys the cached primitives. Idempotent; do not call while a product runs. */
    @Override
    public synchronized void close() {
        if (closed) return;
        closed = true;
        for (Plan p : cache.values()) p.close();
        cache.clear();
    }

    private synchronized Plan plan(Key key) {
        if (closed) throw new IllegalStateException("Bf16Matmul is closed");
        Plan p = cache.get(key);
        if (p == null) {
            p = new Plan(lib, key);
            cache.put(key, p);
            if (cache.size() > maxCached) {
                var eldest = cache.entrySet().iterator().next();
                cache.remove(eldest.getKey());
                eldest.getValue().close();
            }
        }
        return p;
    }

    /**
     * One oneDNN matmul primitive with its memory objects (data handles set per call), stream and argument list.
     * {@link #execute} and {@link #close} are synchronized: a plan runs one product at a time.
     */
    private static final class Plan {
        private final OneDnn lib;
        private final Arena arena = Arena.ofShared();
        private final MemorySegment primitive, stream, src, weights, dst, args;
        final String implementation;
        private boolean closed;

        Plan(OneDnn lib, Key key) {
            this.lib = lib;
            MemorySegment prim = MemorySegment.NULL, strm = MemorySegment.NULL;
            MemorySegment s = MemorySegment.NULL, w = MemorySegment.NULL, d = MemorySegment.NULL;
            String impl;
            try (Arena tmp = Arena.ofConfined()) {
                // Plain row-major layouts given by strides; a transposed operand is the stored matrix read with
                // swapped strides: op(A) [M, K] has strides (lda, 1), or (1, lda) when A is stored [K, M].
                MemorySegment srcDesc = memoryDesc(tmp, key.m(), key.k(), OneDnn.DT_BF16,
                        key.transA() ? 1 : key.lda(), key.transA() ? key.lda() : 1);
                MemorySegment weiDesc = memoryDesc(tmp, key.k(), key.n(), OneDnn.DT_BF16,
                        key.transB() ? 1 : key.ldb(), key.transB() ? key.ldb() : 1);
                MemorySegment dstDesc = memoryDesc(tmp, key.m(), key.n(), OneDnn.DT_F32, key.ldc(), 1);
                MemorySegment opDesc = tmp.allocate(OneDnn.DESC_BYTES, 64);
                OneDnn.check((int) lib.matmulDescInit.invokeExact(opDesc, srcDesc, weiDesc, MemorySegment.NULL, dstDesc),
                        "dnnl_matmul_desc_init" + describe(key));

                MemorySegment attr = out(tmp, lib.attrCreate, "dnnl_primitive_attr_create");
                MemorySegment postOps = MemorySegment.NULL;
                MemorySegment pd;
                try {
                    if (key.alpha() != 1f) {
                        MemorySegment scale = tmp.allocateFrom(JAVA_FLOAT, key.alpha());
                        OneDnn.check((int) lib.attrSetOutputScales.invokeExact(attr, 1L, 0, scale),
                                "dnnl_primitive_attr_set_output_scales(alpha=" + key.alpha() + ")");
                    }
                    if (key.beta() != 0f) {
                        // dst = output_scale·(src·weights) + beta·dst: oneDNN's sum post-op
                        postOps = out(tmp, lib.postOpsCreate, "dnnl_post_ops_create");
                        OneDnn.check((int) lib.postOpsAppendSum.invokeExact(postOps, key.beta()),
                                "dnnl_post_ops_append_sum(beta=" + key.beta() + ")");
                        OneDnn.check((int) lib.attrSetPostOps.invokeExact(attr, postOps), "dnnl_primitive_attr_set_post_ops");
                    }
                    MemorySegment pdOut = tmp.allocate(ADDRESS);
                    OneDnn.check((int) lib.primitiveDescCreate.invokeExact(pdOut, opDesc, attr, lib.engine, MemorySegment.NULL),
                            "dnnl_primitive_desc_create(matmul" + describe(key) + ")");
                    pd = pdOut.get(ADDRESS, 0);
                } finally {
                    if (!postOps.equals(MemorySegment.NULL)) { int ignored = (int) lib.postOpsDestroy.invokeExact(postOps); }
                    int ignoredAttr = (int) lib.attrDestroy.invokeExact(attr);
                }
                try {
                    MemorySegment info = tmp.allocate(ADDRESS);
                    OneDnn.check((int) lib.primitiveDescQuery.invokeExact(pd, OneDnn.QUERY_IMPL_INFO_STR, 0, info),
                            "dnnl_primitive_desc_query(impl_info_str)");
                    impl = info.get(ADDRESS, 0).reinterpret(256).getString(0);
                    MemorySegment primOut = tmp.allocate(ADDRESS);
                    OneDnn.check((int) lib.primitiveCreate.invokeExact(primOut, pd), "dnnl_primitive_create(matmul" + describe(key) + ")");
                    prim = primOut.get(ADDRESS, 0);
                } finally {
                    int ignored = (int) lib.primitiveDescDestroy.invokeExact(pd);
                }
                MemorySegment streamOut = tmp.allocate(ADDRESS);
                OneDnn.check((int) lib.streamCreate.invokeExact(streamOut, lib.engine, OneDnn.STREAM_IN_ORDER), "dnnl_stream_create");
                strm = streamOut.get(ADDRESS, 0);
                s = memory(tmp, lib, srcDesc);
                w = memory(tmp, lib, weiDesc);
                d = memory(tmp, lib, dstDesc);
            } catch (Throwable t) {
                destroy(lib, prim, strm, s, w, d);
                arena.close();
                throw OneDnn.rethrow(t, "matmul setup");
            }
            primitive = prim;
            stream = strm;
            src = s;
            weights = w;
            dst = d;
            implementation = impl;
            args = arena.allocate(OneDnn.EXEC_ARG, 3);
            int[] kinds = {OneDnn.ARG_SRC, OneDnn.ARG_WEIGHTS, OneDnn.ARG_DST};
            MemorySegment[] mems = {src, weights, dst};
            for (int i = 0; i < 3; i++) {
                args.set(ValueLayout.JAVA_INT, 16L * i, kinds[i]);
                args.set(ADDRESS, 16L * i + 8, mems[i]);
            }
        }

        /** Runs the product; false (nothing done) when this plan was closed (evicted) first. */
        synchronized boolean execute(long a, long b, long c) {
            if (closed) return false;
            try {
                OneDnn.check((int) lib.memorySetDataHandle.invokeExact(src, a), "dnnl_memory_set_data_handle(src)");
                OneDnn.check((int) lib.memorySetDataHandle.invokeExact(weights, b), "dnnl_memory_set_data_handle(weights)");
                OneDnn.check((int) lib.memorySetDataHandle.invokeExact(dst, c), "dnnl_memory_set_data_handle(dst)");
                OneDnn.check((int) lib.primitiveExecute.invokeExact(primitive, stream, 3, args), "dnnl_primitive_execute(matmul)");
                OneDnn.check((int) lib.streamWait.invokeExact(stream), "dnnl_stream_wait");
                return true;
            } catch (Throwable t) {
                throw OneDnn.rethrow(t, "dnnl_primitive_execute(matmul)");
            }
        }

        synchronized void close() {
            if (closed) return;
            closed = true;
            destroy(lib, primitive, stream, src, weights, dst);
            arena.close();
        }

        private static void destroy(OneDnn lib, MemorySegment prim, MemorySegment strm, MemorySegment... mems) {
            try {
                for (MemorySegment m : mems) if (!m.equals(MemorySegment.NULL)) { int ignored = (int) lib.memoryDestroy.invokeExact(m); }
                if (!strm.equals(MemorySegment.NULL)) { int ignored = (int) lib.streamDestroy.invokeExact(strm); }
                if (!prim.equals(MemorySegment.NULL)) { int ignored = (int) lib.primitiveDestroy.invokeExact(prim); }
            } catch (Throwable t) {
                throw OneDnn.rethrow(t, "destroy");
            }
        }

        private static MemorySegment memoryDesc(Arena tmp, long rows, long cols, int dataType, long rowStride, long colStride)
                throws Throwable {
            MemorySegment desc = tmp.allocate(OneDnn.DESC_BYTES, 64);
            MemorySegment dims = tmp.allocate(JAVA_LONG, OneDnn.MAX_NDIMS);
            MemorySegment strides = tmp.allocate(JAVA_LONG, OneDnn.MAX_NDIMS);
            dims.setAtIndex(JAVA_LONG, 0, rows);
            dims.setAtIndex(JAVA_LONG, 1, cols);
            strides.setAtIndex(JAVA_LONG, 0, rowStride);
            strides.setAtIndex(JAVA_LONG, 1, colStride);
            OneDnn.check((int) lib().memoryDescInitByStrides.invokeExact(desc, 2, dims, dataType, strides),
                    "dnnl_memory_desc_init_by_strides([" + rows + ", " + cols + "], strides [" + rowStride + ", " + colStride + "])");
            return desc;
        }

        private static MemorySegment memory(Arena tmp, OneDnn lib, MemorySegment desc) throws Throwable {
            MemorySegment out = tmp.allocate(ADDRESS);
            OneDnn.check((int) lib.memoryCreate.invokeExact(out, desc, lib.engine, MemorySegment.NULL), "dnnl_memory_create");
            return out.get(ADDRESS, 0);
        }

        private static MemorySegment out(Arena tmp, java.lang.invoke.MethodHandle create, String call) throws Throwable {
            MemorySegment out = tmp.allocate(ADDRESS);
            OneDnn.check((int) create.invokeExact(out), call);
            return out.get(ADDRESS, 0);
        }

        private static OneDnn lib() {
            return OneDnn.instance();
        }

        private static String describe(Key key) {
            return " M=" + key.m() + " N=" + key.n() + " K=" + key.k() + " transA=" + key.transA() + " transB=" + key.transB()
                    + " alpha=" + key.alpha() + " beta=" + key.beta();
        }
    }

    // ---- helpers and validation ----

    private static long address(Tensor t) {
        return t.segment().address() + t.byteOffset();
    }

    /** Row stride, or the row length when there is one row (its stride is then arbitrary). */
    private static long ld(Tensor t) {
        return t.dim(0) <= 1 ? Math.max(1, t.dim(1)) : t.stride(0);
    }

    private static void check(Tensor c, Tensor a, Tensor b, boolean transA, boolean transB) {
        String op = "Bf16Matmul.matmul";
        for (var e : List.of(Map.entry("c", c), Map.entry("a", a), Map.entry("b", b))) {
            Tensor t = e.getValue();
            if (t.rank() != 2) {
                throw new IllegalArgumentException(op + ": " + e.getKey() + " " + t.describe() + " must have 2 dimensions [rows, cols]");
            }
        }
        if (c.dtype() != DType.F32 || a.dtype() != DType.BF16 || b.dtype() != DType.BF16) {
            throw new IllegalArgumentException(op + ": c " + c.describe() + ", a " + a.describe() + ", b " + b.describe()
                    + " must be c f32, a and b bf16 (convert with Bf16Convert.fromFloat)");
        }
        Gemm.requireProductShapes(op, c, a, b, transA, transB);
        for (var e : List.of(Map.entry("c", c), Map.entry("a", a), Map.entry("b", b))) {
            Tensor t = e.getValue();
            String name = e.getKey();
            if (!t.hasUnitInnerStride()) {
                throw new IllegalArgumentException(op + ": " + name + " " + t.describe() + " has inner stride " + t.stride(1)
                        + "; oneDNN matmul here needs unit-stride rows (pass the stored tensor and set the transpose flag)");
            }
            if (t.dim(0) > 1 && t.stride(0) < t.dim(1)) {
                throw new IllegalArgumentException(op + ": " + name + " " + t.describe() + " has row stride " + t.stride(0)
                        + " < row length " + t.dim(1) + "; rows must not overlap");
            }
            if (!t.segment().isNative()) {
                throw new IllegalArgumentException(op + ": " + name + " " + t.describe() + " wraps a heap segment; oneDNN needs "
                        + "off-heap tensors (allocate them with Tensor.allocate)");
            }
        }
    }
}
