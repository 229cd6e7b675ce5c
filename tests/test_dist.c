/* test_dist.c -- the data-parallel layer (core/dist.h).
 *
 * Without arguments (ctest test_dist), in one process and processes it forks, on 127.0.0.1:
 *   - StatefulSet ordinals and the bootstrap from environment variables;
 *   - the single backend: every collective a no-op, the train step == a plain AdamW step;
 *   - the TCP star between 2 processes: broadcast from either root, barrier, allgather,
 *     allreduce sum and mean of a buffer larger than rank 0's scratch, exact values;
 *   - the deadlines: no peer at rendezvous (either side), a peer that hangs (the collective
 *     fails within the deadline naming the rank and the operation, and the handle stays
 *     failed), a peer that exits (fails at once), ranks calling different collectives;
 *   - 2 TCP ranks on half batches == 1 rank on the combined batch (as under MPI below).
 * With an argument, the modes tests/test_dist_mpi.sh runs under `mpirun -np 2`:
 *   --mpi-parity  the acceptance test: 2 ranks each holding half of a batch (unequal token
 *                 counts) reach the same parameters after K=3 AdamW steps as 1 rank on the
 *                 combined batch, bit-identical across ranks; per-rank-mean normalisation is
 *                 shown to miss; then the all-reduce bandwidth figure;
 *   --mpi-lost    rank 1 hangs; rank 0's all-reduce must fail within its 2 s deadline with a
 *                 message naming the operation, then end the job with she_dist_abort(3).
 *   --parity-tcp RANK PORT  one rank of the TCP parity run (exec'd by test_tcp_parity).
 * --nccl (ctest test_dist_nccl, label gpu; skips without a CUDA device): sum and mean of a
 * device buffer on one GPU and the bandwidth; with two GPUs, 2 ranks bootstrapped over the
 * TCP rendezvous (as under Kubernetes) and a hung rank whose peer's all-reduce times out. */
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/cuda_device.h"
#include "core/dist.h"
#include "core/model.h"
#include "test.h"

#ifdef SHE_HAVE_CUDA
#include <cuda_runtime.h>
#endif

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* A port nobody listens on right now: bind to 127.0.0.1:0 and read what the kernel chose. */
static int free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(a);
    SHE_ASSERT(fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
               getsockname(fd, (struct sockaddr *)&a, &len) == 0);
    close(fd);
    return ntohs(a.sin_port);
}

static she_dist_config_t tcp_config(int rank, int port, double timeout_s) {
    she_dist_config_t c = {0};
    c.backend = SHE_DIST_TCP;
    c.launcher = SHE_DIST_LAUNCHER_ENV;
    c.world_size = 2;
    c.rank = rank;
    snprintf(c.master_addr, sizeof(c.master_addr), "127.0.0.1");
    c.master_port = port;
    c.timeout_s = timeout_s;
    c.cuda_device = -1;
    return c;
}

/* Forks rank 1 running fn(port); the child exits 0 when all its checks passed. */
static pid_t fork_rank1(void (*fn)(int port), int port) {
    fflush(NULL);
    pid_t pid = fork();
    SHE_ASSERT(pid >= 0);
    if (pid == 0) {
        int failed_before = test_checks_failed_; /* the parent's count came along */
        fn(port);
        fflush(NULL);
        _exit(test_checks_failed_ > failed_before ? 1 : 0);
    }
    return pid;
}

/* The child's exit status, or -1 after killing it when it outlives timeout_s. */
static int wait_child(pid_t pid, double timeout_s) {
    double deadline = now_s() + timeout_s;
    int status;
    while (waitpid(pid, &status, WNOHANG) == 0) {
        if (now_s() > deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            return -1;
        }
        usleep(10000);
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* ---- bootstrap ---- */

static void test_hostname_ordinal(void) {
    CHECK_EQ_INT(she_dist_hostname_ordinal("learner-0"), 0);
    CHECK_EQ_INT(she_dist_hostname_ordinal("she-learner-12"), 12);
    CHECK_EQ_INT(she_dist_hostname_ordinal("learner"), -1);
    CHECK_EQ_INT(she_dist_hostname_ordinal("learner-"), -1);
    CHECK_EQ_INT(she_dist_hostname_ordinal("learner-1a"), -1);
    CHECK_EQ_INT(she_dist_hostname_ordinal("learner-99999999999"), -1);
}

static void clear_env(void) {
    const char *vars[] = {"OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK",
                          "OMPI_COMM_WORLD_LOCAL_RANK", "PMI_SIZE", "PMI_RANK",
                          "MPI_LOCALRANKID", "SHE_WORLD_SIZE", "SHE_RANK", "SHE_LOCAL_RANK",
                          "SHE_MASTER_ADDR", "SHE_MASTER_PORT"};
    for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
        unsetenv(vars[i]);
}

static void test_config_from_env(void) {
    char errstr[512];
    she_dist_config_t c;
    clear_env();
    CHECK_OK(she_dist_config_from_env(&c, errstr, sizeof(errstr)));
    CHECK_EQ_INT(c.world_size, 1);
    CHECK_EQ_INT(c.launcher, SHE_DIST_LAUNCHER_NONE);
    CHECK_EQ_INT(c.master_port, SHE_DIST_DEFAULT_PORT);

    setenv("OMPI_COMM_WORLD_SIZE", "4", 1);
    setenv("OMPI_COMM_WORLD_RANK", "3", 1);
    setenv("OMPI_COMM_WORLD_LOCAL_RANK", "1", 1);
    CHECK_OK(she_dist_config_from_env(&c, errstr, sizeof(errstr)));
    CHECK_EQ_INT(c.launcher, SHE_DIST_LAUNCHER_MPIRUN);
    CHECK_EQ_INT(c.world_size, 4);
    CHECK_EQ_INT(c.rank, 3);
    CHECK_EQ_INT(c.local_rank, 1);
    setenv("OMPI_COMM_WORLD_RANK", "4", 1);
    CHECK_EQ_INT(she_dist_config_from_env(&c, errstr, sizeof(errstr)), SHE_ERR_CONFIG);
    CHECK(strstr(errstr, "OMPI_COMM_WORLD_RANK") != NULL);
    clear_env();

    /* Kubernetes: the ordinal comes from SHE_RANK here (the hostname is the test machine's) */
    setenv("SHE_WORLD_SIZE", "3", 1);
    setenv("SHE_RANK", "2", 1);
    CHECK_EQ_INT(she_dist_config_from_env(&c, errstr, sizeof(errstr)), SHE_ERR_CONFIG);
    CHECK(strstr(errstr, "SHE_MASTER_ADDR") != NULL);
    setenv("SHE_MASTER_ADDR", "learner-0.learner", 1);
    setenv("SHE_MASTER_PORT", "29511", 1);
    CHECK_OK(she_dist_config_from_env(&c, errstr, sizeof(errstr)));
    CHECK_EQ_INT(c.launcher, SHE_DIST_LAUNCHER_ENV);
    CHECK_EQ_INT(c.world_size, 3);
    CHECK_EQ_INT(c.rank, 2);
    CHECK_EQ_INT(c.local_rank, 0);
    CHECK_STR(c.master_addr, "learner-0.learner");
    CHECK_EQ_INT(c.master_port, 29511);
    setenv("SHE_MASTER_PORT", "70000", 1);
    CHECK_EQ_INT(she_dist_config_from_env(&c, errstr, sizeof(errstr)), SHE_ERR_CONFIG);
    CHECK(strstr(errstr, "SHE_MASTER_PORT") != NULL);
    setenv("SHE_MASTER_PORT", "29511", 1);
    setenv("SHE_WORLD_SIZE", "two", 1);
    CHECK_EQ_INT(she_dist_config_from_env(&c, errstr, sizeof(errstr)), SHE_ERR_CONFIG);
    CHECK(strstr(errstr, "SHE_WORLD_SIZE") != NULL);
    clear_env();
}

/* ---- single backend ---- */

static void test_single(void) {
    char errstr[512];
    she_dist_config_t c = {0};
    c.world_size = 1;
    c.timeout_s = 5;
    she_dist_t *d = NULL;
    REQUIRE_OK(she_dist_init(&c, &d, errstr, sizeof(errstr)));
    CHECK_EQ_INT(she_dist_backend(d), SHE_DIST_SINGLE);
    CHECK_EQ_INT(she_dist_world(d), 1);
    CHECK_EQ_INT(she_dist_rank(d), 0);
    float x[3] = {1.5f, -2.0f, 3.25f};
    CHECK_OK(she_dist_allreduce(d, x, 3, SHE_DIST_SUM, errstr, sizeof(errstr)));
    CHECK_OK(she_dist_allreduce(d, x, 3, SHE_DIST_MEAN, errstr, sizeof(errstr)));
    CHECK(x[0] == 1.5f && x[1] == -2.0f && x[2] == 3.25f);
    char blob[4] = "abc";
    CHECK_OK(she_dist_broadcast(d, blob, 4, 0, errstr, sizeof(errstr)));
    CHECK_STR(blob, "abc");
    CHECK_EQ_INT(she_dist_broadcast(d, blob, 4, 1, errstr, sizeof(errstr)), SHE_ERR_INVALID);
    CHECK_OK(she_dist_barrier(d, errstr, sizeof(errstr)));
    int64_t mine[2] = {7, -9}, all[2] = {0, 0}, total = 0;
    CHECK_OK(she_dist_allgather_i64(d, mine, 2, all, errstr, sizeof(errstr)));
    CHECK(all[0] == 7 && all[1] == -9);
    CHECK_OK(she_dist_sum_i64(d, 41, &total, errstr, sizeof(errstr)));
    CHECK_EQ_INT(total, 41);
    CHECK_EQ_INT(she_dist_allreduce_device(d, x, 3, SHE_DIST_SUM, NULL, errstr, sizeof(errstr)),
                 SHE_ERR_UNSUPPORTED);
    she_dist_bench_t bw;
    CHECK_OK(she_dist_bench_allreduce(d, 1 << 16, 3, &bw, errstr, sizeof(errstr)));
    CHECK(bw.seconds > 0 && bw.busbw_gbs == 0.0); /* 2(n-1)/n is 0 for one rank */

    /* the train step of one rank is exactly the AdamW step */
    she_model_config_t mc = {0};
    snprintf(mc.model_type, sizeof(mc.model_type), "llama");
    mc.vocab_size = 16, mc.hidden_size = 8, mc.intermediate_size = 16, mc.n_layers = 1;
    mc.n_heads = 2, mc.n_kv_heads = 1, mc.max_position_embeddings = 8;
    mc.rope_theta = 10000, mc.rms_norm_eps = 1e-6;
    she_model_t *m1 = NULL, *m2 = NULL;
    REQUIRE_OK(she_model_new(&mc, 1, 4, &m1, errstr, sizeof(errstr)));
    REQUIRE_OK(she_model_new(&mc, 1, 4, &m2, errstr, sizeof(errstr)));
    she_model_init_weights(m1, 3, 0.02f);
    she_model_init_weights(m2, 3, 0.02f);
    for (size_t i = 0; i < m1->n_params; i++)
        m1->grads[i] = m2->grads[i] = (float)((int)(i % 7) - 3) * 1e-3f;
    she_adamw_t *o1 = she_adamw_new(m1->n_params), *o2 = she_adamw_new(m2->n_params);
    she_adamw_config_t hp = she_adamw_defaults();
    float norm = 0;
    CHECK_OK(she_dist_train_step(d, m1, o1, &hp, 1e-3f, 1.0f, 1.0f, &norm, errstr, sizeof(errstr)));
    float ref = she_model_adamw_step(m2, o2, &hp, 1e-3f, 1.0f, 1.0f);
    CHECK(norm == ref);
    CHECK(memcmp(m1->params, m2->params, m1->n_params * sizeof(float)) == 0);
    she_adamw_free(o1), she_adamw_free(o2);
    she_model_free(m1), she_model_free(m2);
    she_dist_free(d);

    /* configurations init refuses */
    c.world_size = 2;
    c.backend = SHE_DIST_SINGLE;
    CHECK_EQ_INT(she_dist_init(&c, &d, errstr, sizeof(errstr)), SHE_ERR_INVALID);
    CHECK(d == NULL);
    c.backend = SHE_DIST_TCP;
    CHECK_EQ_INT(she_dist_init(&c, &d, errstr, sizeof(errstr)), SHE_ERR_INVALID);
    CHECK(strstr(errstr, "SHE_MASTER_ADDR") != NULL);
    c.rank = 2;
    CHECK_EQ_INT(she_dist_init(&c, &d, errstr, sizeof(errstr)), SHE_ERR_INVALID);
#ifndef SHE_HAVE_MPI
    c.rank = 0;
    c.backend = SHE_DIST_MPI;
    CHECK_EQ_INT(she_dist_init(&c, &d, errstr, sizeof(errstr)), SHE_ERR_UNSUPPORTED);
#endif
#ifndef SHE_HAVE_CUDA
    c.rank = 0;
    c.backend = SHE_DIST_NCCL;
    CHECK_EQ_INT(she_dist_init(&c, &d, errstr, sizeof(errstr)), SHE_ERR_UNSUPPORTED);
#endif
}

/* ---- the TCP star between two processes ---- */

/* Values rank r contributes to the allreduce: exact in float whatever the order of the sum. */
static float contribution(int r, size_t i) {
    return (float)((int)(i % 1000) - 500) * (float)(r + 1);
}

#define BIG ((size_t)700000) /* floats: more than rank 0's 1 MiB scratch, not a multiple of it */

static void collectives(int rank, int port) {
    char errstr[512];
    she_dist_config_t c = tcp_config(rank, port, 20.0);
    she_dist_t *d = NULL;
    REQUIRE_OK(she_dist_init(&c, &d, errstr, sizeof(errstr)));
    CHECK_EQ_INT(she_dist_backend(d), SHE_DIST_TCP);
    CHECK_EQ_INT(she_dist_rank(d), rank);

    char blob[100];
    for (int root = 0; root < 2; root++) {
        for (int i = 0; i < 100; i++)
            blob[i] = (char)(rank == root ? i * 3 + root : -1);
        CHECK_OK(she_dist_broadcast(d, blob, sizeof(blob), root, errstr, sizeof(errstr)));
        int ok = 1;
        for (int i = 0; i < 100; i++)
            ok &= blob[i] == (char)(i * 3 + root);
        CHECK_MSG(ok, "rank %d: broadcast from %d", rank, root);
    }
    CHECK_OK(she_dist_barrier(d, errstr, sizeof(errstr)));

    int64_t mine[3] = {rank * 100 + 1, rank * 100 + 2, -rank}, all[6];
    CHECK_OK(she_dist_allgather_i64(d, mine, 3, all, errstr, sizeof(errstr)));
    CHECK(all[0] == 1 && all[1] == 2 && all[2] == 0 && all[3] == 101 && all[4] == 102 &&
          all[5] == -1);
    int64_t total = 0;
    CHECK_OK(she_dist_sum_i64(d, 10 + rank, &total, errstr, sizeof(errstr)));
    CHECK_EQ_INT(total, 21);

    float *x = malloc(BIG * sizeof(float));
    REQUIRE(x != NULL);
    for (size_t i = 0; i < BIG; i++)
        x[i] = contribution(rank, i);
    CHECK_OK(she_dist_allreduce(d, x, BIG, SHE_DIST_SUM, errstr, sizeof(errstr)));
    size_t bad = 0;
    for (size_t i = 0; i < BIG; i++)
        bad += x[i] != contribution(0, i) + contribution(1, i);
    CHECK_MSG(bad == 0, "rank %d: %zu wrong sums", rank, bad);
    /* both ranks now hold s = c0 + c1: their mean is s again */
    CHECK_OK(she_dist_allreduce(d, x, BIG, SHE_DIST_MEAN, errstr, sizeof(errstr)));
    bad = 0;
    for (size_t i = 0; i < BIG; i++)
        bad += x[i] != contribution(0, i) + contribution(1, i);
    CHECK_MSG(bad == 0, "rank %d: %zu wrong means", rank, bad);
    free(x);

    she_dist_bench_t bw;
    CHECK_OK(she_dist_bench_allreduce(d, 1 << 20, 3, &bw, errstr, sizeof(errstr)));
    CHECK(bw.seconds > 0 && bw.busbw_gbs > 0 && bw.busbw_gbs == bw.algbw_gbs);
    she_dist_free(d);
}

static void collectives_rank1(int port) { collectives(1, port); }

static void test_tcp_collectives(void) {
    int port = free_port();
    pid_t pid = fork_rank1(collectives_rank1, port);
    collectives(0, port);
    CHECK_EQ_INT(wait_child(pid, 30), 0);
}

/* No peer ever comes: both sides of the rendezvous give up at the deadline, not later. */
static void test_tcp_no_peer(void) {
    char errstr[512];
    she_dist_t *d = NULL;
    for (int rank = 0; rank < 2; rank++) {
        she_dist_config_t c = tcp_config(rank, free_port(), 1.0);
        double t0 = now_s();
        CHECK_EQ_INT(she_dist_init(&c, &d, errstr, sizeof(errstr)), SHE_ERR_TIMEOUT);
        double dt = now_s() - t0;
        CHECK_MSG(dt >= 0.95 && dt < 2.5, "rank %d gave up after %.2f s", rank, dt);
        CHECK(d == NULL);
        CHECK_MSG(rank == 0 ? strstr(errstr, "never connected") && strstr(errstr, "(missing: 1)")
                            : strstr(errstr, "could not reach rank 0 at 127.0.0.1") != NULL,
                  "%s", errstr);
        fprintf(stderr, "   (expected) %s\n", errstr);
    }
}

static void hang_rank1(int port) {
    char errstr[512];
    she_dist_config_t c = tcp_config(1, port, 1.0);
    she_dist_t *d = NULL;
    REQUIRE_OK(she_dist_init(&c, &d, errstr, sizeof(errstr)));
    sleep(5); /* a hung rank: alive, connected, silent; the parent kills it sooner */
}

static void exit_rank1(int port) {
    char errstr[512];
    she_dist_config_t c = tcp_config(1, port, 1.0);
    she_dist_t *d = NULL;
    REQUIRE_OK(she_dist_init(&c, &d, errstr, sizeof(errstr)));
    /* a crashed rank: exits without a word, the kernel closes its socket */
}

static void mismatch_rank1(int port) {
    char errstr[512];
    she_dist_config_t c = tcp_config(1, port, 2.0);
    she_dist_t *d = NULL;
    REQUIRE_OK(she_dist_init(&c, &d, errstr, sizeof(errstr)));
    char b[8] = {0};
    CHECK(she_dist_broadcast(d, b, sizeof(b), 0, errstr, sizeof(errstr)) != SHE_OK);
    she_dist_free(d);
}

static void test_tcp_lost_rank(void) {
    char errstr[512];
    /* hung: the barrier fails at the deadline, naming rank, operation and time */
    int port = free_port();
    pid_t pid = fork_rank1(hang_rank1, port);
    she_dist_config_t c = tcp_config(0, port, 1.0);
    she_dist_t *d = NULL;
    REQUIRE_OK(she_dist_init(&c, &d, errstr, sizeof(errstr)));
    double t0 = now_s();
    CHECK_EQ_INT(she_dist_barrier(d, errstr, sizeof(errstr)), SHE_ERR_TIMEOUT);
    double dt = now_s() - t0;
    fprintf(stderr, "   (expected) %s\n", errstr);
    CHECK_MSG(dt >= 0.95 && dt < 2.0, "barrier gave up after %.2f s", dt);
    CHECK_MSG(strstr(errstr, "rank 0/2 (tcp): barrier #1") &&
                  strstr(errstr, "failed after 1.0 s") &&
                  strstr(errstr, "rank 1 did not send its part in time"),
              "%s", errstr);
    /* the handle stays failed, at once */
    t0 = now_s();
    float x = 1;
    CHECK_EQ_INT(she_dist_allreduce(d, &x, 1, SHE_DIST_SUM, errstr, sizeof(errstr)),
                 SHE_ERR_TIMEOUT);
    CHECK(now_s() - t0 < 0.1);
    CHECK(strstr(errstr, "an earlier collective failed") != NULL);
    she_dist_free(d);
    kill(pid, SIGKILL);
    wait_child(pid, 5);

    /* crashed: the next collective fails at once with the closed connection */
    port = free_port();
    pid = fork_rank1(exit_rank1, port);
    c = tcp_config(0, port, 5.0);
    REQUIRE_OK(she_dist_init(&c, &d, errstr, sizeof(errstr)));
    CHECK_EQ_INT(wait_child(pid, 5), 0);
    t0 = now_s();
    CHECK_EQ_INT(she_dist_allreduce(d, &x, 1, SHE_DIST_SUM, errstr, sizeof(errstr)), SHE_ERR_IO);
    CHECK(now_s() - t0 < 1.0);
    CHECK_MSG(strstr(errstr, "allreduce #1") && strstr(errstr, "rank 1 closed the connection"),
              "%s", errstr);
    fprintf(stderr, "   (expected) %s\n", errstr);
    she_dist_free(d);

    /* ranks in different collectives: refused, not mixed up */
    port = free_port();
    pid = fork_rank1(mismatch_rank1, port);
    c = tcp_config(0, port, 2.0);
    REQUIRE_OK(she_dist_init(&c, &d, errstr, sizeof(errstr)));
    CHECK_EQ_INT(she_dist_barrier(d, errstr, sizeof(errstr)), SHE_ERR_INVALID);
    CHECK_MSG(strstr(errstr, "rank 1 is in broadcast #1 of 0 bytes where this rank expects "
                             "barrier #1"),
              "%s", errstr);
    she_dist_free(d);
    CHECK_EQ_INT(wait_child(pid, 5), 0);
}

/* ---- 2 ranks on half batches == 1 rank on the combined batch ---- */

#define PB 4     /* rows of the combined batch */
#define PT 12    /* positions */
#define PSTEPS 3 /* K */
/* Tolerances.  The two runs differ only in the summation order of each weight gradient (two
 * half-batch GEMMs plus the all-reduce against one whole-batch GEMM), so
 *   gradients, every step: |dist - single| <= GTOL * max|single| (float rounding, through
 *     the whole backward, of sums whose terms are at most the largest gradient; measured
 *     ~1e-6 of it with OpenBLAS on x86-64);
 *   parameters after K steps: |dist - single| <= PTOL.  AdamW's step is lr * m/(sqrt(v)+eps):
 *     a coordinate whose gradient cancels to about eps = 1e-8 turns an absolute gradient
 *     error of 1e-10 (1e-7 of a 1e-3 term) into a ~1% change of its step, so parameters agree
 *     to a fraction of lr, not to float precision: PTOL = lr K / 100 (measured ~4e-6).
 * The wrong normalisation (per-rank token mean, averaged) must miss by more than 10 PTOL. */
#define GTOL 1e-5
#define PTOL (P_LR * PSTEPS / 100.0)

static she_model_config_t parity_config(void) {
    she_model_config_t c = {0};
    snprintf(c.model_type, sizeof(c.model_type), "qwen2");
    c.vocab_size = 64, c.hidden_size = 32, c.intermediate_size = 48, c.n_layers = 2;
    c.n_heads = 4, c.n_kv_heads = 2, c.max_position_embeddings = 32;
    c.rope_theta = 10000, c.rms_norm_eps = 1e-6, c.attention_bias = 1;
    return c;
}

/* Step k's combined batch: next-token targets; rows 0-1 long, rows 2-3 short, so the two
 * halves hold very different token counts and normalisation matters. */
static void parity_batch(int k, int32_t *tok, int32_t *tgt, uint8_t *mask) {
    uint64_t s = 77 + (uint64_t)k;
    static const int len[PB] = {12, 11, 5, 3};
    for (int r = 0; r < PB * PT; r++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        tok[r] = (int32_t)((s >> 33) % 64);
    }
    for (int b = 0; b < PB; b++)
        for (int t = 0; t < PT; t++) {
            int r = b * PT + t, l = len[b] - (k % 2);
            mask[r] = t < l;
            tgt[r] = t + 1 < l ? tok[r + 1] : -1;
        }
}

/* Forward and backward of rows [row0, row0 + rows) of step k's batch with dL/dlogp = -scale
 * on every target (scale 0: 1 / this shard's own target count); returns that count. */
static int64_t shard_backward(she_model_t *m, int k, int row0, int rows, double scale) {
    char errstr[512];
    int32_t tok[PB * PT], tgt[PB * PT];
    uint8_t mask[PB * PT];
    float logp[PB * PT], dlogp[PB * PT];
    parity_batch(k, tok, tgt, mask);
    int o = row0 * PT, n = rows * PT;
    int64_t count = 0;
    for (int i = 0; i < n; i++)
        count += tgt[o + i] >= 0;
    for (int i = 0; i < n; i++)
        dlogp[i] = tgt[o + i] >= 0 ? (float)(-(scale > 0 ? scale : 1.0 / (double)count)) : 0.0f;
    she_model_zero_grad(m);
    SHE_ASSERT(she_model_forward(m, tok + o, mask + o, tgt + o, rows, PT, 1.0f, logp, NULL, errstr,
                                 sizeof(errstr)) == SHE_OK);
    she_model_backward(m, dlogp, NULL);
    return count;
}

static uint64_t fnv1a(const void *p, size_t n) {
    const unsigned char *b = p;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

static const float P_LR = 1e-3f, P_CLIP = 1.0f;

/* The acceptance test on an initialised 2-rank handle; returns the number of failed checks. */
static int parity_run(she_dist_t *d) {
    char errstr[512];
    int failed_before = test_checks_failed_, W = she_dist_world(d), rank = she_dist_rank(d);
    int rows = PB / W, row0 = rank * rows;
    she_model_config_t mc = parity_config();
    she_adamw_config_t hp = she_adamw_defaults();
    she_model_t *ref = NULL, *m = NULL;
    SHE_ASSERT(she_model_new(&mc, PB, PT, &ref, errstr, sizeof(errstr)) == SHE_OK);
    SHE_ASSERT(she_model_new(&mc, rows, PT, &m, errstr, sizeof(errstr)) == SHE_OK);
    she_adamw_t *ref_opt = she_adamw_new(ref->n_params), *opt = she_adamw_new(m->n_params);

    /* each step: 1 rank on the combined batch (token mean) and this rank's share of the same
     * (normalised by the global token count, gradients summed) */
    she_model_init_weights(ref, 7, 0.02f);
    if (rank == 0) /* rank 0's initial parameters for everyone */
        she_model_init_weights(m, 7, 0.02f);
    CHECK_OK(she_dist_broadcast(d, m->params, m->n_params * sizeof(float), 0, errstr,
                                sizeof(errstr)));
    double max_gdiff = 0;
    for (int k = 0; k < PSTEPS; k++) {
        shard_backward(ref, k, 0, PB, 0);
        float ref_norm = she_model_adamw_step(ref, ref_opt, &hp, P_LR, 1.0f, P_CLIP);

        int32_t tok[PB * PT], tgt[PB * PT];
        uint8_t mask[PB * PT];
        int64_t mine = 0, total = 0;
        parity_batch(k, tok, tgt, mask);
        for (int i = row0 * PT; i < (row0 + rows) * PT; i++)
            mine += tgt[i] >= 0;
        CHECK_OK(she_dist_sum_i64(d, mine, &total, errstr, sizeof(errstr)));
        shard_backward(m, k, row0, rows, 1.0 / (double)total);
        float norm = 0;
        CHECK_OK(she_dist_train_step(d, m, opt, &hp, P_LR, 1.0f, P_CLIP, &norm, errstr,
                                     sizeof(errstr)));
        CHECK_CLOSE(norm, ref_norm, 0, 1e-5);
        double gmax = 0, gdiff = 0;
        for (size_t i = 0; i < m->n_params; i++) {
            double r = fabs(ref->grads[i]), e = fabs((double)m->grads[i] - ref->grads[i]);
            gmax = r > gmax ? r : gmax;
            gdiff = e > gdiff ? e : gdiff;
        }
        CHECK_MSG(gdiff <= GTOL * gmax, "step %d: gradients differ by %.3g (max |g| %.3g)", k,
                  gdiff, gmax);
        max_gdiff = gdiff / gmax > max_gdiff ? gdiff / gmax : max_gdiff;
    }
    double max_diff = 0;
    for (size_t i = 0; i < m->n_params; i++) {
        double diff = fabs((double)m->params[i] - ref->params[i]);
        max_diff = diff > max_diff ? diff : max_diff;
    }
    CHECK_MSG(max_diff <= PTOL, "rank %d: parameters differ by up to %.3g", rank, max_diff);
    int64_t *hashes = malloc((size_t)W * sizeof(int64_t));
    int64_t h = (int64_t)fnv1a(m->params, m->n_params * sizeof(float));
    CHECK_OK(she_dist_allgather_i64(d, &h, 1, hashes, errstr, sizeof(errstr)));
    for (int r = 1; r < W; r++)
        CHECK_MSG(hashes[r] == hashes[0], "rank %d's parameters differ from rank 0's", r);
    free(hashes);

    /* the wrong normalisation: each rank's own token mean, averaged over ranks */
    she_model_init_weights(m, 7, 0.02f);
    she_adamw_free(opt);
    opt = she_adamw_new(m->n_params);
    for (int k = 0; k < PSTEPS; k++) {
        shard_backward(m, k, row0, rows, 0);
        CHECK_OK(she_dist_allreduce(d, m->grads, m->n_params, SHE_DIST_MEAN, errstr,
                                    sizeof(errstr)));
        she_model_adamw_step(m, opt, &hp, P_LR, 1.0f, P_CLIP);
    }
    double wrong_diff = 0;
    for (size_t i = 0; i < m->n_params; i++) {
        double diff = fabs((double)m->params[i] - ref->params[i]);
        wrong_diff = diff > wrong_diff ? diff : wrong_diff;
    }
    CHECK_MSG(wrong_diff > 10 * PTOL, "per-rank mean should miss: max diff %.3g", wrong_diff);
    printf("rank %d/%d: %d AdamW steps, dist vs single rank: gradients within %.2g of max|g| "
           "(tolerance %.0e), parameters within %.3g (tolerance %.0e); per-rank-mean "
           "normalisation misses by %.3g\n",
           rank, W, PSTEPS, max_gdiff, GTOL, max_diff, PTOL, wrong_diff);

    she_adamw_free(ref_opt), she_adamw_free(opt);
    she_model_free(ref), she_model_free(m);
    return test_checks_failed_ - failed_before;
}

static void test_tcp_parity(void) {
    int port = free_port();
    char port_s[16];
    snprintf(port_s, sizeof(port_s), "%d", port);
    pid_t pids[2];
    fflush(NULL);
    for (int r = 0; r < 2; r++) {
        pids[r] = fork();
        SHE_ASSERT(pids[r] >= 0);
        if (pids[r] == 0) {
            /* a fresh process (this one's OpenMP pool does not survive fork), one thread each */
            setenv("OMP_NUM_THREADS", "1", 1);
            execl("/proc/self/exe", "test_dist", "--parity-tcp", r ? "1" : "0", port_s,
                  (char *)NULL);
            _exit(127);
        }
    }
    for (int r = 0; r < 2; r++)
        CHECK_MSG(wait_child(pids[r], 60) == 0, "TCP parity rank %d failed", r);
}

/* ---- modes run by tests/test_dist_mpi.sh and test_tcp_parity ---- */

static int run_parity_tcp(int rank, int port) {
    char errstr[512];
    she_dist_config_t c = tcp_config(rank, port, 30.0);
    she_dist_t *d = NULL;
    if (she_dist_init(&c, &d, errstr, sizeof(errstr)) != SHE_OK) {
        fprintf(stderr, "rank %d: %s\n", rank, errstr);
        return 1;
    }
    int failed = parity_run(d);
    she_dist_free(d);
    return failed ? 1 : 0;
}

static she_dist_t *mpi_join(double timeout_s) {
    char errstr[512];
    she_dist_config_t c;
    she_dist_t *d = NULL;
    if (she_dist_config_from_env(&c, errstr, sizeof(errstr)) != SHE_OK ||
        c.launcher != SHE_DIST_LAUNCHER_MPIRUN || c.world_size != 2) {
        fprintf(stderr, "not under mpirun -np 2: %s\n", errstr);
        exit(1);
    }
    c.timeout_s = timeout_s;
    if (she_dist_init(&c, &d, errstr, sizeof(errstr)) != SHE_OK) {
        fprintf(stderr, "she_dist_init: %s\n", errstr);
        exit(1);
    }
    SHE_ASSERT(she_dist_backend(d) == SHE_DIST_MPI);
    return d;
}

static int run_mpi_parity(void) {
    char errstr[512], desc[128];
    she_dist_t *d = mpi_join(30.0);
    she_dist_describe(d, desc, sizeof(desc));
    printf("%s\n", desc);
    int failed = parity_run(d);
    for (size_t mib = 1; mib <= 64 && !failed; mib *= 8) {
        she_dist_bench_t bw;
        if (she_dist_bench_allreduce(d, mib << 20, 5, &bw, errstr, sizeof(errstr)) != SHE_OK) {
            fprintf(stderr, "bench: %s\n", errstr);
            failed++;
        } else if (she_dist_rank(d) == 0)
            printf("mpi allreduce %2zu MiB x 2 ranks: %.3f ms, algbw %.2f GB/s, busbw %.2f GB/s\n",
                   mib, bw.seconds * 1e3, bw.algbw_gbs, bw.busbw_gbs);
    }
    she_dist_free(d);
    printf("rank parity %s\n", failed ? "FAILED" : "ok");
    return failed ? 1 : 0;
}

/* Rank 1 hangs; rank 0 must fail its all-reduce within the 2 s deadline and end the job. */
static int run_mpi_lost(void) {
    char errstr[512];
    she_dist_t *d = mpi_join(2.0);
    if (she_dist_rank(d) == 1) {
        sleep(60); /* mpirun kills us once rank 0 aborts the job */
        return 0;
    }
    float g[1000] = {0};
    double t0 = now_s();
    she_err_t err = she_dist_allreduce(d, g, 1000, SHE_DIST_SUM, errstr, sizeof(errstr));
    fprintf(stderr, "dist error (%s) after %.2f s: %s\n", she_err2str(err), now_s() - t0, errstr);
    she_dist_abort(d, 3);
}

/* ---- NCCL (test_dist_nccl, label gpu) ---- */

#ifdef SHE_HAVE_CUDA
/* One NCCL rank on GPU `rank`: sum and mean of a device buffer, the bandwidth; with `hang`,
 * rank 1 goes silent after init and rank 0's all-reduce must time out (3 s deadline) and
 * abort its communicator.  Returns the number of failed checks. */
static int nccl_rank(int rank, int world, int port, int hang) {
    char errstr[512];
    int failed_before = test_checks_failed_;
    she_dist_config_t c = tcp_config(rank, port, hang ? 3.0 : 60.0);
    c.backend = SHE_DIST_NCCL;
    c.world_size = world;
    c.cuda_device = rank;
    she_dist_t *d = NULL;
    if (she_dist_init(&c, &d, errstr, sizeof(errstr)) != SHE_OK) {
        fprintf(stderr, "rank %d: %s\n", rank, errstr);
        return 1;
    }
    if (hang && rank == 1) {
        sleep(30); /* the parent kills us once rank 0 is done */
        return 0;
    }
    size_t n = (size_t)1 << 20;
    float *h = malloc(n * sizeof(float)), *dbuf = NULL;
    SHE_ASSERT(h != NULL && cudaMalloc((void **)&dbuf, n * sizeof(float)) == cudaSuccess);
    for (size_t i = 0; i < n; i++)
        h[i] = (float)(rank + 1) * (float)(i % 100);
    SHE_ASSERT(cudaMemcpy(dbuf, h, n * sizeof(float), cudaMemcpyHostToDevice) == cudaSuccess);
    if (hang) {
        double t0 = now_s();
        CHECK_EQ_INT(she_dist_allreduce_device(d, dbuf, n, SHE_DIST_SUM, NULL, errstr,
                                               sizeof(errstr)), SHE_ERR_TIMEOUT);
        double dt = now_s() - t0;
        CHECK_MSG(dt >= 2.9 && dt < 6.0, "device all-reduce gave up after %.2f s", dt);
        CHECK_MSG(strstr(errstr, "device allreduce #") && strstr(errstr, "communicator aborted"),
                  "%s", errstr);
        fprintf(stderr, "   (expected) %s\n", errstr);
    } else {
        /* sum over ranks of (r + 1) * v, then the mean of equal values is the value */
        float expect = (float)(world * (world + 1) / 2);
        size_t bad = 0;
        CHECK_OK(she_dist_allreduce_device(d, dbuf, n, SHE_DIST_SUM, NULL, errstr,
                                           sizeof(errstr)));
        CHECK_OK(she_dist_allreduce_device(d, dbuf, n, SHE_DIST_MEAN, NULL, errstr,
                                           sizeof(errstr)));
        SHE_ASSERT(cudaMemcpy(h, dbuf, n * sizeof(float), cudaMemcpyDeviceToHost) == cudaSuccess);
        for (size_t i = 0; i < n; i++)
            bad += h[i] != expect * (float)(i % 100);
        CHECK_MSG(bad == 0, "rank %d: %zu wrong elements", rank, bad);
        she_dist_bench_t bw;
        CHECK_OK(she_dist_bench_allreduce(d, (size_t)256 << 20, 10, &bw, errstr, sizeof(errstr)));
        if (rank == 0)
            printf("nccl allreduce 256 MiB x %d GPU(s): %.3f ms, algbw %.1f GB/s, "
                   "busbw %.1f GB/s\n",
                   world, bw.seconds * 1e3, bw.algbw_gbs, bw.busbw_gbs);
    }
    cudaFree(dbuf);
    free(h);
    she_dist_free(d);
    return test_checks_failed_ - failed_before;
}

/* Two ranks on GPUs 0 and 1, bootstrapped over the TCP rendezvous as under Kubernetes. */
static void test_nccl_two(int hang) {
    int port = free_port();
    char port_s[16];
    snprintf(port_s, sizeof(port_s), "%d", port);
    pid_t pids[2];
    fflush(NULL);
    for (int r = 0; r < 2; r++) {
        pids[r] = fork();
        SHE_ASSERT(pids[r] >= 0);
        if (pids[r] == 0) {
            execl("/proc/self/exe", "test_dist", "--nccl-rank", r ? "1" : "0", port_s,
                  hang ? "1" : "0", (char *)NULL);
            _exit(127);
        }
    }
    CHECK_MSG(wait_child(pids[0], 90) == 0, "NCCL rank 0 failed");
    if (hang)
        kill(pids[1], SIGKILL);
    CHECK_MSG(wait_child(pids[1], 10) == 0 || hang, "NCCL rank 1 failed");
}

static void test_nccl_one(void) { CHECK_EQ_INT(nccl_rank(0, 1, 0, 0), 0); }
static void test_nccl_two_ranks(void) { test_nccl_two(0); }
static void test_nccl_lost_rank(void) { test_nccl_two(1); }
#endif

static int run_nccl(void) {
#ifdef SHE_HAVE_CUDA
    char errstr[512];
    int n = she_cuda_device_count(errstr, sizeof(errstr));
    if (n == 0)
        TEST_SKIP("no CUDA device: %s", errstr);
    RUN(test_nccl_one);
    if (n >= 2) {
        RUN(test_nccl_two_ranks);
        RUN(test_nccl_lost_rank);
    } else
        printf("2-rank NCCL tests skipped: %d CUDA device\n", n);
    TEST_DONE();
#else
    TEST_SKIP("built without CUDA (SHE_CUDA=OFF or nvcc/NCCL not found)");
#endif
}

int main(int argc, char **argv) {
    if (argc == 4 && strcmp(argv[1], "--parity-tcp") == 0)
        return run_parity_tcp(atoi(argv[2]), atoi(argv[3]));
    if (argc == 2 && strcmp(argv[1], "--mpi-parity") == 0)
        return run_mpi_parity();
    if (argc == 2 && strcmp(argv[1], "--mpi-lost") == 0)
        return run_mpi_lost();
    if (argc == 2 && strcmp(argv[1], "--nccl") == 0)
        return run_nccl();
#ifdef SHE_HAVE_CUDA
    if (argc == 5 && strcmp(argv[1], "--nccl-rank") == 0)
        return nccl_rank(atoi(argv[2]), 2, atoi(argv[3]), atoi(argv[4])) ? 1 : 0;
#endif
    RUN(test_hostname_ordinal);
    RUN(test_config_from_env);
    RUN(test_tcp_no_peer);
    RUN(test_tcp_collectives);
    RUN(test_tcp_lost_rank);
    RUN(test_tcp_parity);
    RUN(test_single);
    TEST_DONE();
}
