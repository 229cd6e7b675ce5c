/* dist.c -- ranks and collectives with a deadline (see dist.h).  In order: clock and the
 * failure bookkeeping every collective shares; bootstrap from the environment; the TCP star
 * (rendezvous and collectives); MPI; NCCL; the public entry points, which route each call to
 * the backend. */
#include "clock.h"
#include "dist.h"

#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifdef SHE_HAVE_MPI
#include <mpi.h>
#endif
#ifdef SHE_HAVE_CUDA
#include "cuda_check.h"
/* nccl.h declares a few functions with C++-style empty parameter lists */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wstrict-prototypes"
#include <nccl.h>
#pragma GCC diagnostic pop
#endif

/* Rank 0 of the TCP star sums the peers' buffers through this much scratch (1 MiB). */
#define SCRATCH_FLOATS ((size_t)1 << 18)
/* A connection to rank 0's port that does not say hello within this many seconds is dropped
 * (a health probe, a port scan) so it cannot hold up the rendezvous. */
#define HELLO_WAIT_S 5.0

struct she_dist {
    she_dist_config_t cfg;       /* resolved: backend is never AUTO, timeout_s > 0 */
    uint64_t seq;                /* collectives entered so far; equal on every rank */
    she_err_t failed;            /* SHE_OK until a collective fails, then its code for good */
    char failure[SHE_ERRSTR_SIZE];
    int host_mpi;                /* host-side collectives go over MPI, else the TCP star */
    int *socks;                  /* (world) TCP star: rank 0 holds socks[r] to rank r >= 1,
                                    the others socks[0] to rank 0; -1 where none */
    float *scratch;              /* (SCRATCH_FLOATS) rank 0 of the TCP star only */
    int64_t *gathered;           /* (world) she_dist_sum_i64 and the benchmark, reserved once */
#ifdef SHE_HAVE_MPI
    MPI_Comm comm;               /* a duplicate of MPI_COMM_WORLD with MPI_ERRORS_RETURN */
    int mpi_initialised;         /* she_dist_init called MPI_Init_thread, free finalises */
#endif
#ifdef SHE_HAVE_CUDA
    ncclComm_t nccl;
    cudaStream_t stream;         /* used when the caller passes no stream */
#endif
};

static void sleep_s(double s) {
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

/* Milliseconds for poll() until `deadline`, at least 1 so a late wake-up still polls once. */
static int poll_ms(double deadline) {
    double left = deadline - she_now_s();
    return left > 1e6 ? 1000000000 : left <= 0 ? 0 : (int)(left * 1000.0) + 1;
}

/* The collectives, numbered as on the wire (tcp_hdr_t.op), and their names for messages. */
enum { OP_HELLO = 1, OP_BARRIER, OP_BROADCAST, OP_ALLGATHER, OP_ALLREDUCE, OP_DEVICE_ALLREDUCE };
static const char *const op_names[] = {"?", "init", "barrier", "broadcast", "allgather",
                                       "allreduce"};

static const char *op_name(int op) {
    return op == OP_DEVICE_ALLREDUCE ? "device allreduce" : op_names[op];
}

/* Every collective starts here: a failed handle refuses at once with the first failure. */
static she_err_t enter(she_dist_t *d, char *errstr, size_t errstr_size) {
    if (d->failed != SHE_OK)
        return she_errf(d->failed, errstr, errstr_size,
                        "%s (an earlier collective failed; end the job)", d->failure);
    d->seq++;
    return SHE_OK;
}

/* ...and ends here: a failure gets the rank, operation, sequence number and elapsed time in
 * front of the detail the backend wrote, and fails the handle.  When a nested collective (the
 * NCCL id broadcast inside init) already failed the handle, its message is the one kept. */
static she_err_t leave(she_dist_t *d, she_err_t err, int op, size_t bytes, double t0,
                       const char *detail, char *errstr, size_t errstr_size) {
    if (err == SHE_OK)
        return SHE_OK;
    if (d->failed != SHE_OK)
        return she_errf(d->failed, errstr, errstr_size, "%s", d->failure);
    d->failed = err;
    char what[64] = "init";
    if (op != OP_HELLO)
        snprintf(what, sizeof(what), "%s #%llu (%zu bytes)", op_name(op),
                 (unsigned long long)d->seq, bytes);
    snprintf(d->failure, sizeof(d->failure),
             "rank %d/%d (%s): %s failed after %.1f s (deadline %.0f s): %s", d->cfg.rank,
             d->cfg.world_size, she_dist_backend_name(d->cfg.backend), what, she_now_s() - t0,
             d->cfg.timeout_s, detail);
    return she_errf(err, errstr, errstr_size, "%s", d->failure);
}

/* ---- bootstrap from the environment ---- */

int she_dist_hostname_ordinal(const char *hostname) {
    const char *dash = strrchr(hostname, '-');
    if (dash == NULL || dash[1] == '\0')
        return -1;
    long v = 0;
    for (const char *p = dash + 1; *p; p++) {
        if (*p < '0' || *p > '9' || v > INT_MAX / 10)
            return -1;
        v = v * 10 + (*p - '0');
    }
    return v <= INT_MAX ? (int)v : -1;
}

/* Reads integer variable `name` into *out when set (*found = 1); lo <= value <= hi. */
static she_err_t env_int(const char *name, long lo, long hi, int *out, int *found, char *errstr,
                         size_t errstr_size) {
    const char *s = getenv(name);
    *found = s != NULL;
    if (s == NULL)
        return SHE_OK;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi)
        return she_errf(SHE_ERR_CONFIG, errstr, errstr_size,
                        "environment %s=\"%s\": expected an integer in [%ld, %ld]", name, s, lo,
                        hi);
    *out = (int)v;
    return SHE_OK;
}

she_err_t she_dist_config_from_env(she_dist_config_t *cfg, char *errstr, size_t errstr_size) {
    memset(cfg, 0, sizeof(*cfg));
    cfg->backend = SHE_DIST_AUTO;
    cfg->world_size = 1;
    cfg->master_port = SHE_DIST_DEFAULT_PORT;
    cfg->timeout_s = SHE_DIST_DEFAULT_TIMEOUT_S;
    cfg->cuda_device = -1;
    /* Open MPI, then MPICH (Hydra's PMI), then our own variables; the launcher's names. */
    static const char *const vars[][3] = {
        {"OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK"},
        {"PMI_SIZE", "PMI_RANK", "MPI_LOCALRANKID"},
        {"SHE_WORLD_SIZE", "SHE_RANK", "SHE_LOCAL_RANK"},
    };
    int found = 0, k;
    for (k = 0; k < 3 && !found; k++)
        SHE_TRY(env_int(vars[k][0], 1, 1 << 20, &cfg->world_size, &found, errstr, errstr_size));
    if (!found)
        return SHE_OK;
    k--;
    cfg->launcher = k < 2 ? SHE_DIST_LAUNCHER_MPIRUN : SHE_DIST_LAUNCHER_ENV;
    int W = cfg->world_size, has_rank, has_local;
    SHE_TRY(env_int(vars[k][1], 0, W - 1, &cfg->rank, &has_rank, errstr, errstr_size));
    SHE_TRY(env_int(vars[k][2], 0, 1 << 20, &cfg->local_rank, &has_local, errstr, errstr_size));
    if (!has_rank && cfg->launcher == SHE_DIST_LAUNCHER_MPIRUN)
        return she_errf(SHE_ERR_CONFIG, errstr, errstr_size, "%s is set but %s is not",
                        vars[k][0], vars[k][1]);
    if (cfg->launcher == SHE_DIST_LAUNCHER_MPIRUN)
        return SHE_OK;
    if (!has_rank) {
        char host[256] = "";
        gethostname(host, sizeof(host) - 1);
        int ordinal = she_dist_hostname_ordinal(host);
        if (ordinal < 0 || ordinal >= W)
            return she_errf(SHE_ERR_CONFIG, errstr, errstr_size,
                            "SHE_WORLD_SIZE=%d but no SHE_RANK, and the hostname \"%s\" does not "
                            "end in a StatefulSet ordinal -N with N < %d",
                            W, host, W);
        cfg->rank = ordinal;
    }
    const char *addr = getenv("SHE_MASTER_ADDR");
    if (addr == NULL && W > 1)
        return she_errf(SHE_ERR_CONFIG, errstr, errstr_size,
                        "SHE_WORLD_SIZE=%d needs SHE_MASTER_ADDR (rank 0's address)", W);
    if (addr != NULL && strlen(addr) >= sizeof(cfg->master_addr))
        return she_errf(SHE_ERR_CONFIG, errstr, errstr_size, "SHE_MASTER_ADDR is too long");
    if (addr != NULL)
        strcpy(cfg->master_addr, addr);
    return env_int("SHE_MASTER_PORT", 1, 65535, &cfg->master_port, &found, errstr, errstr_size);
}

/* ---- the TCP star ----
 * Every message is a header and then `bytes` of payload.  The header carries the operation
 * and the collective's sequence number, so ranks that call collectives in different orders
 * fail with a message saying so instead of exchanging garbage. */

#define TCP_MAGIC 0x31454853u /* "SHE1" */

typedef struct tcp_hdr {
    uint32_t magic, op;
    uint64_t seq;   /* hello: the sender's rank */
    uint64_t bytes; /* hello: the world size */
} tcp_hdr_t;

/* Sends (or receives) exactly len bytes on the non-blocking socket fd before the deadline;
 * `peer` is the rank at the other end, for messages. */
static she_err_t tcp_io(int fd, int sending, void *buf, size_t len, double deadline, int peer,
                        char *errstr, size_t errstr_size) {
    char *p = buf;
    while (len > 0) {
        ssize_t k = sending ? send(fd, p, len, MSG_NOSIGNAL) : recv(fd, p, len, 0);
        if (k > 0) {
            p += k;
            len -= (size_t)k;
            continue;
        }
        if (k == 0)
            return she_errf(SHE_ERR_IO, errstr, errstr_size, "rank %d closed the connection",
                            peer);
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            return she_errf(SHE_ERR_IO, errstr, errstr_size, "%s rank %d: %s",
                            sending ? "send to" : "recv from", peer, strerror(errno));
        int ms = poll_ms(deadline);
        if (ms == 0)
            return she_errf(SHE_ERR_TIMEOUT, errstr, errstr_size,
                            "rank %d did not %s in time (crashed, hung or too slow)", peer,
                            sending ? "take our data" : "send its part");
        struct pollfd pfd = {fd, sending ? POLLOUT : POLLIN, 0};
        if (poll(&pfd, 1, ms) < 0 && errno != EINTR)
            return she_errf(SHE_ERR_IO, errstr, errstr_size, "poll: %s", strerror(errno));
    }
    return SHE_OK;
}

static she_err_t tcp_send_hdr(she_dist_t *d, int peer, int op, size_t bytes, double deadline,
                              char *errstr, size_t errstr_size) {
    tcp_hdr_t h = {TCP_MAGIC, (uint32_t)op, d->seq, bytes};
    int fd = d->socks[d->cfg.rank == 0 ? peer : 0];
    return tcp_io(fd, 1, &h, sizeof(h), deadline, peer, errstr, errstr_size);
}

/* Receives a header from `peer` and checks it is the same collective with the expected size. */
static she_err_t tcp_recv_hdr(she_dist_t *d, int peer, int op, size_t bytes, double deadline,
                              char *errstr, size_t errstr_size) {
    tcp_hdr_t h;
    int fd = d->socks[d->cfg.rank == 0 ? peer : 0];
    SHE_TRY(tcp_io(fd, 0, &h, sizeof(h), deadline, peer, errstr, errstr_size));
    if (h.magic != TCP_MAGIC)
        return she_errf(SHE_ERR_IO, errstr, errstr_size, "rank %d sent garbage (bad magic)",
                        peer);
    if (h.op != (uint32_t)op || h.seq != d->seq || h.bytes != bytes)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                        "rank %d is in %s #%llu of %llu bytes where this rank expects %s #%llu of "
                        "%zu bytes: the ranks call collectives in different orders or sizes",
                        peer, h.op >= 1 && h.op <= OP_ALLREDUCE ? op_names[h.op] : "?",
                        (unsigned long long)h.seq, (unsigned long long)h.bytes, op_name(op),
                        (unsigned long long)d->seq, bytes);
    return SHE_OK;
}

/* Bytes rank r sends up to rank 0 in a round of `op` over `bytes`. */
static size_t tcp_up_bytes(int op, size_t bytes, int r, int root) {
    return op == OP_BARRIER || (op == OP_BROADCAST && r != root) ? 0 : bytes;
}

/* One round of the star: every rank sends its part up to rank 0, which combines them and
 * sends the result down to every rank.
 *   barrier    up nothing,                           down nothing
 *   broadcast  up buf[0, bytes) from root only,      down buf[0, bytes)
 *   allgather  up buf[0, bytes) (this rank's slot),  down out[0, world*bytes) (every slot)
 *   allreduce  up buf[0, bytes) floats, summed in rank order at rank 0, down the sum into buf */
static she_err_t tcp_round(she_dist_t *d, int op, void *buf, size_t bytes, int root, void *out,
                           double deadline, char *errstr, size_t errstr_size) {
    int W = d->cfg.world_size, me = d->cfg.rank;
    size_t down = op == OP_BARRIER ? 0 : op == OP_ALLGATHER ? (size_t)W * bytes : bytes;
    void *down_buf = op == OP_ALLGATHER ? out : buf;
    if (me != 0) {
        size_t up = tcp_up_bytes(op, bytes, me, root);
        SHE_TRY(tcp_send_hdr(d, 0, op, up, deadline, errstr, errstr_size));
        SHE_TRY(tcp_io(d->socks[0], 1, buf, up, deadline, 0, errstr, errstr_size));
        SHE_TRY(tcp_recv_hdr(d, 0, op, down, deadline, errstr, errstr_size));
        return tcp_io(d->socks[0], 0, down_buf, down, deadline, 0, errstr, errstr_size);
    }
    for (int r = 1; r < W; r++) {
        size_t up = tcp_up_bytes(op, bytes, r, root);
        SHE_TRY(tcp_recv_hdr(d, r, op, up, deadline, errstr, errstr_size));
        if (op != OP_ALLREDUCE) {
            char *dst = op == OP_ALLGATHER ? (char *)out + (size_t)r * bytes : buf;
            SHE_TRY(tcp_io(d->socks[r], 0, dst, up, deadline, r, errstr, errstr_size));
            continue;
        }
        float *sum = buf;
        for (size_t off = 0, n = bytes / sizeof(float); off < n; off += SCRATCH_FLOATS) {
            size_t c = n - off < SCRATCH_FLOATS ? n - off : SCRATCH_FLOATS;
            SHE_TRY(tcp_io(d->socks[r], 0, d->scratch, c * sizeof(float), deadline, r, errstr,
                           errstr_size));
            for (size_t i = 0; i < c; i++)
                sum[off + i] += d->scratch[i];
        }
    }
    for (int r = 1; r < W; r++) {
        SHE_TRY(tcp_send_hdr(d, r, op, down, deadline, errstr, errstr_size));
        SHE_TRY(tcp_io(d->socks[r], 1, down_buf, down, deadline, r, errstr, errstr_size));
    }
    return SHE_OK;
}

static she_err_t resolve(const char *host, int port, struct addrinfo **res, char *errstr,
                         size_t errstr_size) {
    char port_s[16];
    snprintf(port_s, sizeof(port_s), "%d", port);
    struct addrinfo hints = {0};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(host, port_s, &hints, res);
    if (rc != 0)
        return she_errf(SHE_ERR_IO, errstr, errstr_size, "resolve %s: %s", host, gai_strerror(rc));
    return SHE_OK;
}

static void set_nodelay(int fd) {
    int one = 1; /* collectives are request/response: do not wait to fill a segment */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* Rank 0: listens on the address master_addr resolves to (it must be this host's) and waits
 * for every other rank's hello, then answers them all, which releases them together. */
static she_err_t tcp_serve(she_dist_t *d, double deadline, char *errstr, size_t errstr_size) {
    const she_dist_config_t *c = &d->cfg;
    struct addrinfo *res;
    SHE_TRY(resolve(c->master_addr, c->master_port, &res, errstr, errstr_size));
    int lfd = -1, bind_errno = 0;
    for (struct addrinfo *ai = res; ai && lfd < 0; ai = ai->ai_next) {
        lfd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (lfd < 0)
            continue;
        int one = 1; /* a restarted rank 0 must not wait for the old socket's TIME_WAIT */
        setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(lfd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(lfd, c->world_size) < 0) {
            bind_errno = errno;
            close(lfd);
            lfd = -1;
        }
    }
    freeaddrinfo(res);
    if (lfd < 0)
        return she_errf(SHE_ERR_IO, errstr, errstr_size,
                        "rank 0 cannot listen on %s:%d: %s (the master address must resolve to "
                        "rank 0's own address)",
                        c->master_addr, c->master_port, strerror(bind_errno));
    she_err_t err = SHE_OK;
    for (int joined = 1; joined < c->world_size && err == SHE_OK;) {
        int ms = poll_ms(deadline);
        if (ms == 0) {
            char missing[128] = "";
            for (int r = 1, len = 0; r < c->world_size && len < 100; r++)
                if (d->socks[r] < 0)
                    len += snprintf(missing + len, sizeof(missing) - (size_t)len, " %d", r);
            err = she_errf(SHE_ERR_TIMEOUT, errstr, errstr_size,
                           "%d of %d ranks never connected to %s:%d (missing:%s)",
                           c->world_size - joined, c->world_size - 1, c->master_addr,
                           c->master_port, missing);
            break;
        }
        struct pollfd pfd = {lfd, POLLIN, 0};
        if (poll(&pfd, 1, ms) <= 0)
            continue;
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            continue;
        set_nodelay(fd);
        tcp_hdr_t h;
        double hello_deadline = she_now_s() + HELLO_WAIT_S;
        char ignored[64];
        if (tcp_io(fd, 0, &h, sizeof(h), hello_deadline < deadline ? hello_deadline : deadline,
                   -1, ignored, sizeof(ignored)) != SHE_OK ||
            h.magic != TCP_MAGIC || h.op != OP_HELLO) {
            close(fd); /* not one of ours */
            continue;
        }
        int r = h.seq < (uint64_t)c->world_size ? (int)h.seq : -1;
        if (h.bytes != (uint64_t)c->world_size || r < 1 || d->socks[r] >= 0) {
            err = she_errf(SHE_ERR_CONFIG, errstr, errstr_size,
                           "a peer says it is rank %llu of %llu; this job has %d ranks%s",
                           (unsigned long long)h.seq, (unsigned long long)h.bytes,
                           c->world_size,
                           r >= 1 && d->socks[r] >= 0 ? " and that rank is taken" : "");
            close(fd);
            break;
        }
        d->socks[r] = fd;
        joined++;
    }
    close(lfd);
    for (int r = 1; r < c->world_size && err == SHE_OK; r++) {
        tcp_hdr_t h = {TCP_MAGIC, OP_HELLO, 0, (uint64_t)c->world_size};
        err = tcp_io(d->socks[r], 1, &h, sizeof(h), deadline, r, errstr, errstr_size);
    }
    return err;
}

/* Non-blocking connect to one address, waiting at most until `deadline`; the socket or -1
 * with errno set. */
static int connect_once(const struct addrinfo *ai, double deadline) {
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
        return fd;
    if (errno == EINPROGRESS) {
        struct pollfd pfd = {fd, POLLOUT, 0};
        int soerr = ETIMEDOUT;
        socklen_t len = sizeof(soerr);
        if (poll(&pfd, 1, poll_ms(deadline)) > 0)
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len);
        if (soerr == 0)
            return fd;
        errno = soerr;
    }
    int saved = errno;
    close(fd);
    errno = saved;
    return -1;
}

/* Ranks >= 1: connect to rank 0, retrying (rank 0 may start later, its DNS name may not exist
 * yet) with a back-off up to 1 s until the deadline; send hello, wait for rank 0's answer. */
static she_err_t tcp_join(she_dist_t *d, double deadline, char *errstr, size_t errstr_size) {
    const she_dist_config_t *c = &d->cfg;
    char last[256] = "no attempt";
    double pause = 0.05;
    while (d->socks[0] < 0) {
        if (she_now_s() >= deadline)
            return she_errf(SHE_ERR_TIMEOUT, errstr, errstr_size,
                            "could not reach rank 0 at %s:%d (last error: %s)", c->master_addr,
                            c->master_port, last);
        struct addrinfo *res;
        if (resolve(c->master_addr, c->master_port, &res, last, sizeof(last)) == SHE_OK) {
            for (struct addrinfo *ai = res; ai && d->socks[0] < 0; ai = ai->ai_next) {
                d->socks[0] = connect_once(ai, deadline);
                if (d->socks[0] < 0)
                    snprintf(last, sizeof(last), "connect: %s", strerror(errno));
            }
            freeaddrinfo(res);
        }
        if (d->socks[0] < 0) {
            double left = deadline - she_now_s();
            sleep_s(left < pause ? (left > 0 ? left : 0) : pause);
            pause = pause * 2 < 1.0 ? pause * 2 : 1.0;
        }
    }
    set_nodelay(d->socks[0]);
    tcp_hdr_t h = {TCP_MAGIC, OP_HELLO, (uint64_t)c->rank, (uint64_t)c->world_size};
    SHE_TRY(tcp_io(d->socks[0], 1, &h, sizeof(h), deadline, 0, errstr, errstr_size));
    SHE_TRY(tcp_io(d->socks[0], 0, &h, sizeof(h), deadline, 0, errstr, errstr_size));
    if (h.magic != TCP_MAGIC || h.op != OP_HELLO || h.bytes != (uint64_t)c->world_size)
        return she_errf(SHE_ERR_IO, errstr, errstr_size, "rank 0 answered the hello with garbage");
    return SHE_OK;
}

static she_err_t tcp_init(she_dist_t *d, double deadline, char *errstr, size_t errstr_size) {
    if (d->cfg.rank != 0)
        return tcp_join(d, deadline, errstr, errstr_size);
    d->scratch = malloc(SCRATCH_FLOATS * sizeof(float));
    if (d->scratch == NULL)
        return she_errf(SHE_ERR_NOMEM, errstr, errstr_size, "TCP scratch buffer");
    return tcp_serve(d, deadline, errstr, errstr_size);
}

/* ---- MPI ---- */
#ifdef SHE_HAVE_MPI

static she_err_t mpi_error(int rc, const char *call, const char *file, int line, char *errstr,
                           size_t errstr_size) {
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(rc, msg, &len) != MPI_SUCCESS)
        snprintf(msg, sizeof(msg), "MPI error %d", rc);
    return she_errf(SHE_ERR_MPI, errstr, errstr_size, "%s:%d: %s: %s", file, line, call, msg);
}

#define SHE_TRY_MPI(call)                                                              \
    do {                                                                               \
        int she_mpi_rc_ = (call);                                                      \
        if (she_mpi_rc_ != MPI_SUCCESS)                                                \
            return mpi_error(she_mpi_rc_, #call, __FILE__, __LINE__, errstr, errstr_size); \
    } while (0)

/* The watchdog: polls a non-blocking collective until it completes or the deadline passes.
 * MPI cannot say which rank is missing; the message says what the possibilities are.  The
 * price: Open MPI 4.1's non-blocking collectives (libnbc) move about half the bytes per second
 * of its blocking ones (2 ranks, shared memory, 64 MiB: ~0.7 against ~1.6 GB/s here) -- worth
 * it against a job that hangs forever, and small next to a CPU training step. */
static she_err_t mpi_wait(MPI_Request *req, double deadline, char *errstr, size_t errstr_size) {
    for (long polls = 0;; polls++) {
        int done = 0;
        SHE_TRY_MPI(MPI_Test(req, &done, MPI_STATUS_IGNORE));
        if (done)
            return SHE_OK;
        if (she_now_s() >= deadline)
            return she_errf(SHE_ERR_TIMEOUT, errstr, errstr_size,
                            "not every rank joined it (a rank crashed, hung or is slower than "
                            "the deadline)");
        if (polls > 1000) /* short collectives finish while spinning; long ones leave the core */
            sleep_s(20e-6);
    }
}

/* MPI counts are ints: big buffers go in chunks of at most 2^30 elements. */
#define MPI_CHUNK ((size_t)1 << 30)

static she_err_t mpi_round(she_dist_t *d, int op, void *buf, size_t bytes, int root, void *out,
                           double deadline, char *errstr, size_t errstr_size) {
    MPI_Request req;
    if (op == OP_BARRIER) {
        SHE_TRY_MPI(MPI_Ibarrier(d->comm, &req));
        return mpi_wait(&req, deadline, errstr, errstr_size);
    }
    if (op == OP_ALLGATHER) {
        if (bytes > MPI_CHUNK)
            return she_errf(SHE_ERR_INVALID, errstr, errstr_size, "allgather of %zu bytes", bytes);
        SHE_TRY_MPI(MPI_Iallgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, out, (int)bytes, MPI_BYTE,
                                   d->comm, &req));
        return mpi_wait(&req, deadline, errstr, errstr_size);
    }
    size_t size = op == OP_ALLREDUCE ? sizeof(float) : 1, n = bytes / size;
    for (size_t off = 0; off < n; off += MPI_CHUNK) {
        int c = (int)(n - off < MPI_CHUNK ? n - off : MPI_CHUNK);
        if (op == OP_ALLREDUCE)
            SHE_TRY_MPI(MPI_Iallreduce(MPI_IN_PLACE, (float *)buf + off, c, MPI_FLOAT, MPI_SUM,
                                       d->comm, &req));
        else
            SHE_TRY_MPI(MPI_Ibcast((char *)buf + off, c, MPI_BYTE, root, d->comm, &req));
        SHE_TRY(mpi_wait(&req, deadline, errstr, errstr_size));
    }
    return SHE_OK;
}

static she_err_t mpi_init(she_dist_t *d, char *errstr, size_t errstr_size) {
    int inited = 0, finalized = 0, provided, W, rank;
    SHE_TRY_MPI(MPI_Finalized(&finalized));
    if (finalized)
        return she_errf(SHE_ERR_MPI, errstr, errstr_size,
                        "MPI was finalised (by an earlier she_dist_free): one MPI job per process");
    SHE_TRY_MPI(MPI_Initialized(&inited));
    if (!inited) {
        /* Only the calling thread talks to MPI; OpenMP threads never do. */
        SHE_TRY_MPI(MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided));
        d->mpi_initialised = 1;
    }
    /* Our own communicator, so a caller's MPI traffic cannot interleave with ours, and errors
     * come back as codes instead of aborting the job before we can say what happened. */
    SHE_TRY_MPI(MPI_Comm_dup(MPI_COMM_WORLD, &d->comm));
    SHE_TRY_MPI(MPI_Comm_set_errhandler(d->comm, MPI_ERRORS_RETURN));
    SHE_TRY_MPI(MPI_Comm_size(d->comm, &W));
    SHE_TRY_MPI(MPI_Comm_rank(d->comm, &rank));
    if (W != d->cfg.world_size || rank != d->cfg.rank)
        return she_errf(SHE_ERR_CONFIG, errstr, errstr_size,
                        "MPI says rank %d of %d, the configuration rank %d of %d", rank, W,
                        d->cfg.rank, d->cfg.world_size);
    return SHE_OK;
}

#endif /* SHE_HAVE_MPI */

/* ---- NCCL ---- */
#ifdef SHE_HAVE_CUDA

/* ncclInProgress is not a failure: the communicator is non-blocking and nccl_wait finishes it. */
#define SHE_TRY_NCCL(call)                                                                    \
    do {                                                                                      \
        ncclResult_t she_nccl_rc_ = (call);                                                   \
        if (she_nccl_rc_ != ncclSuccess && she_nccl_rc_ != ncclInProgress)                    \
            return she_errf(SHE_ERR_CUDA, errstr, errstr_size, "%s:%d: %s: %s (%s)", __FILE__, \
                            __LINE__, #call, ncclGetErrorString(she_nccl_rc_),                \
                            ncclGetLastError(NULL));                                          \
    } while (0)

/* The watchdog for NCCL: waits until the communicator has finished the call in progress and,
 * when `stream` is non-NULL, until the stream has run everything queued on it -- polling
 * ncclCommGetAsyncError, since a peer that died leaves the kernels spinning, not failing.  On
 * the deadline or an asynchronous error the communicator is aborted, which stops its kernels. */
static she_err_t nccl_wait(she_dist_t *d, cudaStream_t stream, double deadline, char *errstr,
                           size_t errstr_size) {
    for (;;) {
        ncclResult_t state;
        SHE_TRY_NCCL(ncclCommGetAsyncError(d->nccl, &state));
        if (state != ncclSuccess && state != ncclInProgress) {
            ncclCommAbort(d->nccl);
            d->nccl = NULL;
            return she_errf(SHE_ERR_CUDA, errstr, errstr_size, "NCCL: %s (%s)",
                            ncclGetErrorString(state), ncclGetLastError(NULL));
        }
        cudaError_t q = cudaSuccess;
        if (state == ncclSuccess && stream != NULL)
            q = cudaStreamQuery(stream);
        if (state == ncclSuccess && q == cudaSuccess)
            return SHE_OK;
        if (q != cudaSuccess && q != cudaErrorNotReady)
            return she_errf(SHE_ERR_CUDA, errstr, errstr_size, "cudaStreamQuery: %s",
                            cudaGetErrorString(q));
        if (she_now_s() >= deadline) {
            ncclCommAbort(d->nccl);
            d->nccl = NULL;
            return she_errf(SHE_ERR_TIMEOUT, errstr, errstr_size,
                            "not every rank joined it (a rank crashed, hung or is slower than "
                            "the deadline); NCCL communicator aborted");
        }
        sleep_s(20e-6);
    }
}

static she_err_t host_broadcast(she_dist_t *d, void *buf, size_t bytes, int root, char *errstr,
                                size_t errstr_size);

/* Device, stream, and the communicator: rank 0's unique id reaches the others over the host
 * side (MPI or the TCP star) and every rank joins with a non-blocking init under the deadline. */
static she_err_t nccl_init(she_dist_t *d, double deadline, char *errstr, size_t errstr_size) {
    int dev = d->cfg.cuda_device >= 0 ? d->cfg.cuda_device : d->cfg.local_rank;
    SHE_TRY_CUDA(cudaSetDevice(dev));
    SHE_TRY_CUDA(cudaStreamCreateWithFlags(&d->stream, cudaStreamNonBlocking));
    ncclUniqueId id;
    memset(&id, 0, sizeof(id));
    if (d->cfg.rank == 0)
        SHE_TRY_NCCL(ncclGetUniqueId(&id));
    SHE_TRY(host_broadcast(d, &id, sizeof(id), 0, errstr, errstr_size));
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    SHE_TRY_NCCL(ncclCommInitRankConfig(&d->nccl, d->cfg.world_size, id, d->cfg.rank, &config));
    return nccl_wait(d, NULL, deadline, errstr, errstr_size);
}

#endif /* SHE_HAVE_CUDA */

/* ---- life cycle ---- */

const char *she_dist_backend_name(she_dist_backend_t backend) {
    static const char *const names[] = {"auto", "single", "mpi", "tcp", "nccl"};
    return (unsigned)backend < sizeof(names) / sizeof(names[0]) ? names[backend] : "?";
}

/* Checks cfg and decides the backend (AUTO resolved) and where host-side collectives go. */
static she_err_t plan(const she_dist_config_t *cfg, she_dist_backend_t *backend, int *host_mpi,
                      char *errstr, size_t errstr_size) {
    int W = cfg->world_size;
    if (W < 1 || cfg->rank < 0 || cfg->rank >= W || cfg->local_rank < 0)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size, "rank %d of %d (local rank %d)",
                        cfg->rank, W, cfg->local_rank);
    *backend = cfg->backend;
    if (*backend == SHE_DIST_AUTO)
        *backend = W == 1 ? SHE_DIST_SINGLE
                   : cfg->launcher == SHE_DIST_LAUNCHER_MPIRUN ? SHE_DIST_MPI : SHE_DIST_TCP;
    if (*backend == SHE_DIST_SINGLE && W != 1)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                        "the single backend has one rank, not %d", W);
#ifndef SHE_HAVE_MPI
    if (*backend == SHE_DIST_MPI)
        return she_errf(SHE_ERR_UNSUPPORTED, errstr, errstr_size,
                        "the mpi backend needs a build with MPI (SHE_MPI=ON)");
#endif
#ifndef SHE_HAVE_CUDA
    if (*backend == SHE_DIST_NCCL)
        return she_errf(SHE_ERR_UNSUPPORTED, errstr, errstr_size,
                        "the nccl backend needs a build with CUDA and NCCL (SHE_CUDA=ON)");
#endif
    *host_mpi = *backend == SHE_DIST_MPI;
#ifdef SHE_HAVE_MPI
    if (*backend == SHE_DIST_NCCL && cfg->launcher == SHE_DIST_LAUNCHER_MPIRUN)
        *host_mpi = 1;
#endif
    if (W > 1 && !*host_mpi && cfg->master_addr[0] == '\0')
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                        "%d %s ranks without MPI need rank 0's address (SHE_MASTER_ADDR)", W,
                        she_dist_backend_name(*backend));
    if (W > 1 && !*host_mpi && (cfg->master_port < 1 || cfg->master_port > 65535))
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size, "master port %d", cfg->master_port);
    return SHE_OK;
}

she_err_t she_dist_init(const she_dist_config_t *cfg, she_dist_t **out, char *errstr,
                        size_t errstr_size) {
    *out = NULL;
    she_dist_backend_t backend = SHE_DIST_AUTO;
    int host_mpi = 0;
    SHE_TRY(plan(cfg, &backend, &host_mpi, errstr, errstr_size));
    she_dist_t *d = calloc(1, sizeof(*d));
    int *socks = malloc((size_t)cfg->world_size * sizeof(int));
    int64_t *gathered = malloc((size_t)cfg->world_size * sizeof(int64_t));
    if (d == NULL || socks == NULL || gathered == NULL) {
        free(d), free(socks), free(gathered);
        return she_errf(SHE_ERR_NOMEM, errstr, errstr_size, "dist handle");
    }
    for (int r = 0; r < cfg->world_size; r++)
        socks[r] = -1;
    d->cfg = *cfg;
    d->cfg.backend = backend;
    if (d->cfg.timeout_s <= 0)
        d->cfg.timeout_s = SHE_DIST_DEFAULT_TIMEOUT_S;
    d->host_mpi = host_mpi;
    d->socks = socks;
    d->gathered = gathered;
#ifdef SHE_HAVE_MPI
    d->comm = MPI_COMM_NULL;
#endif
    double t0 = she_now_s(), deadline = t0 + d->cfg.timeout_s;
    char detail[SHE_ERRSTR_SIZE] = "";
    she_err_t err = SHE_OK;
#ifdef SHE_HAVE_MPI
    if (host_mpi)
        err = mpi_init(d, detail, sizeof(detail));
#endif
    if (!host_mpi && cfg->world_size > 1)
        err = tcp_init(d, deadline, detail, sizeof(detail));
    if (err != SHE_OK)
        err = leave(d, err, OP_HELLO, 0, t0, detail, errstr, errstr_size);
#ifdef SHE_HAVE_CUDA
    if (err == SHE_OK && backend == SHE_DIST_NCCL) {
        err = nccl_init(d, deadline, detail, sizeof(detail));
        err = leave(d, err, OP_HELLO, 0, t0, detail, errstr, errstr_size);
    }
#endif
    if (err != SHE_OK) {
        she_dist_free(d);
        return err;
    }
    *out = d;
    return SHE_OK;
}

void she_dist_free(she_dist_t *d) {
    if (d == NULL)
        return;
#ifdef SHE_HAVE_CUDA
    if (d->nccl != NULL && d->failed == SHE_OK) {
        /* finalize flushes the communicator's work with the peers (non-blocking: wait for it);
         * if they are gone by now, nccl_wait aborts it at the deadline instead of hanging */
        char ignored[SHE_ERRSTR_SIZE];
        ncclResult_t rc = ncclCommFinalize(d->nccl);
        if ((rc == ncclSuccess || rc == ncclInProgress) &&
            nccl_wait(d, NULL, she_now_s() + d->cfg.timeout_s, ignored, sizeof(ignored)) == SHE_OK) {
            ncclCommDestroy(d->nccl);
            d->nccl = NULL;
        }
    }
    if (d->nccl != NULL) /* a failed job, or finalize failed without nccl_wait aborting */
        ncclCommAbort(d->nccl);
    if (d->stream != NULL)
        cudaStreamDestroy(d->stream);
#endif
    for (int r = 0; r < d->cfg.world_size; r++)
        if (d->socks[r] >= 0)
            close(d->socks[r]);
#ifdef SHE_HAVE_MPI
    if (d->failed == SHE_OK && d->comm != MPI_COMM_NULL)
        MPI_Comm_free(&d->comm);
    if (d->failed == SHE_OK && d->mpi_initialised)
        MPI_Finalize();
#endif
    free(d->socks);
    free(d->scratch);
    free(d->gathered);
    free(d);
}

void she_dist_abort(she_dist_t *d, int code) {
    fflush(stdout);
    fflush(stderr);
#ifdef SHE_HAVE_MPI
    if (d != NULL && d->host_mpi)
        MPI_Abort(d->comm != MPI_COMM_NULL ? d->comm : MPI_COMM_WORLD, code);
#endif
#ifdef SHE_HAVE_CUDA
    if (d != NULL && d->nccl != NULL)
        ncclCommAbort(d->nccl);
#endif
    (void)d; /* tcp: the peers see their sockets close when the process ends */
    exit(code);
}

int she_dist_failed(const she_dist_t *d) { return d->failed != SHE_OK; }
int she_dist_rank(const she_dist_t *d) { return d->cfg.rank; }
int she_dist_world(const she_dist_t *d) { return d->cfg.world_size; }
int she_dist_local_rank(const she_dist_t *d) { return d->cfg.local_rank; }
she_dist_backend_t she_dist_backend(const she_dist_t *d) { return d->cfg.backend; }

void she_dist_describe(const she_dist_t *d, char *out, size_t out_size) {
    snprintf(out, out_size, "rank %d/%d (%s, local rank %d, timeout %.0f s)", d->cfg.rank,
             d->cfg.world_size, she_dist_backend_name(d->cfg.backend), d->cfg.local_rank,
             d->cfg.timeout_s);
}

/* ---- host collectives: one path for all ops, routed by backend ---- */

static she_err_t host_round(she_dist_t *d, int op, void *buf, size_t bytes, int root, void *out,
                            char *errstr, size_t errstr_size) {
    SHE_TRY(enter(d, errstr, errstr_size));
    if (d->cfg.world_size == 1)
        return SHE_OK; /* out already holds this rank's slot (she_dist_allgather_i64) */
    double t0 = she_now_s(), deadline = t0 + d->cfg.timeout_s;
    char detail[SHE_ERRSTR_SIZE] = "";
    she_err_t err;
#ifdef SHE_HAVE_MPI
    if (d->host_mpi)
        err = mpi_round(d, op, buf, bytes, root, out, deadline, detail, sizeof(detail));
    else
#endif
        err = tcp_round(d, op, buf, bytes, root, out, deadline, detail, sizeof(detail));
    return leave(d, err, op, bytes, t0, detail, errstr, errstr_size);
}

static she_err_t host_broadcast(she_dist_t *d, void *buf, size_t bytes, int root, char *errstr,
                                size_t errstr_size) {
    if (root < 0 || root >= d->cfg.world_size)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size, "broadcast from rank %d of %d",
                        root, d->cfg.world_size);
    return host_round(d, OP_BROADCAST, buf, bytes, root, NULL, errstr, errstr_size);
}

she_err_t she_dist_broadcast(she_dist_t *d, void *buf, size_t bytes, int root, char *errstr,
                             size_t errstr_size) {
    return host_broadcast(d, buf, bytes, root, errstr, errstr_size);
}

she_err_t she_dist_barrier(she_dist_t *d, char *errstr, size_t errstr_size) {
    return host_round(d, OP_BARRIER, NULL, 0, 0, NULL, errstr, errstr_size);
}

she_err_t she_dist_allreduce(she_dist_t *d, float *buf, size_t n, she_dist_op_t op,
                             char *errstr, size_t errstr_size) {
    SHE_TRY(host_round(d, OP_ALLREDUCE, buf, n * sizeof(float), 0, NULL, errstr, errstr_size));
    if (op == SHE_DIST_MEAN && d->cfg.world_size > 1) {
        float scale = 1.0f / (float)d->cfg.world_size;
        for (size_t i = 0; i < n; i++)
            buf[i] *= scale;
    }
    return SHE_OK;
}

she_err_t she_dist_allgather(she_dist_t *d, const void *mine, size_t bytes, void *all,
                             char *errstr, size_t errstr_size) {
    /* this rank's bytes go to its own slot first; the round sends them from there */
    char *slot = (char *)all + (size_t)d->cfg.rank * bytes;
    memmove(slot, mine, bytes);
    return host_round(d, OP_ALLGATHER, slot, bytes, 0, all, errstr, errstr_size);
}

she_err_t she_dist_allgather_i64(she_dist_t *d, const int64_t *mine, size_t n, int64_t *all,
                                 char *errstr, size_t errstr_size) {
    return she_dist_allgather(d, mine, n * sizeof(int64_t), all, errstr, errstr_size);
}

/* FNV-1a over 8-byte words (then the tail bytes): a checksum fast enough to run over a
 * model's parameters every few steps -- about 8 times dataset.h's byte-wise she_hash64. */
static uint64_t hash64(const void *buf, size_t bytes) {
    const unsigned char *p = buf;
    uint64_t h = 0xcbf29ce484222325ull;
    size_t i = 0;
    for (; i + 8 <= bytes; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        h = (h ^ w) * 0x100000001b3ull;
    }
    for (; i < bytes; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

she_err_t she_dist_check_identical(she_dist_t *d, const void *buf, size_t bytes,
                                   const char *what, char *errstr, size_t errstr_size) {
    int64_t mine = (int64_t)hash64(buf, bytes);
    SHE_TRY(she_dist_allgather_i64(d, &mine, 1, d->gathered, errstr, errstr_size));
    char differ[128] = "";
    int n_differ = 0;
    for (int r = 1, len = 0; r < d->cfg.world_size; r++)
        if (d->gathered[r] != d->gathered[0]) {
            n_differ++;
            if (len < 100)
                len += snprintf(differ + len, sizeof(differ) - (size_t)len, " %d", r);
        }
    if (n_differ > 0)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                        "%s differ between ranks: %d rank(s) hold another copy than rank 0's "
                        "(ranks:%s)",
                        what, n_differ, differ);
    return SHE_OK;
}

she_err_t she_dist_sum_i64(she_dist_t *d, int64_t mine, int64_t *total, char *errstr,
                           size_t errstr_size) {
    SHE_TRY(she_dist_allgather_i64(d, &mine, 1, d->gathered, errstr, errstr_size));
    *total = 0;
    for (int r = 0; r < d->cfg.world_size; r++)
        *total += d->gathered[r];
    return SHE_OK;
}

she_err_t she_dist_allreduce_device(she_dist_t *d, float *dbuf, size_t n, she_dist_op_t op,
                                    void *cuda_stream, char *errstr, size_t errstr_size) {
#ifdef SHE_HAVE_CUDA
    if (d->cfg.backend == SHE_DIST_NCCL) {
        SHE_TRY(enter(d, errstr, errstr_size));
        double t0 = she_now_s(), deadline = t0 + d->cfg.timeout_s;
        char detail[SHE_ERRSTR_SIZE] = "";
        cudaStream_t stream = cuda_stream != NULL ? (cudaStream_t)cuda_stream : d->stream;
        ncclResult_t rc = ncclAllReduce(dbuf, dbuf, n, ncclFloat32,
                                        op == SHE_DIST_MEAN ? ncclAvg : ncclSum, d->nccl, stream);
        she_err_t err;
        if (rc != ncclSuccess && rc != ncclInProgress)
            err = she_errf(SHE_ERR_CUDA, detail, sizeof(detail), "ncclAllReduce: %s (%s)",
                           ncclGetErrorString(rc), ncclGetLastError(NULL));
        else
            err = nccl_wait(d, stream, deadline, detail, sizeof(detail));
        return leave(d, err, OP_DEVICE_ALLREDUCE, n * sizeof(float), t0, detail, errstr,
                     errstr_size);
    }
#endif
    (void)dbuf, (void)n, (void)op, (void)cuda_stream;
    return she_errf(SHE_ERR_UNSUPPORTED, errstr, errstr_size,
                    "device all-reduce needs the nccl backend, not %s",
                    she_dist_backend_name(d->cfg.backend));
}

she_err_t she_dist_train_step(she_dist_t *d, she_model_t *m, she_adamw_t *opt,
                              const she_adamw_config_t *hp, float lr, float grad_scale,
                              float max_grad_norm, float *grad_norm, char *errstr,
                              size_t errstr_size) {
    SHE_TRY(she_dist_allreduce(d, m->grads, m->n_params, SHE_DIST_SUM, errstr, errstr_size));
    float norm = she_model_adamw_step(m, opt, hp, lr, grad_scale, max_grad_norm);
    if (grad_norm != NULL)
        *grad_norm = norm;
    return SHE_OK;
}

/* ---- benchmark ---- */

/* Runs one all-reduce of n floats on buf: device memory under nccl, host memory otherwise. */
static she_err_t bench_once(she_dist_t *d, float *buf, size_t n, char *errstr,
                            size_t errstr_size) {
    if (d->cfg.backend == SHE_DIST_NCCL)
        return she_dist_allreduce_device(d, buf, n, SHE_DIST_SUM, NULL, errstr, errstr_size);
    return she_dist_allreduce(d, buf, n, SHE_DIST_SUM, errstr, errstr_size);
}

she_err_t she_dist_bench_allreduce(she_dist_t *d, size_t bytes, int reps, she_dist_bench_t *out,
                                   char *errstr, size_t errstr_size) {
    size_t n = bytes / sizeof(float);
    if (n == 0 || reps < 1)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size, "%zu bytes, %d repetitions",
                        bytes, reps);
    int W = d->cfg.world_size, on_device = d->cfg.backend == SHE_DIST_NCCL;
    float *buf = NULL;
    /* zeros: sums of zeros stay finite however many repetitions */
#ifdef SHE_HAVE_CUDA
    if (on_device && cudaMalloc((void **)&buf, n * sizeof(float)) != cudaSuccess)
        buf = NULL;
    if (buf != NULL && cudaMemset(buf, 0, n * sizeof(float)) != cudaSuccess) {
        cudaFree(buf);
        buf = NULL;
    }
#endif
    if (!on_device)
        buf = calloc(n, sizeof(float));
    if (buf == NULL)
        return she_errf(SHE_ERR_NOMEM, errstr, errstr_size, "all-reduce buffer of %zu bytes%s",
                        bytes, on_device ? " on the device" : "");
    she_err_t err = SHE_OK;
    for (int i = 0; i < 2 && err == SHE_OK; i++)
        err = bench_once(d, buf, n, errstr, errstr_size);
    if (err == SHE_OK)
        err = she_dist_barrier(d, errstr, errstr_size);
    double t0 = she_now_s();
    for (int i = 0; i < reps && err == SHE_OK; i++)
        err = bench_once(d, buf, n, errstr, errstr_size);
    int64_t mine = (int64_t)((she_now_s() - t0) / reps * 1e9);
    if (err == SHE_OK)
        err = she_dist_allgather_i64(d, &mine, 1, d->gathered, errstr, errstr_size);
    if (err == SHE_OK) {
        int64_t slowest = 1;
        for (int r = 0; r < W; r++)
            slowest = d->gathered[r] > slowest ? d->gathered[r] : slowest;
        out->seconds = (double)slowest * 1e-9;
        out->algbw_gbs = (double)(n * sizeof(float)) / out->seconds / 1e9;
        out->busbw_gbs = out->algbw_gbs * 2.0 * (W - 1) / W;
    }
#ifdef SHE_HAVE_CUDA
    if (on_device)
        cudaFree(buf);
    else
#endif
        free(buf);
    return err;
}
