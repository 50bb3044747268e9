package dev.shardwise.comm.mpi;

import dev.shardwise.core.foreign.NativeLibraries;

import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemoryLayout;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.SymbolLookup;
import java.lang.foreign.ValueLayout;
import java.lang.invoke.MethodHandle;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Optional;

import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_INT;

/**
 * The MPI C API of Open MPI 4.x ({@code libmpi.so.40}) bound through the FFM API: one typed downcall handle per
 * function the backend uses, and the addresses of the predefined handles, which Open MPI exports as data symbols
 * ({@code MPI_COMM_WORLD} is {@code &ompi_mpi_comm_world}).
 *
 * <p>Loading is the only native step: {@link SymbolLookup#libraryLookup} opens libmpi with {@code RTLD_LOCAL},
 * but Open MPI's plugins ({@code mca_*.so}, opened later by MPI_Init) resolve libmpi's symbols globally, so the
 * library is promoted with {@code dlopen(path, RTLD_NOW | RTLD_NOLOAD | RTLD_GLOBAL)} (no second copy is loaded).
 * Calls are made with {@code invokeExact}; every {@code MPI_*} method returns the MPI error code, which callers
 * pass to {@link #check}. Not thread-safe by itself: {@link MpiRuntime} serializes calls.
 */
final class MpiLibrary {
    /** Where libmpi is looked for unless {@code SHARDWISE_LIBMPI} names a file: the loader's search path. */
    private static final List<String> LIBRARY_NAMES = List.of("libmpi.so.40", "libmpi.so");
    /** dlopen flags from glibc's {@code <dlfcn.h>}. */
    private static final int RTLD_NOW = 0x2, RTLD_NOLOAD = 0x4, RTLD_GLOBAL = 0x100;

    static final int MPI_SUCCESS = 0;
    static final int MPI_THREAD_SERIALIZED = 2;
    static final int MPI_ANY_SOURCE = -1;
    static final int MPI_UNDEFINED = -32766;
    static final int MPI_MAX_ERROR_STRING = 256;
    /** {@code MPI_IN_PLACE} is {@code (void *) 1} in Open MPI's mpi.h. */
    static final MemorySegment IN_PLACE = MemorySegment.ofAddress(1);
    /** {@code MPI_STATUS_IGNORE} and {@code MPI_STATUSES_IGNORE} are null pointers. */
    static final MemorySegment STATUS_IGNORE = MemorySegment.NULL;
    /**
     * Open MPI's {@code MPI_Status}: {@code int MPI_SOURCE, MPI_TAG, MPI_ERROR, _cancelled; size_t _ucount}.
     */
    static final MemoryLayout STATUS = MemoryLayout.structLayout(JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT, ValueLayout.JAVA_LONG);
    static final long STATUS_SOURCE = 0;

    final String path;

    // predefined handles: addresses of Open MPI's data symbols
    final MemorySegment commWorld, commNull, requestNull, errorsReturn, mpiShort, mpiInt, mpiLongLong, mpiByte;
    final MemorySegment mpiFloat, mpiDouble, opSum, opMax;

    // int MPI_Init_thread(int *argc, char ***argv, int required, int *provided)
    final MethodHandle initThread, initialized, finalized, finalizeMpi;
    final MethodHandle commRank, commSize, commSplit, commDup, commFree, commSetErrhandler, errorString;
    final MethodHandle isend, irecv, test, testsome, cancel, requestFree, wait, iprobe, getCount, recv;
    final MethodHandle ialltoallv, iallgatherv, ibcast, allreduce, alltoallv, allgatherv;

    private MpiLibrary(String path, SymbolLookup lib) {
        this.path = path;
        commWorld = symbol(lib, "ompi_mpi_comm_world");
        commNull = symbol(lib, "ompi_mpi_comm_null");
        requestNull = symbol(lib, "ompi_request_null");
        errorsReturn = symbol(lib, "ompi_mpi_errors_return");
        mpiShort = symbol(lib, "ompi_mpi_short");
        mpiInt = symbol(lib, "ompi_mpi_int");
        mpiLongLong = symbol(lib, "ompi_mpi_long_long_int");
        mpiByte = symbol(lib, "ompi_mpi_byte");
        mpiFloat = symbol(lib, "ompi_mpi_float");
        mpiDouble = symbol(lib, "ompi_mpi_double");
        opSum = symbol(lib, "ompi_mpi_op_sum");
        opMax = symbol(lib, "ompi_mpi_op_max");
        ValueLayout P = ADDRESS, I = JAVA_INT;
        initThread = fn(lib, "MPI_Init_thread", P, P, I, P);
        initialized = fn(lib, "MPI_Initialized", P);
        finalized = fn(lib, "MPI_Finalized", P);
        finalizeMpi = fn(lib, "MPI_Finalize");
        commRank = fn(lib, "MPI_Comm_rank", P, P);
        commSize = fn(lib, "MPI_Comm_size", P, P);
        commSplit = fn(lib, "MPI_Comm_split", P, I, I, P);
        commDup = fn(lib, "MPI_Comm_dup", P, P);
        commFree = fn(lib, "MPI_Comm_free", P);
        commSetErrhandler = fn(lib, "MPI_Comm_set_errhandler", P, P);
        errorString = fn(lib, "MPI_Error_string", I, P, P);
        // buf, count, datatype, peer, tag, comm, request
        isend = fn(lib, "MPI_Isend", P, I, P, I, I, P, P);
        irecv = fn(lib, "MPI_Irecv", P, I, P, I, I, P, P);
        recv = fn(lib, "MPI_Recv", P, I, P, I, I, P, P);
        test = fn(lib, "MPI_Test", P, P, P);
        testsome = fn(lib, "MPI_Testsome", I, P, P, P, P);
        cancel = fn(lib, "MPI_Cancel", P);
        requestFree = fn(lib, "MPI_Request_free", P);
        wait = fn(lib, "MPI_Wait", P, P);
        iprobe = fn(lib, "MPI_Iprobe", I, I, P, P, P);
        getCount = fn(lib, "MPI_Get_count", P, P, P);
        // sendbuf, sendcounts, sdispls, sendtype, recvbuf, recvcounts, rdispls, recvtype, comm, request
        ialltoallv = fn(lib, "MPI_Ialltoallv", P, P, P, P, P, P, P, P, P, P);
        alltoallv = fn(lib, "MPI_Alltoallv", P, P, P, P, P, P, P, P, P);
        // sendbuf, sendcount, sendtype, recvbuf, recvcounts, displs, recvtype, comm, request
        iallgatherv = fn(lib, "MPI_Iallgatherv", P, I, P, P, P, P, P, P, P);
        allgatherv = fn(lib, "MPI_Allgatherv", P, I, P, P, P, P, P, P);
        // buf, count, datatype, root, comm, request
        ibcast = fn(lib, "MPI_Ibcast", P, I, P, I, P, P);
        // sendbuf, recvbuf, count, datatype, op, comm
        allreduce = fn(lib, "MPI_Allreduce", P, P, I, P, P, P);
    }

    /** The result of looking for libmpi: the bound library, or why there is none. */
    record Loaded(Optional<MpiLibrary> library, String failure) { }

    /**
     * Opens libmpi ({@code SHARDWISE_LIBMPI} if set, else {@code libmpi.so.40}, then {@code libmpi.so}), promotes
     * it to global symbol scope and binds it; never throws for a missing library.
     */
    static Loaded load(String configuredPath) {
        List<String> candidates = configuredPath != null && !configuredPath.isBlank() ? List.of(configuredPath) : LIBRARY_NAMES;
        NativeLibraries.Opened lib = NativeLibraries.openFirst(candidates);
        if (lib.found()) {
            try {
                promoteToGlobal(lib.name());
                return new Loaded(Optional.of(new MpiLibrary(lib.name(), lib.lookup())), null);
            } catch (RuntimeException e) {
                return new Loaded(Optional.empty(), lib.name() + " was found but is not a usable Open MPI 4.x library: " + e.getMessage());
            }
        }
        if (candidates != LIBRARY_NAMES) {
            return new Loaded(Optional.empty(), "SHARDWISE_LIBMPI=" + configuredPath + " cannot be opened; point it at Open MPI 4.x's "
                    + "libmpi.so, or unset it to use libmpi.so.40 from the loader's path (Debian/Ubuntu: openmpi-bin libopenmpi-dev)");
        }
        String hint = Files.exists(Path.of("/usr/bin/mpirun"))
                ? "mpirun is installed but its library is not: install libopenmpi-dev (or set SHARDWISE_LIBMPI to libmpi.so's path)"
                : "install Open MPI (Debian/Ubuntu: apt-get install openmpi-bin libopenmpi-dev, or scripts/ensure-openmpi.sh), "
                  + "or set SHARDWISE_LIBMPI to libmpi.so's path";
        return new Loaded(Optional.empty(), "libmpi not found (tried " + String.join(", ", lib.tried()) + "): " + hint);
    }

    /** dlopen(name, RTLD_NOW | RTLD_NOLOAD | RTLD_GLOBAL): the loaded copy's symbols become visible to plugins. */
    private static void promoteToGlobal(String name) {
        Linker linker = Linker.nativeLinker();
        MemorySegment dlopen = linker.defaultLookup().find("dlopen")
                .orElseThrow(() -> new IllegalStateException("dlopen not found in the C library"));
        MethodHandle h = linker.downcallHandle(dlopen, FunctionDescriptor.of(ADDRESS, ADDRESS, JAVA_INT));
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment handle = (MemorySegment) h.invokeExact(arena.allocateFrom(name, StandardCharsets.UTF_8),
                    RTLD_NOW | RTLD_NOLOAD | RTLD_GLOBAL);
            if (handle.equals(MemorySegment.NULL)) {
                throw new IllegalStateException("dlopen(" + name + ", RTLD_NOLOAD | RTLD_GLOBAL) returned NULL");
            }
        } catch (RuntimeException | Error e) {
            throw e;
        } catch (Throwable t) {
            throw new IllegalStateException("dlopen(" + name + ") failed: " + t, t);
        }
    }

    private static MemorySegment symbol(SymbolLookup lib, String name) {
        return lib.find(name).orElseThrow(() -> new IllegalStateException("symbol " + name + " missing (not Open MPI 4.x?)"));
    }

    private static MethodHandle fn(SymbolLookup lib, String name, MemoryLayout... args) {
        return Linker.nativeLinker().downcallHandle(symbol(lib, name), FunctionDescriptor.of(JAVA_INT, args));
    }

    /** The MPI datatype that moves elements of {@code bytes} bytes unchanged (integers: no conversion, any bits). */
    MemorySegment elementType(int bytes) {
        return switch (bytes) {
            case 1 -> mpiByte;
            case 2 -> mpiShort;
            case 4 -> mpiInt;
            case 8 -> mpiLongLong;
            default -> throw new IllegalArgumentException("no MPI datatype of " + bytes + " bytes");
        };
    }

    /** Open MPI's text for an error code, e.g. {@code MPI_ERR_TRUNCATE: message truncated}. */
    String errorText(int code) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment text = arena.allocate(MPI_MAX_ERROR_STRING + 1);
            MemorySegment length = arena.allocate(JAVA_INT);
            int rc = (int) errorString.invokeExact(code, text, length);
            return rc == MPI_SUCCESS ? text.getString(0, StandardCharsets.UTF_8) : "unknown MPI error";
        } catch (Throwable t) {
            return "unknown MPI error";
        }
    }

    /**
     * Throws unless {@code rc} is MPI_SUCCESS.
     *
     * @throws IllegalStateException naming the call, where it ran and Open MPI's error text
     */
    void check(int rc, String call, String where) {
        if (rc != MPI_SUCCESS) {
            throw new IllegalStateException(where + ": " + call + " failed with MPI error " + rc + " (" + errorText(rc) + ")");
        }
    }

    /** Rethrows what a downcall threw (downcalls throw only errors of the JVM itself). */
    static RuntimeException rethrow(Throwable t) {
        if (t instanceof RuntimeException r) return r;
        if (t instanceof Error e) throw e;
        return new IllegalStateException("MPI downcall failed: " + t, t);
    }
}
