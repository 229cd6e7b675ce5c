/* httpd.c -- the embedded HTTP server on libmicrohttpd (see httpd.h).
 *
 * libmicrohttpd calls on_request several times per request: once when the headers are in
 * (*con_cls still NULL), once per piece of body, and once more with no data when the body
 * is complete.  Everything that can be decided from the headers (route, rate limit, auth,
 * Content-Length) is answered on the first call, so a rejected body is never read; the
 * handler runs on the last call.  The route table is read-only once the server starts,
 * so the pool threads read it without a lock. */
#include "httpd.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "sha256.h"

#define ROUTE_BUILTIN 2 /* internal flag: /metrics, /healthz, /readyz (no rate limit) */

typedef struct route {
    char *method, *path;
    she_httpd_handler_fn fn;
    void *ud;
    int flags; /* SHE_HTTPD_PUBLIC | ROUTE_BUILTIN */
} route_t;

struct she_httpd_s {
    int fd; /* listening socket until MHD takes it over at start */
    int port;
    int ipv6;
    struct MHD_Daemon *daemon;
    route_t *routes;
    int n_routes, cap_routes;
    size_t max_body;
    int has_token;
    uint8_t token_hash[32]; /* SHA-256 of the bearer token: compared, never the token */
    unsigned threads, timeout_s, max_connections;
    she_metrics_t *metrics;
    she_metric_t *m_requests, *m_duration;
    she_httpd_ready_fn ready;
    void *ready_ud;
    she_httpd_limit_fn limit;
    void *limit_ud;
    she_log_t *log;
};

struct she_httpd_resp_s {
    int status; /* 0 until a setter runs */
    char content_type[128];
    char *body; /* malloc'd, len bytes */
    size_t len;
    char allow[128];   /* 405: the Allow header; "" for none */
    int challenge;     /* 401: send WWW-Authenticate */
    int retry_after;   /* 429: send Retry-After: 1 */
};

struct she_httpd_req_s {
    she_httpd_t *h;
    struct MHD_Connection *conn;
    const char *method, *path;
    const route_t *route;    /* matched route, NULL until matched */
    const char *route_label; /* metrics label: a registered path or "unmatched" */
    char *body;              /* NUL-terminated, len bytes */
    size_t len, cap;
    int answered; /* a response is queued; discard whatever body still arrives */
    int reject;   /* 413 or 500 once the body cannot be kept; 0 while it is */
    struct timespec t0;
    char client[INET6_ADDRSTRLEN];
};

/* ---- responses ---- */

/* Takes ownership of body (malloc'd, may be NULL when len is 0). */
static void resp_take(she_httpd_resp_t *resp, int status, const char *content_type, char *body,
                      size_t len) {
    free(resp->body);
    resp->status = status;
    snprintf(resp->content_type, sizeof(resp->content_type), "%s", content_type);
    resp->body = body;
    resp->len = len;
}

void she_httpd_resp_set(she_httpd_resp_t *resp, int status, const char *content_type,
                        const void *body, size_t len) {
    char *copy = malloc(len ? len : 1);
    if (!copy) {
        resp_take(resp, 500, "text/plain", NULL, 0);
        return;
    }
    if (len)
        memcpy(copy, body, len);
    resp_take(resp, status, content_type, copy, len);
}

void she_httpd_resp_json(she_httpd_resp_t *resp, int status, json_t *j) {
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!text) {
        static const char oom[] = "{\"error\":\"could not build the response\"}";
        she_httpd_resp_set(resp, 500, "application/json", oom, sizeof(oom) - 1);
        return;
    }
    resp_take(resp, status, "application/json", text, strlen(text));
}

void she_httpd_resp_error(she_httpd_resp_t *resp, int status, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    /* json_string refuses invalid UTF-8 (a message quoting client input could hold some) */
    json_t *s = json_string(msg);
    json_t *j = json_object();
    if (j)
        json_object_set_new(j, "error", s ? s : json_string("(message is not valid UTF-8)"));
    else
        json_decref(s);
    she_httpd_resp_json(resp, status, j);
}

/* ---- requests ---- */

const char *she_httpd_req_method(const she_httpd_req_t *req) { return req->method; }
const char *she_httpd_req_path(const she_httpd_req_t *req) { return req->path; }
const char *she_httpd_req_client(const she_httpd_req_t *req) { return req->client; }

const char *she_httpd_req_body(const she_httpd_req_t *req, size_t *len) {
    if (len)
        *len = req->len;
    return req->body ? req->body : "";
}

const char *she_httpd_req_header(const she_httpd_req_t *req, const char *name) {
    return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

const char *she_httpd_req_query(const she_httpd_req_t *req, const char *key) {
    return MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, key);
}

static double seconds_since(const struct timespec *t0) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0->tv_sec) + 1e-9 * (double)(t.tv_nsec - t0->tv_nsec);
}

/* Queues resp (500 if the handler set nothing), counts it and logs it. */
static enum MHD_Result answer(she_httpd_req_t *req, she_httpd_resp_t *resp) {
    she_httpd_t *h = req->h;
    if (resp->status == 0)
        she_httpd_resp_error(resp, 500, "the handler produced no response");
    struct MHD_Response *r;
    if (resp->len)
        r = MHD_create_response_from_buffer(resp->len, resp->body, MHD_RESPMEM_MUST_FREE);
    else
        r = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    if (!r) {
        free(resp->body);
        return MHD_NO;
    }
    if (resp->len == 0)
        free(resp->body);
    resp->body = NULL;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, resp->content_type);
    if (resp->allow[0])
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, resp->allow);
    if (resp->challenge)
        MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer realm=\"she\"");
    if (resp->retry_after)
        MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, "1");
    enum MHD_Result ok = MHD_queue_response(req->conn, (unsigned)resp->status, r);
    MHD_destroy_response(r);
    req->answered = 1;

    double dt = seconds_since(&req->t0);
    if (h->metrics) {
        char code[16];
        snprintf(code, sizeof(code), "%d", resp->status);
        const char *route_code[] = {req->route_label, code}, *route[] = {req->route_label};
        she_metrics_inc(she_metrics_series(h->m_requests, route_code));
        she_metrics_observe(she_metrics_series(h->m_duration, route), dt);
    }
    she_log_debug(h->log, "http %s %s -> %d in %.3f ms from %s%s", req->method, req->route_label,
                  resp->status, dt * 1e3, req->client, ok == MHD_YES ? "" : " (not sent)");
    return ok;
}

/* Constant-time in the token: both sides are hashed first, so neither the length nor the
 * position of the first difference shows in the timing. */
static int token_ok(const she_httpd_t *h, const char *authorization) {
    if (!authorization || strncasecmp(authorization, "Bearer ", 7) != 0)
        return 0;
    const char *token = authorization + 7;
    while (*token == ' ')
        token++;
    she_sha256_t sha;
    uint8_t digest[32];
    she_sha256_init(&sha);
    she_sha256_update(&sha, token, strlen(token));
    she_sha256_final(&sha, digest);
    volatile uint8_t diff = 0;
    for (int i = 0; i < 32; i++)
        diff |= digest[i] ^ h->token_hash[i];
    return diff == 0;
}

/* Answers what the headers alone decide; returns 1 if resp was set. */
static int precheck(she_httpd_req_t *req, she_httpd_resp_t *resp) {
    she_httpd_t *h = req->h;
    const char *method = strcmp(req->method, "HEAD") == 0 ? "GET" : req->method;
    size_t n = 0; /* length of resp->allow: every method of this path, GET implying HEAD */
    for (int i = 0; i < h->n_routes && !req->route; i++) {
        const route_t *rt = &h->routes[i];
        if (strcmp(rt->path, req->path) != 0)
            continue;
        req->route_label = rt->path;
        if (strcmp(rt->method, method) == 0)
            req->route = rt;
        else if (n < sizeof(resp->allow))
            n += (size_t)snprintf(resp->allow + n, sizeof(resp->allow) - n, "%s%s%s",
                                  n ? ", " : "", rt->method,
                                  strcmp(rt->method, "GET") == 0 ? ", HEAD" : "");
    }
    if (!req->route) {
        if (n)
            she_httpd_resp_error(resp, 405, "method not allowed; allowed: %s", resp->allow);
        else
            she_httpd_resp_error(resp, 404, "no such path");
        return 1;
    }
    resp->allow[0] = '\0';
    const route_t *rt = req->route;
    if (!(rt->flags & ROUTE_BUILTIN) && h->limit &&
        !h->limit(h->limit_ud, req->client, req->method, req->path)) {
        she_httpd_resp_error(resp, 429, "too many requests");
        resp->retry_after = 1;
        return 1;
    }
    if (h->has_token && !(rt->flags & SHE_HTTPD_PUBLIC) &&
        !token_ok(h, she_httpd_req_header(req, MHD_HTTP_HEADER_AUTHORIZATION))) {
        she_httpd_resp_error(resp, 401, "missing or wrong bearer token");
        resp->challenge = 1;
        return 1;
    }
    const char *cl = she_httpd_req_header(req, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl) {
        char *end;
        errno = 0;
        unsigned long long n = strtoull(cl, &end, 10);
        if (errno == ERANGE || n > h->max_body) {
            she_httpd_resp_error(resp, 413, "request body over %zu bytes", h->max_body);
            return 1;
        }
    }
    return 0;
}

/* Appends a piece of body; answers 413 once the body would pass the limit, 500 if memory
 * runs out, 0 when it was appended. */
static int body_append(she_httpd_req_t *req, const char *data, size_t n) {
    size_t max = req->h->max_body;
    if (n > max - req->len)
        return 413;
    if (req->len + n + 1 > req->cap) {
        size_t cap = req->cap ? req->cap : 1024;
        while (cap < req->len + n + 1)
            cap *= 2;
        if (cap > max + 1)
            cap = max + 1;
        char *p = realloc(req->body, cap);
        if (!p)
            return 500;
        req->body = p;
        req->cap = cap;
    }
    memcpy(req->body + req->len, data, n);
    req->len += n;
    req->body[req->len] = '\0';
    return 0;
}

static void client_address(struct MHD_Connection *conn, char *out, size_t size) {
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    snprintf(out, size, "unknown");
    if (!ci || !ci->client_addr)
        return;
    const struct sockaddr *sa = ci->client_addr;
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, out, (socklen_t)size);
    else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, out, (socklen_t)size);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls) {
    (void)version;
    she_httpd_t *h = cls;
    she_httpd_req_t *req = *con_cls;
    she_httpd_resp_t resp = {0};
    if (!req) {
        req = calloc(1, sizeof(*req));
        if (!req)
            return MHD_NO;
        *con_cls = req;
        req->h = h;
        req->conn = conn;
        req->method = method;
        req->path = url;
        req->route_label = "unmatched";
        clock_gettime(CLOCK_MONOTONIC, &req->t0);
        client_address(conn, req->client, sizeof(req->client));
        return precheck(req, &resp) ? answer(req, &resp) : MHD_YES;
    }
    if (req->answered) { /* body of an already rejected request */
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (*upload_data_size) {
        /* libmicrohttpd cannot queue a response in the middle of a body, so a body that
         * outgrows the limit is drained and dropped, and answered once it has ended. */
        if (!req->reject && (req->reject = body_append(req, upload_data, *upload_data_size))) {
            free(req->body);
            req->body = NULL;
            req->len = req->cap = 0;
        }
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (req->reject == 413)
        she_httpd_resp_error(&resp, 413, "request body over %zu bytes", h->max_body);
    else if (req->reject)
        she_httpd_resp_error(&resp, 500, "out of memory reading the body");
    if (req->reject)
        return answer(req, &resp);
    req->route->fn(req->route->ud, req, &resp);
    return answer(req, &resp);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
    (void)cls, (void)conn, (void)toe;
    she_httpd_req_t *req = *con_cls;
    if (req) {
        free(req->body);
        free(req);
        *con_cls = NULL;
    }
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap) {
    she_httpd_t *h = cls;
    char msg[512];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    msg[strcspn(msg, "\n")] = '\0';
    she_log_debug(h->log, "microhttpd: %s", msg);
}

/* ---- built-in routes ---- */

static void get_metrics(void *ud, const she_httpd_req_t *req, she_httpd_resp_t *resp) {
    (void)req;
    she_httpd_t *h = ud;
    size_t len;
    char *text = she_metrics_render(h->metrics, &len);
    if (!text)
        she_httpd_resp_error(resp, 500, "out of memory rendering metrics");
    else
        resp_take(resp, 200, SHE_METRICS_CONTENT_TYPE, text, len);
}

static void get_healthz(void *ud, const she_httpd_req_t *req, she_httpd_resp_t *resp) {
    (void)ud, (void)req;
    she_httpd_resp_json(resp, 200, json_pack("{s:s}", "status", "ok"));
}

static void get_readyz(void *ud, const she_httpd_req_t *req, she_httpd_resp_t *resp) {
    (void)req;
    she_httpd_t *h = ud;
    char reason[256] = "not ready";
    if (!h->ready || h->ready(h->ready_ud, reason, sizeof(reason))) {
        she_httpd_resp_json(resp, 200, json_pack("{s:b}", "ready", 1));
        return;
    }
    reason[sizeof(reason) - 1] = '\0';
    json_t *r = json_string(reason);
    she_httpd_resp_json(resp, 503, json_pack("{s:b,s:o}", "ready", 0, "reason",
                                             r ? r : json_string("(reason is not valid UTF-8)")));
}

/* ---- server ---- */

/* Splits "host:port", "[v6]:port" or ":port" and binds a listening socket to it. */
static she_err_t listen_on(she_httpd_t *h, const char *addr, char *errstr, size_t errstr_size) {
    char host[256];
    const char *port;
    if (addr[0] == '[') {
        const char *close = strchr(addr, ']');
        if (!close || close[1] != ':' || (size_t)(close - addr - 1) >= sizeof(host))
            return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                            "listen address '%s': expected [v6addr]:port", addr);
        snprintf(host, sizeof(host), "%.*s", (int)(close - addr - 1), addr + 1);
        port = close + 2;
    } else {
        const char *colon = strrchr(addr, ':');
        if (!colon || (size_t)(colon - addr) >= sizeof(host))
            return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                            "listen address '%s': expected host:port", addr);
        snprintf(host, sizeof(host), "%.*s", (int)(colon - addr), addr);
        if (!host[0])
            snprintf(host, sizeof(host), "127.0.0.1");
        port = colon + 1;
    }
    size_t nd = strspn(port, "0123456789");
    if (nd == 0 || nd > 5 || port[nd] != '\0' || atoi(port) > 65535)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                        "listen address '%s': bad port '%s'", addr, port);

    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    int rc = getaddrinfo(host, port, &hints, &ai);
    if (rc != 0)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size, "listen address '%s': %s", addr,
                        gai_strerror(rc));
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    she_err_t err = SHE_OK;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 128) < 0)
        err = she_errf(SHE_ERR_IO, errstr, errstr_size, "listen on '%s': %s", addr,
                       strerror(errno));
    h->ipv6 = ai->ai_family == AF_INET6;
    freeaddrinfo(ai);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    if (err == SHE_OK && getsockname(fd, (struct sockaddr *)&ss, &sl) < 0)
        err = she_errf(SHE_ERR_IO, errstr, errstr_size, "getsockname: %s", strerror(errno));
    if (err != SHE_OK) {
        if (fd >= 0)
            close(fd);
        return err;
    }
    h->fd = fd;
    h->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                             : ((struct sockaddr_in *)&ss)->sin_port);
    return SHE_OK;
}

she_err_t she_httpd_new(const char *listen_addr, const she_httpd_opts_t *opts,
                        she_httpd_t **out, char *errstr, size_t errstr_size) {
    static const she_httpd_opts_t defaults = {0};
    if (!opts)
        opts = &defaults;
    *out = NULL;
    she_httpd_t *h = calloc(1, sizeof(*h));
    SHE_CHECK_ALLOC(h);
    h->fd = -1;
    h->max_body = opts->max_body_bytes ? opts->max_body_bytes : (size_t)1 << 20;
    h->threads = opts->threads ? opts->threads : 2;
    h->timeout_s = opts->timeout_s ? opts->timeout_s : 10;
    h->max_connections = opts->max_connections ? opts->max_connections : 256;
    h->metrics = opts->metrics;
    h->ready = opts->ready;
    h->ready_ud = opts->ready_ud;
    h->limit = opts->limit;
    h->limit_ud = opts->limit_ud;
    h->log = opts->log;
    if (opts->bearer_token && opts->bearer_token[0]) {
        she_sha256_t sha;
        she_sha256_init(&sha);
        she_sha256_update(&sha, opts->bearer_token, strlen(opts->bearer_token));
        she_sha256_final(&sha, h->token_hash);
        h->has_token = 1;
    }
    she_err_t err = listen_on(h, listen_addr ? listen_addr : "127.0.0.1:9464", errstr,
                              errstr_size);
    if (err == SHE_OK && h->metrics)
        err = she_metrics_counter(h->metrics, "she_http_requests_total",
                                  "HTTP requests answered, by route and status code.",
                                  "route,code", &h->m_requests, errstr, errstr_size);
    if (err == SHE_OK && h->metrics)
        err = she_metrics_histogram(h->metrics, "she_http_request_duration_seconds",
                                    "Time from request headers to queued response.", "route",
                                    NULL, 0, &h->m_duration, errstr, errstr_size);
    if (err == SHE_OK && h->metrics)
        err = she_httpd_route(h, "GET", "/metrics", get_metrics, h,
                              ROUTE_BUILTIN | (opts->auth_metrics ? 0 : SHE_HTTPD_PUBLIC),
                              errstr, errstr_size);
    if (err == SHE_OK)
        err = she_httpd_route(h, "GET", "/healthz", get_healthz, h,
                              ROUTE_BUILTIN | SHE_HTTPD_PUBLIC, errstr, errstr_size);
    if (err == SHE_OK)
        err = she_httpd_route(h, "GET", "/readyz", get_readyz, h,
                              ROUTE_BUILTIN | SHE_HTTPD_PUBLIC, errstr, errstr_size);
    if (err != SHE_OK) {
        she_httpd_free(h);
        return err;
    }
    *out = h;
    return SHE_OK;
}

she_err_t she_httpd_route(she_httpd_t *h, const char *method, const char *path,
                          she_httpd_handler_fn fn, void *ud, int flags, char *errstr,
                          size_t errstr_size) {
    SHE_ASSERT(!h->daemon && fn && method);
    if (!path || path[0] != '/')
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size, "route path '%s' must start with /",
                        path ? path : "(null)");
    for (int i = 0; i < h->n_routes; i++)
        if (strcmp(h->routes[i].method, method) == 0 && strcmp(h->routes[i].path, path) == 0)
            return she_errf(SHE_ERR_INVALID, errstr, errstr_size, "route %s %s already exists",
                            method, path);
    if (h->n_routes == h->cap_routes) {
        h->cap_routes = h->cap_routes ? 2 * h->cap_routes : 8;
        h->routes = realloc(h->routes, (size_t)h->cap_routes * sizeof(*h->routes));
        SHE_CHECK_ALLOC(h->routes);
    }
    route_t *rt = &h->routes[h->n_routes++];
    rt->method = strdup(method);
    rt->path = strdup(path);
    SHE_CHECK_ALLOC(rt->method);
    SHE_CHECK_ALLOC(rt->path);
    rt->fn = fn;
    rt->ud = ud;
    rt->flags = flags;
    return SHE_OK;
}

she_err_t she_httpd_start(she_httpd_t *h, char *errstr, size_t errstr_size) {
    SHE_ASSERT(!h->daemon && h->fd >= 0);
    unsigned flags = MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ERROR_LOG;
    if (h->ipv6)
        flags |= MHD_USE_IPv6;
    h->daemon = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, h, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, h,
        MHD_OPTION_LISTEN_SOCKET, (MHD_socket)h->fd, MHD_OPTION_THREAD_POOL_SIZE, h->threads,
        MHD_OPTION_CONNECTION_TIMEOUT, h->timeout_s, MHD_OPTION_CONNECTION_LIMIT,
        h->max_connections, MHD_OPTION_NOTIFY_COMPLETED, on_completed, h, MHD_OPTION_END);
    /* The daemon owns the socket from here and closes it when it stops.  Whether a failed
     * start closed it is not documented, so it is left alone then: a leaked descriptor on
     * a fatal start-up path is better than closing one another thread may have reused. */
    h->fd = -1;
    if (!h->daemon)
        return she_errf(SHE_ERR_IO, errstr, errstr_size,
                        "libmicrohttpd could not start on port %d", h->port);
    return SHE_OK;
}

int she_httpd_port(const she_httpd_t *h) { return h->port; }

void she_httpd_free(she_httpd_t *h) {
    if (!h)
        return;
    if (h->daemon)
        MHD_stop_daemon(h->daemon);
    else if (h->fd >= 0)
        close(h->fd);
    for (int i = 0; i < h->n_routes; i++) {
        free(h->routes[i].method);
        free(h->routes[i].path);
    }
    free(h->routes);
    free(h);
}

she_err_t she_httpd_read_token_file(const char *path, char **out, char *errstr, size_t errstr_size) {
    FILE *f = fopen(path, "r");
    if (!f)
        return she_errf(SHE_ERR_NOT_FOUND, errstr, errstr_size, "token file %s: cannot open",
                        path);
    char line[4096];
    int got = fgets(line, sizeof(line), f) != NULL;
    fclose(f);
    size_t n = got ? strlen(line) : 0;
    while (n > 0 && strchr(" \t\r\n", line[n - 1]))
        line[--n] = '\0';
    if (n == 0)
        return she_errf(SHE_ERR_CONFIG, errstr, errstr_size, "token file %s: empty first line",
                        path);
    *out = strdup(line);
    SHE_CHECK_ALLOC(*out);
    return SHE_OK;
}
