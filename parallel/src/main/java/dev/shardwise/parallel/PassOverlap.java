package dev.shardwise.parallel;

import dev.shardwise.core.exec.ComputePool;

import java.util.ArrayDeque;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.Callable;
import java.util.concurrent.CancellationException;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.FutureTask;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.function.Supplier;

/**
 * Overlaps one rank's communication with a pass of its model (backward's gradient reductions, as PyTorch DDP's
 * reducer does; ZeRO stage 3's parameter gathers in forward and backward, as DeepSpeed's prefetch does) while every
 * collective stays on the rank's own thread: {@link #run} hands the pass to a helper thread and meanwhile runs,
 * on the calling (rank) thread and in posting order, the collectives that the pass's hooks {@link #post}. The
 * Communicator contract (one calling thread per rank) holds, so does MPI's FUNNELED threading level, and a failed
 * peer is reported to the thread the communicator knows.
 *
 * <p>Collectives posted but not yet run when the pass ends stay queued: {@link #drain} runs them (that wait is
 * the exposed communication time). A collective called directly on the rank thread must first {@link #drain}, so
 * every rank issues its collectives in the same order.
 *
 * <p>Failure: if a collective throws, the queued ones are cancelled, the pass's next {@link #post} fails with
 * {@link CancellationException}, the helper is joined, and the collective's exception is rethrown; if the pass
 * throws, its exception is rethrown once the collectives it posted have been cancelled.
 *
 * <p>One helper thread serves every pass (started by the first, ended by {@link #close}): a thread per pass would
 * cost its start and a fresh copy of each kernel's per-thread workspace twice a step.
 */
final class PassOverlap implements AutoCloseable {
    private static final FutureTask<Void> DONE = new FutureTask<>(() -> null);

    private final String name;
    private final BlockingQueue<FutureTask<?>> queue = new LinkedBlockingQueue<>();
    private final ArrayDeque<FutureTask<?>> leftover = new ArrayDeque<>();   // rank thread only
    private volatile Thread rankThread;     // set while run() is active
    private volatile boolean failed;
    private ExecutorService helper;          // rank thread only; created by the first run()

    /** @param name names the helper thread (e.g. the rank's pool name) */
    PassOverlap(String name) {
        this.name = name;
    }

    /** As {@link #run(String, Supplier)} for a pass without a result. */
    void run(String passName, Runnable pass) {
        run(passName, () -> {
            pass.run();
            return null;
        });
    }

    /**
     * Runs {@code pass} on a helper thread bound to this thread's compute pool, and the collectives it posts on
     * this thread, until the pass returns. Collectives still queued then are left for {@link #drain}.
     *
     * @param passName names the helper thread while the pass runs ("forward", "backward")
     * @return what the pass returned
     * @throws RuntimeException what the pass or a collective threw
     */
    <T> T run(String passName, Supplier<T> pass) {
        drain();
        ComputePool pool = ComputePool.current();
        CompletableFuture<T> done = new CompletableFuture<>();
        failed = false;
        rankThread = Thread.currentThread();
        CountDownLatch ended = new CountDownLatch(1);
        if (helper == null) {
            helper = Executors.newSingleThreadExecutor(r -> Thread.ofPlatform().daemon(true).name(name + "-pass").unstarted(r));
        }
        helper.execute(() -> {
            Thread.currentThread().setName(name + "-" + passName);
            try {
                ComputePool.runWith(pool, () -> done.complete(pass.get()));
            } catch (Throwable e) {
                done.completeExceptionally(e);
            } finally {
                queue.add(DONE);
                ended.countDown();
            }
        });
        Throwable failure = null;
        boolean interrupted = false;
        try {
            while (true) {
                FutureTask<?> task = queue.take();
                if (task == DONE) break;
                if (failure != null) {
                    task.cancel(false);
                    continue;
                }
                if (done.isDone()) {        // the pass has finished: the rest is exposed, for drain() to run and time
                    leftover.add(task);
                    break;
                }
                task.run();
                if (task.state() == Future.State.FAILED) {
                    failure = task.exceptionNow();
                    failed = true;
                }
            }
        } catch (InterruptedException e) {
            interrupted = true;
            failed = true;
            failure = new IllegalStateException(name + ": interrupted while " + passName + " was running", e);
        } finally {
            // rankThread stays set until the helper has ended, so none of its posts runs on the helper itself;
            // with failed set they are cancelled at once, and what is queued is cancelled here so it stops waiting.
            while (ended.getCount() > 0) {
                if (failure != null) {
                    queue.drainTo(leftover);
                    cancelLeftover();
                }
                try {
                    ended.await(10, TimeUnit.MILLISECONDS);
                } catch (InterruptedException e) {
                    interrupted = true;
                }
            }
            rankThread = null;
            if (interrupted) Thread.currentThread().interrupt();
        }
        queue.drainTo(leftover);
        if (failure != null) {
            cancelLeftover();
            throw unchecked(failure);
        }
        if (done.isCompletedExceptionally()) {
            cancelLeftover();
            throw unchecked(done.exceptionNow());
        }
        return done.resultNow();
    }

    /**
     * Runs {@code op} on the rank thread: queued behind earlier posts while {@link #run} is active and called from
     * the pass's thread, at once (after {@link #drain}) otherwise.
     *
     * @throws CancellationException (from the future) if an earlier collective failed
     */
    <T> Future<T> post(Callable<T> op) {
        FutureTask<T> task = new FutureTask<>(op);
        Thread rank = rankThread;
        if (rank != null && Thread.currentThread() != rank) {
            if (failed) {
                task.cancel(false);
            } else {
                queue.add(task);
            }
            return task;
        }
        drain();
        task.run();
        return task;
    }

    /** As {@link #post}, waiting for the result. */
    <T> T call(Callable<T> op) {
        return await(post(op));
    }

    /** The result of a {@link #post}ed operation, waiting for it. */
    static <T> T await(Future<T> future) {
        try {
            return future.get();
        } catch (ExecutionException e) {
            throw unchecked(e.getCause());
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException("interrupted while waiting for a collective", e);
        }
    }

    /** Runs the collectives still queued from the last pass, on this (the rank) thread. */
    void drain() {
        queue.drainTo(leftover);
        while (!leftover.isEmpty()) {
            FutureTask<?> task = leftover.poll();
            if (task == DONE) continue;
            task.run();
            if (task.state() == Future.State.FAILED) {
                cancelLeftover();
                throw unchecked(task.exceptionNow());
            }
        }
    }

    private void cancelLeftover() {
        for (FutureTask<?> t : leftover) t.cancel(false);
        leftover.clear();
    }

    /** {@code t} itself if unchecked (thrown as is by the caller's {@code throw}), else wrapped. */
    private static RuntimeException unchecked(Throwable t) {
        if (t instanceof RuntimeException re) return re;
        if (t instanceof Error e) throw e;
        return new IllegalStateException(t);
    }

    /** Cancels what is still queued (the update is being closed, e.g. after a failure) and ends the helper thread. */
    @Override
    public void close() {
        queue.drainTo(leftover);
        cancelLeftover();
        if (helper != null) helper.shutdown();
    }
}
