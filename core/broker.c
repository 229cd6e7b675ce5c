/* broker.c -- the embedded mock cluster plus an optional fixed-port bootstrap forwarder. */
#include "broker.h"

#include <arpa/inet.h>
#include <errno.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "kafka.h"

/* One forwarded connection: a thread copies bytes both ways until either side closes. */
typedef struct fwd_conn {
    int client_fd, upstream_fd;
    pthread_t thread;
    atomic_int done;
    struct fwd_conn *next;
    she_broker_t *b;
} fwd_conn_t;

struct she_broker_s {
    rd_kafka_t *rk; /* owns the mock cluster (librdkafka needs a client for book keeping) */
    rd_kafka_mock_cluster_t *mcluster;
    int n_brokers;
    char bootstrap[256];
    char upstream_host[64];
    int upstream_port;
    int listen_fd; /* -1 when no fixed port */
    pthread_t accept_thread;
    int accept_running;
    atomic_int stopping;
    pthread_mutex_t lock; /* guards conns */
    fwd_conn_t *conns;
    she_log_t *lg;
};

/* Copies whatever is readable on `from` to `to`; returns 0 when the stream should end. */
static int pump(int from, int to) {
    char buf[65536];
    ssize_t n = recv(from, buf, sizeof(buf), 0);
    if (n <= 0)
        return 0;
    for (ssize_t off = 0; off < n;) {
        ssize_t w = send(to, buf + off, (size_t)(n - off), MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return 0;
        }
        off += w;
    }
    return 1;
}

static void *fwd_main(void *arg) {
    fwd_conn_t *c = arg;
    struct pollfd pfd[2] = {{c->client_fd, POLLIN, 0}, {c->upstream_fd, POLLIN, 0}};
    while (!atomic_load(&c->b->stopping)) {
        int r = poll(pfd, 2, 200);
        if (r < 0 && errno != EINTR)
            break;
        if (r <= 0)
            continue;
        if ((pfd[0].revents & (POLLIN | POLLHUP | POLLERR)) && !pump(c->client_fd, c->upstream_fd))
            break;
        if ((pfd[1].revents & (POLLIN | POLLHUP | POLLERR)) && !pump(c->upstream_fd, c->client_fd))
            break;
    }
    close(c->client_fd);
    close(c->upstream_fd);
    atomic_store(&c->done, 1);
    return NULL;
}

static int connect_upstream(const she_broker_t *b) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)b->upstream_port)};
    inet_pton(AF_INET, b->upstream_host, &sin.sin_addr);
    if (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0) {
        close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

/* Joins connections that have finished, so a long-lived broker does not accumulate threads. */
static void reap_conns(she_broker_t *b, int all) {
    pthread_mutex_lock(&b->lock);
    fwd_conn_t **pp = &b->conns;
    while (*pp) {
        fwd_conn_t *c = *pp;
        if (all || atomic_load(&c->done)) {
            *pp = c->next;
            pthread_join(c->thread, NULL);
            free(c);
        } else {
            pp = &c->next;
        }
    }
    pthread_mutex_unlock(&b->lock);
}

static void *accept_main(void *arg) {
    she_broker_t *b = arg;
    struct pollfd pfd = {b->listen_fd, POLLIN, 0};
    while (!atomic_load(&b->stopping)) {
        reap_conns(b, 0);
        int r = poll(&pfd, 1, 200);
        if (r <= 0)
            continue;
        int cfd = accept(b->listen_fd, NULL, NULL);
        if (cfd < 0)
            continue;
        int ufd = connect_upstream(b);
        if (ufd < 0) {
            /* Broker 1 is down (fault injection) or gone: the client sees a closed
             * connection, exactly as if the broker itself refused it. */
            she_log_debug(b->lg, "bootstrap forward: upstream %s:%d unavailable", b->upstream_host,
                          b->upstream_port);
            close(cfd);
            continue;
        }
        int one = 1;
        setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        fwd_conn_t *c = calloc(1, sizeof(*c));
        SHE_CHECK_ALLOC(c);
        c->client_fd = cfd;
        c->upstream_fd = ufd;
        c->b = b;
        if (pthread_create(&c->thread, NULL, fwd_main, c) != 0) {
            she_log_error(b->lg, "bootstrap forward: cannot start a thread: %s", strerror(errno));
            close(cfd);
            close(ufd);
            free(c);
            continue;
        }
        pthread_mutex_lock(&b->lock);
        c->next = b->conns;
        b->conns = c;
        pthread_mutex_unlock(&b->lock);
    }
    return NULL;
}

static she_err_t start_listener(she_broker_t *b, const char *host, int port, char *errstr,
                                size_t errstr_size) {
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *ai = NULL;
    char portstr[16];
    snprintf(portstr, sizeof(portstr), "%d", port);
    int gai = getaddrinfo(host, portstr, &hints, &ai);
    if (gai != 0)
        return she_errf(SHE_ERR_CONFIG, errstr, errstr_size, "broker listen address '%s': %s",
                        host, gai_strerror(gai));
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    if (fd >= 0)
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (fd < 0 || bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 64) < 0) {
        int e = errno;
        freeaddrinfo(ai);
        if (fd >= 0)
            close(fd);
        return she_errf(SHE_ERR_IO, errstr, errstr_size, "cannot listen on %s:%d: %s", host, port,
                        strerror(e));
    }
    freeaddrinfo(ai);
    b->listen_fd = fd;
    if (pthread_create(&b->accept_thread, NULL, accept_main, b) != 0) {
        close(fd);
        b->listen_fd = -1;
        return she_errf(SHE_ERR_IO, errstr, errstr_size, "cannot start the listener thread");
    }
    b->accept_running = 1;
    snprintf(b->bootstrap, sizeof(b->bootstrap), "%s:%d", host, port);
    return SHE_OK;
}

she_err_t she_broker_new(int n_brokers, const char *listen_host, int port, she_log_t *lg,
                         she_broker_t **out, char *errstr, size_t errstr_size) {
    if (n_brokers < 1 || n_brokers > 16)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                        "broker count %d is outside [1, 16]", n_brokers);
    if (port < 0 || port > 65535)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size, "port %d is outside [0, 65535]",
                        port);
    she_broker_t *b = calloc(1, sizeof(*b));
    SHE_CHECK_ALLOC(b);
    b->listen_fd = -1;
    b->n_brokers = n_brokers;
    b->lg = lg;
    pthread_mutex_init(&b->lock, NULL);

    rd_kafka_conf_t *kconf = rd_kafka_conf_new();
    char rderr[512];
    /* The book-keeping client never talks to anyone; keep it from complaining about that. */
    rd_kafka_conf_set(kconf, "log_level", "3", rderr, sizeof(rderr));
    b->rk = rd_kafka_new(RD_KAFKA_PRODUCER, kconf, rderr, sizeof(rderr));
    if (!b->rk) {
        rd_kafka_conf_destroy(kconf);
        she_broker_free(b);
        return she_errf(SHE_ERR_KAFKA, errstr, errstr_size, "rd_kafka_new: %s", rderr);
    }
    b->mcluster = rd_kafka_mock_cluster_new(b->rk, n_brokers);
    if (!b->mcluster) {
        she_broker_free(b);
        return she_errf(SHE_ERR_KAFKA, errstr, errstr_size,
                        "rd_kafka_mock_cluster_new failed for %d brokers", n_brokers);
    }
    const char *mock_bootstrap = rd_kafka_mock_cluster_bootstraps(b->mcluster);
    snprintf(b->bootstrap, sizeof(b->bootstrap), "%s", mock_bootstrap);
    /* The first entry is broker 1 ("127.0.0.1:port,..."): the forwarder's upstream. */
    if (sscanf(mock_bootstrap, "%63[^:]:%d", b->upstream_host, &b->upstream_port) != 2) {
        she_broker_free(b);
        return she_errf(SHE_ERR_KAFKA, errstr, errstr_size,
                        "cannot parse the mock cluster's bootstrap list '%s'", mock_bootstrap);
    }
    if (port > 0) {
        she_err_t err = start_listener(b, listen_host ? listen_host : "127.0.0.1", port, errstr,
                                       errstr_size);
        if (err != SHE_OK) {
            she_broker_free(b);
            return err;
        }
    }
    she_log_info(lg, "mock cluster up: %d broker(s) at %s; bootstrap %s", n_brokers,
                 mock_bootstrap, b->bootstrap);
    *out = b;
    return SHE_OK;
}

void she_broker_free(she_broker_t *b) {
    if (!b)
        return;
    atomic_store(&b->stopping, 1);
    if (b->accept_running)
        pthread_join(b->accept_thread, NULL);
    reap_conns(b, 1);
    if (b->listen_fd >= 0)
        close(b->listen_fd);
    if (b->mcluster)
        rd_kafka_mock_cluster_destroy(b->mcluster);
    if (b->rk)
        rd_kafka_destroy(b->rk);
    pthread_mutex_destroy(&b->lock);
    free(b);
}

const char *she_broker_bootstrap(const she_broker_t *b) { return b->bootstrap; }

she_err_t she_broker_create_topics(she_broker_t *b, const she_topic_def_t *topics, char *errstr,
                                   size_t errstr_size) {
    for (const she_topic_def_t *t = topics; t->id; t++) {
        int rf = b->n_brokers < 3 ? b->n_brokers : 3;
        SHE_TRY_RDK(rd_kafka_mock_topic_create(b->mcluster, t->name, t->partitions, rf));
        she_log_debug(b->lg, "topic %s: %d partition(s), replication %d", t->name, t->partitions,
                      rf);
    }
    return SHE_OK;
}

static she_err_t check_id(const she_broker_t *b, int broker_id, char *errstr, size_t errstr_size) {
    if (broker_id != -1 && (broker_id < 1 || broker_id > b->n_brokers))
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                        "broker id %d is not -1 (all) or in [1, %d]", broker_id, b->n_brokers);
    return SHE_OK;
}

she_err_t she_broker_set_down(she_broker_t *b, int broker_id, char *errstr, size_t errstr_size) {
    SHE_TRY(check_id(b, broker_id, errstr, errstr_size));
    SHE_TRY_RDK(rd_kafka_mock_broker_set_down(b->mcluster, broker_id));
    she_log_warn(b->lg, "fault control: broker %d set DOWN", broker_id);
    return SHE_OK;
}

she_err_t she_broker_set_up(she_broker_t *b, int broker_id, char *errstr, size_t errstr_size) {
    SHE_TRY(check_id(b, broker_id, errstr, errstr_size));
    SHE_TRY_RDK(rd_kafka_mock_broker_set_up(b->mcluster, broker_id));
    she_log_warn(b->lg, "fault control: broker %d set UP", broker_id);
    return SHE_OK;
}
