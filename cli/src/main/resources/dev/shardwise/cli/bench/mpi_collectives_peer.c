/*
 * The C peer of `shardwise bench collectives --backend mpi`: the same collectives as the Java mpi backend, driven
 * from C, so the FFM path can be compared with Open MPI used the usual way. The benchmark builds it with
 * `mpicc -O3 -march=native -shared -fPIC` and calls it (through FFM) from the very processes it measures, trial
 * by trial alternating with the Java calls, so both see the same machine, buffers and MPI job. MPI is already
 * initialised by the Java side; these functions use MPI_COMM_WORLD and blocking collectives.
 *
 *   double shardwise_peer_trial(int op, float *a, float *b, float *stage, long count, int iters)
 *
 * One trial: MPI_Barrier, `iters` calls of `op` on a [count] (b and stage as the op needs), MPI_Barrier; returns
 * this rank's seconds per call (MPI_Wtime). Operations:
 *   0 allreduce_native          MPI_Allreduce(MPI_IN_PLACE, a, SUM): Open MPI's own algorithm and order
 *   1 allreduce_rank_order      the Java backend's algorithm: MPI_Alltoallv of chunk p to rank p, sum in rank
 *                               order 0..n-1, MPI_Allgatherv in place (bit-reproducible; like for like)
 *   2 reducescatter_rank_order  the first half of that, into b [count / n]
 *   3 allgather                 MPI_Allgather of b [count / n] into a
 *   4 alltoall                  MPI_Alltoall of a into b, count / n to each rank
 */
#include <mpi.h>
#include <stdlib.h>

static long chunk_at(long count, int p, int n) { return count * p / n; }

/* buf [count]: chunk p goes to rank p; this rank sums its chunk over ranks 0..n-1 into out [its chunk]. */
static void reduce_scatter_rank_order(float *buf, long count, float *out, float *stage, int *scount, int *sdisp,
                                      int *rcount, int *rdisp, int rank, int n) {
    long lo = chunk_at(count, rank, n), mine = chunk_at(count, rank + 1, n) - lo;
    for (int p = 0; p < n; p++) {
        long plo = chunk_at(count, p, n), plen = chunk_at(count, p + 1, n) - plo;
        scount[p] = p == rank ? 0 : (int) plen;
        sdisp[p] = (int) plo;
        rcount[p] = p == rank ? 0 : (int) mine;
        rdisp[p] = (int) (p * mine);
    }
    MPI_Alltoallv(buf, scount, sdisp, MPI_FLOAT, stage, rcount, rdisp, MPI_FLOAT, MPI_COMM_WORLD);
    /* out = ((src0 + src1) + src2) + ...: rank order per element; each pass is a plain loop the compiler
       vectorizes. Rank `rank`'s contribution is its own chunk (buf + lo), the others are in stage. When out is
       that chunk (allreduce), pass 0 moves it to stage's free slot first, so no source is overwritten early. */
    float *own = buf + lo;
    if (out == own) {
        for (long i = 0; i < mine; i++) stage[rank * mine + i] = own[i];
        own = stage + rank * mine;
    }
    const float *src0 = rank == 0 ? own : stage;
    for (long i = 0; i < mine; i++) out[i] = src0[i];
    for (int p = 1; p < n; p++) {
        const float *src = p == rank ? own : stage + p * mine;
        for (long i = 0; i < mine; i++) out[i] += src[i];
    }
}

double shardwise_peer_trial(int op, float *a, float *b, float *stage, long count, int iters) {
    int rank, n;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &n);
    int *counts = malloc(4 * n * sizeof(int));
    int *scount = counts, *sdisp = counts + n, *rcount = counts + 2 * n, *rdisp = counts + 3 * n;
    int chunk = (int) (count / n);
    MPI_Barrier(MPI_COMM_WORLD);
    double start = MPI_Wtime();
    for (int i = 0; i < iters; i++) {
        switch (op) {
            case 0:
                MPI_Allreduce(MPI_IN_PLACE, a, (int) count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
                break;
            case 1:
                reduce_scatter_rank_order(a, count, a + chunk_at(count, rank, n), stage, scount, sdisp, rcount, rdisp, rank, n);
                for (int p = 0; p < n; p++) {
                    rcount[p] = (int) (chunk_at(count, p + 1, n) - chunk_at(count, p, n));
                    rdisp[p] = (int) chunk_at(count, p, n);
                }
                MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_FLOAT, a, rcount, rdisp, MPI_FLOAT, MPI_COMM_WORLD);
                break;
            case 2:
                reduce_scatter_rank_order(a, count, b, stage, scount, sdisp, rcount, rdisp, rank, n);
                break;
            case 3:
                MPI_Allgather(b, chunk, MPI_FLOAT, a, chunk, MPI_FLOAT, MPI_COMM_WORLD);
                break;
            default:
                MPI_Alltoall(a, chunk, MPI_FLOAT, b, chunk, MPI_FLOAT, MPI_COMM_WORLD);
        }
    }
    MPI_Barrier(MPI_COMM_WORLD);
    double seconds = (MPI_Wtime() - start) / iters;
    free(counts);
    return seconds;
}
