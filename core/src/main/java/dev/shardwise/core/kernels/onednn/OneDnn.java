package dev.shardwise.core.kernels.onednn;

import java.lang.foreign.Arena;
import dev.shardwise.core.foreign.NativeLibraries;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemoryLayout;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.SymbolLookup;
import java.lang.foreign.ValueLayout;
import java.lang.invoke.MethodHandle;
import java.util.List;

import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_FLOAT;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

/**
 * The C API of oneDNN 2.x ({@code libdnnl.so.2}, Debian/Ubuntu package {@code libdnnl2}) bound through the FFM
 * API: one typed downcall handle per function we use, one CPU engine for the process, and a check that turns
 * every {@code dnnl_status_t} other than {@code dnnl_success} into an exception naming the call.
 *
 * <p>Only the runtime library is needed, no headers. The 2.x API passes memory and operation descriptors as
 * caller-allocated structs ({@code dnnl_memory_desc_t}, {@code dnnl_matmul_desc_t}); we allocate generous
 * buffers ({@link #DESC_BYTES}) for them and only ever pass their addresses, so their exact layout does not
 * matter here. Calls are made with {@code invokeExact}.
 *
 * <p>Threads: Debian's build runs its primitives on OpenMP (libgomp). OpenMP's thread count is a per-thread
 * setting of the calling thread ({@code nthreads-var}), so {@link #useThreads} calls {@code omp_set_num_threads}
 * on the calling thread only: no process-wide setting and no environment variable is changed. Each Java thread
 * that runs a primitive gets its own OpenMP worker team from libgomp, whose workers spin briefly after a call
 * (libgomp's default wait policy), as OpenBLAS's do.
 *
 * <p>{@link #isAvailable()} loads the library on first use (once per JVM, in a holder class); when it is missing
 * {@link #unavailableReason()} says what to install. Package-private except for those two queries and
 * {@link #description()}: {@link Bf16Matmul} is the entry point for kernels.
 */
public final class OneDnn {
    /** Looked for on the loader's search path, in this order. */
    private static final List<String> LIBRARY_NAMES = List.of("libdnnl.so.2", "libdnnl.so");
    /** The OpenMP runtime Debian's libdnnl2 links (already loaded with it). */
    private static final String OPENMP_LIBRARY = "libgomp.so.1";
    static final String INSTALL_HINT = "install oneDNN 2.x: apt-get install libdnnl2 (or scripts/ensure-onednn.sh)";

    /** Bytes reserved for a dnnl_memory_desc_t or dnnl_matmul_desc_t (oneDNN 2.6: about 0.8 KiB and 3.2 KiB). */
    static final long DESC_BYTES = 8192;
    /** DNNL_MAX_NDIMS: the length of a dnnl_dims_t (int64_t[12]). */
    static final int MAX_NDIMS = 12;

    // enums and macros from dnnl_types.h (2.6)
    static final int DNNL_SUCCESS = 0;
    static final int ENGINE_CPU = 1;             // dnnl_cpu
    static final int STREAM_IN_ORDER = 1;        // dnnl_stream_default_flags
    static final int DT_BF16 = 2, DT_F32 = 3;    // dnnl_bf16, dnnl_f32
    static final int ARG_SRC = 1, ARG_DST = 17, ARG_WEIGHTS = 33; // DNNL_ARG_SRC_0, DNNL_ARG_DST_0, DNNL_ARG_WEIGHTS_0
    static final int QUERY_IMPL_INFO_STR = 8;    // dnnl_query_impl_info_str
    static final int RUNTIME_OMP = 2;            // DNNL_RUNTIME_OMP
    /** dnnl_exec_arg_t: {@code int arg; dnnl_memory_t memory;} (16 bytes on LP64). */
    static final MemoryLayout EXEC_ARG = MemoryLayout.structLayout(JAVA_INT.withName("arg"), MemoryLayout.paddingLayout(4),
            ADDRESS.withName("memory"));

    private static final String[] STATUS_NAMES = {"dnnl_success", "dnnl_out_of_memory", "dnnl_invalid_arguments",
            "dnnl_unimplemented", "dnnl_iterator_ends", "dnnl_runtime_error", "dnnl_not_required"};

    final String path;
    final String version;
    final int cpuRuntime;
    /** The process's CPU engine (never destroyed: it lives as long as the library). */
    final MemorySegment engine;

    final MethodHandle engineCreate, streamCreate, streamWait, streamDestroy;
    final MethodHandle memoryDescInitByStrides, memoryCreate, memoryDestroy, memorySetDataHandle;
    final MethodHandle matmulDescInit, primitiveDescCreate, primitiveDescQuery, primitiveDescDestroy;
    final MethodHandle primitiveCreate, primitiveExecute, primitiveDestroy;
    final MethodHandle attrCreate, attrDestroy, attrSetOutputScales, attrSetPostOps;
    final MethodHandle postOpsCreate, postOpsDestroy, postOpsAppendSum;
    /** {@code void omp_set_num_threads(int)}, or null when the build is not OpenMP or libgomp was not found. */
    private final MethodHandle ompSetNumThreads;
    /** {@code int omp_get_max_threads(void)}, null exactly when {@link #ompSetNumThreads} is. */
    private final MethodHandle ompGetMaxThreads;

    private OneDnn(String path, SymbolLookup lib) throws Throwable {
        this.path = path;
        ValueLayout P = ADDRESS, I = JAVA_INT, L = JAVA_LONG, F = JAVA_FLOAT;
        engineCreate = fn(lib, "dnnl_engine_create", P, I, L);
        streamCreate = fn(lib, "dnnl_stream_create", P, P, I);
        streamWait = fn(lib, "dnnl_stream_wait", P);
        streamDestroy = fn(lib, "dnnl_stream_destroy", P);
        // memory_desc, ndims, dims, data_type, strides
        memoryDescInitByStrides = fn(lib, "dnnl_memory_desc_init_by_strides", P, I, P, I, P);
        // memory, memory_desc, engine, handle
        memoryCreate = fn(lib, "dnnl_memory_create", P, P, P, P);
        memoryDestroy = fn(lib, "dnnl_memory_destroy", P);
        // memory, handle (a raw address, passed as a long so a call allocates nothing)
        memorySetDataHandle = fn(lib, "dnnl_memory_set_data_handle", P, L);
        // matmul_desc, src_desc, weights_desc, bias_desc, dst_desc
        matmulDescInit = fn(lib, "dnnl_matmul_desc_init", P, P, P, P, P);
        // primitive_desc, op_desc, attr, engine, hint_forward_primitive_desc
        primitiveDescCreate = fn(lib, "dnnl_primitive_desc_create", P, P, P, P, P);
        primitiveDescQuery = fn(lib, "dnnl_primitive_desc_query", P, I, I, P);
        primitiveDescDestroy = fn(lib, "dnnl_primitive_desc_destroy", P);
        primitiveCreate = fn(lib, "dnnl_primitive_create", P, P);
        // primitive, stream, nargs, args
        primitiveExecute = fn(lib, "dnnl_primitive_execute", P, P, I, P);
        primitiveDestroy = fn(lib, "dnnl_primitive_destroy", P);
        attrCreate = fn(lib, "dnnl_primitive_attr_create", P);
        attrDestroy = fn(lib, "dnnl_primitive_attr_destroy", P);
        // attr, count, mask, scales
        attrSetOutputScales = fn(lib, "dnnl_primitive_attr_set_output_scales", P, L, I, P);
        attrSetPostOps = fn(lib, "dnnl_primitive_attr_set_post_ops", P, P);
        postOpsCreate = fn(lib, "dnnl_post_ops_create", P);
        postOpsDestroy = fn(lib, "dnnl_post_ops_destroy", P);
        postOpsAppendSum = fn(lib, "dnnl_post_ops_append_sum", P, F);

        // const dnnl_version_t *dnnl_version(void): {int major, minor, patch; const char *hash; unsigned cpu_runtime, gpu_runtime}
        MethodHandle versionFn = Linker.nativeLinker().downcallHandle(symbol(lib, "dnnl_version"), FunctionDescriptor.of(ADDRESS));
        MemorySegment v = ((MemorySegment) versionFn.invokeExact()).reinterpret(32);
        version = v.get(JAVA_INT, 0) + "." + v.get(JAVA_INT, 4) + "." + v.get(JAVA_INT, 8);
        cpuRuntime = v.get(JAVA_INT, 24);

        MethodHandle ompSet = null, ompGet = null;
        if (cpuRuntime == RUNTIME_OMP) {
            try {
                SymbolLookup gomp = SymbolLookup.libraryLookup(OPENMP_LIBRARY, Arena.global());
                var set = gomp.find("omp_set_num_threads");
                var get = gomp.find("omp_get_max_threads");
                if (set.isPresent() && get.isPresent()) {
                    ompSet = Linker.nativeLinker().downcallHandle(set.get(), FunctionDescriptor.ofVoid(JAVA_INT));
                    ompGet = Linker.nativeLinker().downcallHandle(get.get(), FunctionDescriptor.of(JAVA_INT));
                }
            } catch (IllegalArgumentException e) {
                // another OpenMP runtime (e.g. Intel's libiomp5): threads stay at its default
            }
        }
        ompSetNumThreads = ompSet;
        ompGetMaxThreads = ompGet;

        try (Arena arena = Arena.ofConfined()) {
            MemorySegment out = arena.allocate(ADDRESS);
            check((int) engineCreate.invokeExact(out, ENGINE_CPU, 0L), "dnnl_engine_create(dnnl_cpu, 0)");
            engine = out.get(ADDRESS, 0);
        }
    }

    /** Loads once; holds either the binding or why there is none. */
    private static final class Holder {
        static final OneDnn INSTANCE;
        static final String FAILURE;

        static {
            OneDnn instance = null;
            String failure = null;
            NativeLibraries.Opened lib = NativeLibraries.openFirst(LIBRARY_NAMES);
            if (!lib.found()) {
                failure = "oneDNN not found (tried " + String.join(", ", lib.tried()) + "): " + INSTALL_HINT;
            } else {
                try {
                    instance = new OneDnn(lib.name(), lib.lookup());
                } catch (Throwable t) {
                    failure = lib.name() + " was found but is not a usable oneDNN 2.x library (" + t.getMessage() + "); "
                            + INSTALL_HINT;
                }
            }
            INSTANCE = instance;
            FAILURE = failure;
        }
    }

    /** Whether oneDNN 2.x loaded in this JVM (loads it on the first call). */
    public static boolean isAvailable() {
        return Holder.INSTANCE != null;
    }

    /** Why oneDNN is unavailable, naming the package to install; null when it is available. */
    public static String unavailableReason() {
        return Holder.FAILURE;
    }

    /** One line: library, version and threading runtime, or why it is unavailable. */
    public static String description() {
        OneDnn lib = Holder.INSTANCE;
        if (lib == null) return "oneDNN unavailable: " + Holder.FAILURE;
        String runtime = switch (lib.cpuRuntime) {
            case 1 -> "sequential";
            case RUNTIME_OMP -> lib.ompSetNumThreads != null ? "OpenMP (libgomp, threads set per call)" : "OpenMP (threads at its default)";
            case 4 -> "TBB";
            case 8 -> "threadpool";
            default -> "runtime " + lib.cpuRuntime;
        };
        return "oneDNN " + lib.version + " (" + lib.path + "), CPU runtime " + runtime;
    }

    /**
     * The binding.
     *
     * @throws UnsupportedOperationException if the library could not be loaded; the message says what to install
     */
    static OneDnn instance() {
        OneDnn lib = Holder.INSTANCE;
        if (lib == null) throw new UnsupportedOperationException(Holder.FAILURE);
        return lib;
    }

    /**
     * Sets the number of OpenMP threads the calling thread's next primitives use; does nothing when the build does
     * not use libgomp.
     */
    void useThreads(int threads) {
        if (ompSetNumThreads == null) return;
        try {
            ompSetNumThreads.invokeExact(threads);
        } catch (Throwable t) {
            throw rethrow(t, "omp_set_num_threads");
        }
    }

    /** OpenMP's thread count for the calling thread's next parallel region, or -1 when not controlled. */
    int threadsForCaller() {
        if (ompGetMaxThreads == null) return -1;
        try {
            return (int) ompGetMaxThreads.invokeExact();
        } catch (Throwable t) {
            throw rethrow(t, "omp_get_max_threads");
        }
    }

    /** Whether {@link #useThreads} has an effect. */
    boolean controlsThreads() {
        return ompSetNumThreads != null;
    }

    /**
     * Throws unless {@code status} is {@code dnnl_success}.
     *
     * @throws IllegalStateException naming the call and the status
     */
    static void check(int status, String call) {
        if (status != DNNL_SUCCESS) {
            String name = status >= 0 && status < STATUS_NAMES.length ? STATUS_NAMES[status] : "status " + status;
            String hint = status == 3 ? " (oneDNN has no implementation for these arguments on this CPU)" : "";
            throw new IllegalStateException("oneDNN " + call + " failed: " + name + hint);
        }
    }

    /** Rethrows what a downcall threw (downcalls throw only errors of the JVM itself). */
    static RuntimeException rethrow(Throwable t, String call) {
        if (t instanceof RuntimeException r) return r;
        if (t instanceof Error e) throw e;
        return new IllegalStateException("oneDNN downcall " + call + " failed: " + t, t);
    }

    private static MemorySegment symbol(SymbolLookup lib, String name) {
        return lib.find(name).orElseThrow(() -> new IllegalStateException("symbol " + name + " missing (not oneDNN 2.x?)"));
    }

    private static MethodHandle fn(SymbolLookup lib, String name, MemoryLayout... args) {
        return Linker.nativeLinker().downcallHandle(symbol(lib, name), FunctionDescriptor.of(JAVA_INT, args));
    }
}
