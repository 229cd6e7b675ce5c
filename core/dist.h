/* dist.h -- data parallelism: ranks, collectives with a deadline, and the data-parallel step.
 *
 * A she_dist_t is one rank of a job of world_size ranks.  Backends:
 *   single  world 1; every collective is a no-op (a mean of one is the value itself).
 *   mpi     CPU ranks started by `mpirun`: MPI_Iallreduce / MPI_Ibcast / MPI_Iallgather on a
 *           duplicate of MPI_COMM_WORLD (built with SHE_HAVE_MPI).
 *   tcp     CPU ranks without MPI (a Kubernetes StatefulSet, the tests): a star over TCP
 *           around rank 0, which receives every rank's data, reduces it in rank order and
 *           sends the result back.  Rank 0 moves (world-1) x bytes each way, so this is for a
 *           few ranks; use mpi for more.
 *   nccl    GPU ranks (built with SHE_HAVE_CUDA): ncclAllReduce on device buffers on a CUDA
 *           stream.  Host-side collectives (barrier, broadcast, allgather, host all-reduce) and
 *           the NCCL unique id travel over MPI when started by mpirun, else over the TCP star.
 *
 * Bootstrap (she_dist_config_from_env):
 *   mpirun      OMPI_COMM_WORLD_{SIZE,RANK,LOCAL_RANK} (Open MPI) or PMI_{SIZE,RANK} and
 *               MPI_LOCALRANKID (MPICH); MPI_Init_thread is called by she_dist_init.
 *   Kubernetes  SHE_WORLD_SIZE, the rank from SHE_RANK or else the StatefulSet ordinal (the
 *               hostname's "-N" suffix), SHE_LOCAL_RANK (default 0), SHE_MASTER_ADDR (a name
 *               that resolves to rank 0's pod: the headless Service's per-pod name, e.g.
 *               "learner-0.learner"), SHE_MASTER_PORT (default 29500).  Rank 0 listens on
 *               the address SHE_MASTER_ADDR resolves to, the others connect to it, retrying
 *               until the deadline (pods start in any order and DNS records appear late).
 *   neither     world 1.
 *
 * Deadlines and the watchdog.  Every collective, and she_dist_init's rendezvous (TCP, NCCL;
 * MPI_Init's own wire-up is mpirun's), must finish within cfg.timeout_s seconds of this rank
 * entering it (the clock does not care why a peer is late: a crashed, hung or merely slow
 * rank all look the same, so the deadline must exceed the longest honest wait, e.g. rank 0
 * writing a checkpoint while the others wait in the next collective).  MPI: the non-blocking
 * call is polled with MPI_Test until done or the deadline.  NCCL: the communicator is non-blocking;
 * the stream and ncclCommGetAsyncError are polled, and on the deadline or an asynchronous
 * error the communicator is aborted (ncclCommAbort) so that no kernel stays spinning.  TCP:
 * every send and receive polls with the time left, and a closed connection fails at once.
 * On failure the call returns SHE_ERR_TIMEOUT (deadline) or SHE_ERR_IO / SHE_ERR_MPI /
 * SHE_ERR_CUDA (a peer vanished, a library error) with a message naming the operation, its
 * sequence number, the rank waited for where known, and the seconds elapsed.  The handle is
 * then failed for good: every later collective returns the same error and message at once,
 * since the ranks no longer agree on where they are.  The caller logs the message and ends
 * the job with she_dist_abort, which takes the other ranks down too (MPI_Abort under mpirun;
 * a Kubernetes Job or StatefulSet restarts the pods from the last checkpoint).
 *
 * Same bits on every rank: the star computes each reduced element once, at rank 0, and sends
 * it to all; Open MPI's and NCCL's all-reduce algorithms (ring, tree, recursive doubling) give
 * every rank the same bits too, though MPI does not promise it -- tests/test_dist checks it for
 * 2 ranks.  Identical optimizer steps then keep the parameters bit-identical across ranks.
 *
 * Not here: sharding the data (`she learn` gives rank r the partitions p with p % world == r),
 * the checkpoint format (rank 0 writes the offsets gathered with she_dist_allgather_i64). */
#ifndef SHE_DIST_H
#define SHE_DIST_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "model.h"
#include "optim.h"

typedef enum she_dist_backend {
    SHE_DIST_AUTO = 0, /* single for world 1, else mpi under mpirun, else tcp */
    SHE_DIST_SINGLE,
    SHE_DIST_MPI,
    SHE_DIST_TCP,
    SHE_DIST_NCCL,     /* never chosen by AUTO: the caller knows whether it runs on GPUs */
} she_dist_backend_t;

typedef enum she_dist_launcher {
    SHE_DIST_LAUNCHER_NONE = 0, /* a lone process */
    SHE_DIST_LAUNCHER_MPIRUN,   /* started by mpirun / mpiexec */
    SHE_DIST_LAUNCHER_ENV,      /* SHE_WORLD_SIZE and friends (Kubernetes, tests) */
} she_dist_launcher_t;

typedef enum she_dist_op {
    SHE_DIST_SUM = 0,
    SHE_DIST_MEAN, /* the sum times 1/world_size */
} she_dist_op_t;

#define SHE_DIST_DEFAULT_PORT 29500
#define SHE_DIST_DEFAULT_TIMEOUT_S 600.0

typedef struct she_dist_config {
    she_dist_backend_t backend;
    she_dist_launcher_t launcher;
    int world_size;        /* >= 1 */
    int rank;              /* 0 .. world_size-1 */
    int local_rank;        /* rank among this host's ranks: picks the CUDA device */
    char master_addr[256]; /* tcp, and nccl outside mpirun: rank 0's host name or address */
    int master_port;
    double timeout_s;      /* deadline of every collective and of the rendezvous; <= 0: default */
    int cuda_device;       /* nccl: the device to use; -1 = local_rank */
} she_dist_config_t;

/* The ordinal N of a StatefulSet pod's hostname "name-N" (the digits after the last '-');
 * -1 when the hostname does not end that way. */
int she_dist_hostname_ordinal(const char *hostname);

/* Fills cfg (backend AUTO, default port and timeout, cuda_device -1) from the environment as
 * described above.  SHE_ERR_CONFIG naming the variable when a value is malformed or out of
 * range, when SHE_WORLD_SIZE > 1 without SHE_MASTER_ADDR, or when neither SHE_RANK nor the
 * hostname gives a rank.  The caller may then change backend, timeout_s or cuda_device. */
she_err_t she_dist_config_from_env(she_dist_config_t *cfg, char *errstr, size_t errstr_size);

typedef struct she_dist she_dist_t;

/* Joins the job: resolves AUTO, initialises MPI when the backend (or nccl's host side) needs
 * it, runs the TCP rendezvous, creates the NCCL communicator (making cfg->cuda_device, or
 * local_rank, the calling thread's current device), all within cfg->timeout_s.
 * Returns SHE_ERR_INVALID for a bad config, SHE_ERR_UNSUPPORTED for a backend this build lacks
 * (mpi without SHE_HAVE_MPI, nccl without SHE_HAVE_CUDA), SHE_ERR_TIMEOUT when the other ranks
 * do not show up in time, SHE_ERR_IO / SHE_ERR_MPI / SHE_ERR_CUDA from the layers below;
 * *out is NULL then.  Free with she_dist_free. */
she_err_t she_dist_init(const she_dist_config_t *cfg, she_dist_t **out, char *errstr,
                        size_t errstr_size);
/* Leaves the job: closes sockets, destroys the NCCL communicator, finalises MPI if
 * she_dist_init initialised it -- except after a failure, when MPI_Finalize could wait forever
 * for the lost rank and is skipped (exit non-zero, or better she_dist_abort).  MPI cannot be
 * initialised again once finalised, so a process joins at most one MPI job.  NULL allowed. */
void she_dist_free(she_dist_t *d);
/* Ends this process with exit code `code` and, as far as the backend can, the whole job:
 * MPI_Abort under MPI, ncclCommAbort under NCCL; tcp peers see the connection close and fail
 * their next collective at once.  For a failed collective; never returns. */
void she_dist_abort(she_dist_t *d, int code) __attribute__((noreturn));

/* 1 once a collective (or init) failed: the handle refuses every later one and the job must
 * end (she_dist_abort). */
int she_dist_failed(const she_dist_t *d);
int she_dist_rank(const she_dist_t *d);
int she_dist_world(const she_dist_t *d);
int she_dist_local_rank(const she_dist_t *d);
she_dist_backend_t she_dist_backend(const she_dist_t *d);
const char *she_dist_backend_name(she_dist_backend_t backend);
/* One line for the log: "rank 1/2 (mpi, local rank 1, timeout 600 s)". */
void she_dist_describe(const she_dist_t *d, char *out, size_t out_size);

/* ---- collectives on host memory; every rank calls each one in the same order ---- */

/* buf[0, n) becomes the element-wise sum (or mean) over ranks, the same bits on every rank.
 * Under nccl this goes over the host side (MPI or TCP), not the GPUs. */
she_err_t she_dist_allreduce(she_dist_t *d, float *buf, size_t n, she_dist_op_t op,
                             char *errstr, size_t errstr_size);
/* buf[0, bytes) of rank `root` is copied into buf on every rank (initial parameters, a
 * checkpoint's offsets, a config). */
she_err_t she_dist_broadcast(she_dist_t *d, void *buf, size_t bytes, int root, char *errstr,
                             size_t errstr_size);
/* Returns on each rank once every rank has entered it. */
she_err_t she_dist_barrier(she_dist_t *d, char *errstr, size_t errstr_size);
/* all[r * bytes, (r + 1) * bytes) = rank r's mine[0, bytes): the same size on every rank (pad
 * to the largest, sent first, for data of varying size). */
she_err_t she_dist_allgather(she_dist_t *d, const void *mine, size_t bytes, void *all,
                             char *errstr, size_t errstr_size);
/* all[r * n + i] = rank r's mine[i], for n values per rank (all holds world_size * n): e.g.
 * every rank's Kafka offsets, for rank 0's checkpoint. */
she_err_t she_dist_allgather_i64(she_dist_t *d, const int64_t *mine, size_t n, int64_t *all,
                                 char *errstr, size_t errstr_size);
/* *total = the sum over ranks of `mine` (token or sequence counts for the loss normaliser). */
she_err_t she_dist_sum_i64(she_dist_t *d, int64_t mine, int64_t *total, char *errstr,
                           size_t errstr_size);

/* Checks that every rank holds the same bytes buf[0, bytes) (e.g. the parameters after
 * identical optimizer steps): a 64-bit hash of each rank's copy is gathered and compared, so
 * it moves 8 bytes per rank, not the buffer.  SHE_ERR_INVALID naming `what` and the ranks
 * whose copies differ from rank 0's; the collective errors otherwise.  Every rank gets the
 * same answer. */
she_err_t she_dist_check_identical(she_dist_t *d, const void *buf, size_t bytes,
                                   const char *what, char *errstr, size_t errstr_size);

/* ---- collectives on device memory (nccl) ---- */

/* As she_dist_allreduce on device memory dbuf[0, n), enqueued on `cuda_stream` (a
 * cudaStream_t; NULL = the handle's own stream) and waited for: the deadline covers
 * everything queued on that stream before it too.  SHE_ERR_UNSUPPORTED unless the backend
 * is nccl. */
she_err_t she_dist_allreduce_device(she_dist_t *d, float *dbuf, size_t n, she_dist_op_t op,
                                    void *cuda_stream, char *errstr, size_t errstr_size);

/* ---- the data-parallel training step on the CPU engine ----
 *
 * The three calls of a step, on every rank:
 *   1. forward/backward on this rank's shard of the batch (she_model_zero_grad, then
 *      she_model_forward/she_model_backward, as often as for gradient accumulation);
 *   2. all-reduce of m->grads;
 *   3. the same AdamW step (she_model_adamw_step) with the same arguments.
 * she_dist_train_step does 2 and 3.  It SUMS the gradients, so it reproduces the single-rank
 * run on the combined batch exactly (up to float summation order) when each rank's loss is
 * normalised by the count over the COMBINED batch: for a token-mean loss
 *     L = -(1 / N) sum over all tokens of all ranks of logp,   N = she_dist_sum_i64(n_r),
 * each rank back-propagates dL/dlogp = -1/N on its own tokens.  Normalising by the rank's own
 * count n_r instead and averaging (op MEAN) gives (1/W) sum_r (1/n_r) sum_{tokens of r}, which
 * equals the token mean only when every rank has the same count: with padding or unequal
 * shards it weights the tokens of short shards more.  The same holds for sequence-mean or
 * group-mean losses (GRPO, SRPO, DPO): divide by the global count of the unit averaged over.
 * Gradient clipping sees the summed gradient, so its norm is the combined batch's. */

/* All-reduce (sum) of m->grads, then she_model_adamw_step(m, opt, hp, lr, grad_scale,
 * max_grad_norm); *grad_norm (may be NULL) receives its return value.  On a failed all-reduce
 * the parameters are not touched. */
she_err_t she_dist_train_step(she_dist_t *d, she_model_t *m, she_adamw_t *opt,
                              const she_adamw_config_t *hp, float lr, float grad_scale,
                              float max_grad_norm, float *grad_norm, char *errstr,
                              size_t errstr_size);

/* ---- benchmark (`she bench`) ---- */

typedef struct she_dist_bench {
    double seconds;     /* mean time of one all-reduce, the slowest rank's */
    double algbw_gbs;   /* bytes / seconds, 1e9 bytes per GB */
    double busbw_gbs;   /* algbw * 2 (world-1) / world: what each link carries (nccl-tests) */
} she_dist_bench_t;

/* Times `reps` SUM all-reduces of `bytes` bytes of floats (after 2 warm-ups) on every rank:
 * device memory for nccl, host memory otherwise.  Every rank must call it; all get the same
 * figures.  Errors as the collectives, SHE_ERR_NOMEM when the buffer cannot be had. */
she_err_t she_dist_bench_allreduce(she_dist_t *d, size_t bytes, int reps, she_dist_bench_t *out,
                                   char *errstr, size_t errstr_size);

#endif
