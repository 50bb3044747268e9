package dev.shardwise.comm.mpi;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.locks.ReentrantLock;

import static java.lang.foreign.ValueLayout.JAVA_INT;

/**
 * This process's MPI library and its one life: loaded on first use, initialised once with
 * {@code MPI_Init_thread(MPI_THREAD_SERIALIZED)}, finalised once (explicitly or by a shutdown hook). MPI allows
 * one init and one finalize per process, so this is process-wide state by nature; it lives in one holder.
 *
 * <p>Threads: any thread may call MPI through this runtime, one at a time: every call holds {@link #lock()}
 * (that is what {@code MPI_THREAD_SERIALIZED} asks of the caller). Blocking waits are done by polling
 * non-blocking calls, each poll taking the lock briefly, so two communicators used from two threads do not block
 * each other for long.
 *
 * <p>Shutdown: the hook calls MPI_Finalize only if no communicator of this process saw a timeout or a peer
 * failure and none was told of a local one ({@link #markFailed}): MPI_Finalize waits for every process, so a
 * failing process must exit without it, which makes {@code mpirun} end the whole job at once.
 */
final class MpiRuntime {
    /** How long the shutdown hook waits for a thread still inside MPI before skipping MPI_Finalize. */
    private static final long HOOK_LOCK_WAIT_MS = 2_000;

    private static final class Holder {
        static final MpiLibrary.Loaded LOADED = MpiLibrary.load(System.getenv("SHARDWISE_LIBMPI"));
        static final MpiRuntime RUNTIME = LOADED.library().map(MpiRuntime::new).orElse(null);
    }

    private final MpiLibrary lib;
    private final ReentrantLock lock = new ReentrantLock();
    // guarded by lock
    private boolean started, finalized, failed, initializedHere;
    private int worldRank = -1, worldSize = -1;
    private volatile boolean sharesCores;

    private MpiRuntime(MpiLibrary lib) {
        this.lib = lib;
    }

    /** Null when libmpi is loadable, else why not and what to install. */
    static String unavailableReason() {
        return Holder.LOADED.failure();
    }

    /**
     * The runtime, MPI initialised.
     *
     * @throws IllegalStateException if libmpi is missing (the message says what to install), MPI_Init_thread
     *                               failed, or MPI was already finalised in this process
     */
    static MpiRuntime started() {
        MpiRuntime rt = Holder.RUNTIME;
        if (rt == null) throw new IllegalStateException("the mpi backend is unavailable: " + Holder.LOADED.failure());
        rt.start();
        return rt;
    }

    /** The runtime if libmpi was loaded (MPI maybe not initialised), else null. */
    static MpiRuntime loadedOrNull() {
        return Holder.RUNTIME;
    }

    MpiLibrary lib() { return lib; }

    ReentrantLock lock() { return lock; }

    int worldRank() { return worldRank; }

    int worldSize() { return worldSize; }

    /**
     * True when this node runs more MPI processes than it has cores ({@code OMPI_COMM_WORLD_LOCAL_SIZE}), or
     * {@code OMPI_MCA_mpi_yield_when_idle=1} asks for it: waiting processes then yield the core instead of spinning.
     */
    boolean sharesCores() { return sharesCores; }

    private void start() {
        lock.lock();
        try {
            if (finalized) {
                throw new IllegalStateException("MPI was already finalized in this process and cannot start again; "
                        + "create every MPI communicator before Mpi.finalizeMpi()");
            }
            if (started) return;
            try (Arena arena = Arena.ofConfined()) {
                MemorySegment flag = arena.allocate(JAVA_INT);
                lib.check((int) lib.initialized.invokeExact(flag), "MPI_Initialized", "mpi");
                if (flag.get(JAVA_INT, 0) == 0) {
                    MemorySegment provided = arena.allocate(JAVA_INT);
                    int rc = (int) lib.initThread.invokeExact(MemorySegment.NULL, MemorySegment.NULL,
                            MpiLibrary.MPI_THREAD_SERIALIZED, provided);
                    lib.check(rc, "MPI_Init_thread(MPI_THREAD_SERIALIZED)", "mpi (" + lib.path + ")");
                    if (provided.get(JAVA_INT, 0) < MpiLibrary.MPI_THREAD_SERIALIZED) {
                        throw new IllegalStateException("MPI_Init_thread provided thread level " + provided.get(JAVA_INT, 0)
                                + " < MPI_THREAD_SERIALIZED; the mpi backend needs calls from more than one thread (one at a time)");
                    }
                    initializedHere = true;
                }
                // Errors come back as return codes (checked on every call) instead of aborting the job.
                lib.check((int) lib.commSetErrhandler.invokeExact(lib.commWorld, lib.errorsReturn), "MPI_Comm_set_errhandler", "mpi");
                MemorySegment out = arena.allocate(JAVA_INT);
                lib.check((int) lib.commRank.invokeExact(lib.commWorld, out), "MPI_Comm_rank", "mpi");
                worldRank = out.get(JAVA_INT, 0);
                lib.check((int) lib.commSize.invokeExact(lib.commWorld, out), "MPI_Comm_size", "mpi");
                worldSize = out.get(JAVA_INT, 0);
            } catch (Throwable t) {
                throw MpiLibrary.rethrow(t);
            }
            started = true;
            String local = System.getenv("OMPI_COMM_WORLD_LOCAL_SIZE");
            sharesCores = "1".equals(System.getenv("OMPI_MCA_mpi_yield_when_idle"))
                    || local != null && local.matches("\\d+") && Integer.parseInt(local) > Runtime.getRuntime().availableProcessors();
            if (initializedHere) {
                Runtime.getRuntime().addShutdownHook(Thread.ofPlatform().name("shardwise-mpi-finalize").unstarted(this::finalizeOnExit));
            }
        } finally {
            lock.unlock();
        }
    }

    /** Remembers that this process failed or saw a peer fail: MPI_Finalize must then not run at exit. */
    void markFailed() {
        lock.lock();
        try {
            failed = true;
        } finally {
            lock.unlock();
        }
    }

    /**
     * MPI_Finalize, once; later calls do nothing. Every process must call it (it waits for all of them).
     *
     * @throws IllegalStateException if MPI_Finalize returns an error
     */
    void finalizeMpi() {
        lock.lock();
        try {
            if (!started || finalized) return;
            finalized = true;
            if (!initializedHere) return;   // whoever initialised MPI finalises it
            try {
                lib.check((int) lib.finalizeMpi.invokeExact(), "MPI_Finalize", "mpi rank " + worldRank);
            } catch (Throwable t) {
                throw MpiLibrary.rethrow(t);
            }
        } finally {
            lock.unlock();
        }
    }

    private void finalizeOnExit() {
        try {
            if (!lock.tryLock(HOOK_LOCK_WAIT_MS, TimeUnit.MILLISECONDS)) return;   // a thread is stuck in MPI
        } catch (InterruptedException e) {
            return;
        }
        try {
            if (failed) return;
            finalizeMpi();
        } catch (RuntimeException e) {
            System.err.println("shardwise: " + e.getMessage());
        } finally {
            lock.unlock();
        }
    }
}
