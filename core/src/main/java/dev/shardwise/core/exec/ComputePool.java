package dev.shardwise.core.exec;

import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.locks.LockSupport;
import java.util.concurrent.locks.ReentrantLock;
import java.util.function.IntConsumer;

/**
 * The threads that run kernels: a fixed set of workers plus the calling thread, splitting a loop of
 * independent tasks ({@link #parallelFor}). Kernels use {@link #current()}: the pool bound to the calling
 * thread with {@link #runWith}, or else the process-wide {@link #shared()} pool sized to the machine.
 * Ranks that run as threads of one JVM each bind a pool with their share of the cores, so they never
 * oversubscribe the machine.
 *
 * <p>{@code parallelFor} blocks until every task has run, and rethrows the first failure. Calls from two
 * threads on one pool are serialized; a call from inside a task of the same pool runs its tasks inline on
 * the calling thread (no deadlock, no oversubscription). Idle workers spin for about
 * {@value #SPIN_NANOS} ns before parking, so back-to-back kernels do not pay a wake-up each.
 *
 * <p>The shared pool's size is fixed at first use: {@link #configureShared} may be called only before then
 * (it throws {@link IllegalStateException} after), and {@code SHARDWISE_THREADS} in the environment, if
 * set, overrides the machine's processor count.
 */
public final class ComputePool implements AutoCloseable {
    /** How long an idle worker spins before parking, in nanoseconds. */
    static final long SPIN_NANOS = 50_000;

    private static final ScopedValue<ComputePool> CURRENT = ScopedValue.newInstance();
    private static final Object SHARED_LOCK = new Object();
    private static int sharedThreadsRequest;   // 0 = machine size; guarded by SHARED_LOCK
    private static ComputePool sharedPool;      // created on first use; guarded by SHARED_LOCK

    private final String name;
    private final int threads;
    private final Thread[] workers;
    private final ReentrantLock callerLock = new ReentrantLock();
    private volatile Job job;                   // the running job, or null
    private volatile boolean closed;
    private volatile Thread activeCaller;

    /**
     * Starts a pool of {@code threads} threads in all: {@code threads - 1} daemon workers plus the caller.
     *
     * @throws IllegalArgumentException if {@code threads < 1}
     */
    public ComputePool(String name, int threads) {
        if (threads < 1) throw new IllegalArgumentException(name + ": a compute pool needs at least 1 thread, got " + threads);
        this.name = name;
        this.threads = threads;
        this.workers = new Thread[threads - 1];
        for (int i = 0; i < workers.length; i++) {
            Thread t = new Thread(() -> ScopedValue.where(CURRENT, this).run(this::workerLoop), name + "-worker-" + (i + 1));
            t.setDaemon(true);
            workers[i] = t;
            t.start();
        }
    }

    /**
     * Sets the size of the shared pool. Call before any kernel runs.
     *
     * @throws IllegalStateException if the shared pool already exists
     */
    public static void configureShared(int threads) {
        if (threads < 1) throw new IllegalArgumentException("shared compute pool needs at least 1 thread, got " + threads);
        synchronized (SHARED_LOCK) {
            if (sharedPool != null) {
                throw new IllegalStateException("the shared compute pool already runs with " + sharedPool.threads
                        + " threads; set its size before the first kernel runs");
            }
            sharedThreadsRequest = threads;
        }
    }

    /** The environment variable that sets a process's kernel threads. */
    public static final String THREADS_VARIABLE = "SHARDWISE_THREADS";

    /**
     * The kernel threads {@value #THREADS_VARIABLE} asks for: {@code value} (the variable's value, surrounding
     * space ignored), or {@code fallback} when it is unset (null) or blank.
     *
     * @throws IllegalArgumentException if {@code value} is not a positive integer, naming the variable, the
     *                                  value and the default
     */
    public static int threadsFromEnvironment(String value, int fallback) {
        if (value == null || value.isBlank()) return fallback;
        try {
            int threads = Integer.parseInt(value.strip());
            if (threads >= 1) return threads;
        } catch (NumberFormatException e) {
            // reported below
        }
        throw new IllegalArgumentException(THREADS_VARIABLE + "='" + value + "' is not a positive integer; set it to the "
                + "kernel threads of each process (e.g. " + fallback + ", the default here), or unset it for that default");
    }

    /** The process-wide pool: {@value #THREADS_VARIABLE} threads, or one per available processor. */
    public static ComputePool shared() {
        synchronized (SHARED_LOCK) {
            if (sharedPool == null) {
                int n = sharedThreadsRequest;
                if (n == 0) n = threadsFromEnvironment(System.getenv(THREADS_VARIABLE), Runtime.getRuntime().availableProcessors());
                sharedPool = new ComputePool("shardwise-kernels", n);
            }
            return sharedPool;
        }
    }

    /** The pool bound to this thread by {@link #runWith}, else {@link #shared()}. */
    public static ComputePool current() {
        return CURRENT.isBound() ? CURRENT.get() : shared();
    }

    /** Runs {@code action} with {@code pool} as {@link #current()} for this thread (and the pool's workers). */
    public static void runWith(ComputePool pool, Runnable action) {
        ScopedValue.where(CURRENT, pool).run(action);
    }

    public String name() { return name; }

    /** Threads that run tasks, the caller included. */
    public int threads() { return threads; }

    /**
     * Runs {@code body.accept(task)} for every task in {@code [0, tasks)}, spread over the pool's threads,
     * and returns when all have finished. Tasks must be independent.
     *
     * @throws RuntimeException the first exception a task threw (others are added as suppressed)
     */
    public void parallelFor(int tasks, IntConsumer body) {
        if (tasks <= 0) return;
        Thread me = Thread.currentThread();
        if (tasks == 1 || threads == 1 || isWorker(me) || activeCaller == me) {
            for (int t = 0; t < tasks; t++) body.accept(t);
            return;
        }
        if (closed) throw new IllegalStateException(name + " is closed");
        callerLock.lock();
        try {
            activeCaller = me;
            Job j = new Job(tasks, body, me);
            job = j;
            for (Thread w : workers) LockSupport.unpark(w);
            j.runTasks();
            while (j.remaining.get() > 0) {
                LockSupport.parkNanos(this, 10_000);
            }
            job = null;
            if (j.failure != null) {
                if (j.failure instanceof RuntimeException re) throw re;
                if (j.failure instanceof Error e) throw e;
                throw new RuntimeException(j.failure);
            }
        } finally {
            activeCaller = null;
            callerLock.unlock();
        }
    }

    private boolean isWorker(Thread t) {
        for (Thread w : workers) if (w == t) return true;
        return false;
    }

    private void workerLoop() {
        Job last = null;
        while (!closed) {
            Job j = job;
            if (j == null || j == last) {
                long spinUntil = System.nanoTime() + SPIN_NANOS;
                while ((j = job) == null || j == last) {
                    if (closed) return;
                    if (System.nanoTime() < spinUntil) Thread.onSpinWait();
                    else LockSupport.park(this);
                }
            }
            last = j;
            j.runTasks();
        }
    }

    /** Stops the workers. The shared pool is never closed. */
    @Override
    public void close() {
        if (this == sharedPool) throw new IllegalStateException("the shared compute pool cannot be closed");
        closed = true;
        for (Thread w : workers) LockSupport.unpark(w);
    }

    @Override
    public String toString() {
        return name + " (" + threads + " threads)";
    }

    /** One parallelFor call: tasks are claimed from a counter until none are left. */
    private static final class Job {
        final int tasks;
        final IntConsumer body;
        final Thread caller;
        final AtomicInteger next = new AtomicInteger();
        final AtomicInteger remaining;
        volatile Throwable failure;

        Job(int tasks, IntConsumer body, Thread caller) {
            this.tasks = tasks;
            this.body = body;
            this.caller = caller;
            this.remaining = new AtomicInteger(tasks);
        }

        void runTasks() {
            int done = 0;
            for (int t; (t = next.getAndIncrement()) < tasks; ) {
                try {
                    body.accept(t);
                } catch (Throwable e) {
                    synchronized (this) {
                        if (failure == null) failure = e;
                        else failure.addSuppressed(e);
                    }
                }
                done++;
            }
            if (done > 0 && remaining.addAndGet(-done) == 0) LockSupport.unpark(caller);
        }
    }
}
