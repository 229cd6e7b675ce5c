/* httpd.h -- the small embedded HTTP server every she component runs (libmicrohttpd).
 *
 * A server has a route table of exact (method, path) pairs mapped to handlers, and three
 * built-in routes: GET /metrics (the she_metrics_t, text format 0.0.4), GET /healthz (200
 * while the process serves requests) and GET /readyz (200, or 503 with the reason a
 * callback gives).  HEAD is answered wherever GET is.  Handlers run on a pool of
 * libmicrohttpd threads, several at once, so they must be thread-safe.
 *
 * What the server does before a handler runs, in this order:
 *   unknown path -> 404, known path but other method -> 405 with Allow (JSON error bodies:
 *   {"error": "..."}); the rate-limit hook, if any, -> 429 (routes only, not the built-ins);
 *   the bearer token, if set -> 401 for a missing or wrong "Authorization: Bearer <token>"
 *   (compared in constant time; /healthz and /readyz never need it, /metrics only when
 *   auth_metrics is set, routes unless registered SHE_HTTPD_PUBLIC); a body over
 *   max_body_bytes -> 413 (from Content-Length before the body is read; a chunked body that
 *   outgrows the limit is drained without being kept and answered 413 when it ends).
 *   Malformed HTTP is answered by libmicrohttpd itself (400, 431, ...) without reaching
 *   any of this.  Idle connections time out, and the number of connections is capped, so
 *   slow or abandoned clients cannot pin the threads.
 * Every answered request counts in she_http_requests_total{route,code} and
 * she_http_request_duration_seconds{route} when a registry is given (route is the
 * registered path, or "unmatched", so the label set stays bounded).
 *
 * Not provided: TLS (terminate it in front, e.g. in a Kubernetes ingress), path patterns,
 * streaming responses, keeping state between requests. */
#ifndef SHE_HTTPD_H
#define SHE_HTTPD_H

#include <jansson.h>
#include <stddef.h>

#include "error.h"
#include "log.h"
#include "metrics.h"

typedef struct she_httpd_s she_httpd_t;
typedef struct she_httpd_req_s she_httpd_req_t;   /* valid only during the handler call */
typedef struct she_httpd_resp_s she_httpd_resp_t; /* valid only during the handler call */

/* Fills resp through the she_httpd_resp_* setters; a handler that sets nothing answers
 * 500.  Must be thread-safe: several requests run at once. */
typedef void (*she_httpd_handler_fn)(void *ud, const she_httpd_req_t *req,
                                     she_httpd_resp_t *resp);
/* Returns 1 if the component is ready to serve; else 0 and a short reason in reason. */
typedef int (*she_httpd_ready_fn)(void *ud, char *reason, size_t reason_size);
/* Returns 1 to let the request from client (an IP address) through, 0 to answer 429. */
typedef int (*she_httpd_limit_fn)(void *ud, const char *client, const char *method,
                                  const char *path);

typedef struct she_httpd_opts {
    size_t max_body_bytes;    /* larger request bodies get 413; 0 = 1 MiB */
    const char *bearer_token; /* non-empty: routes need it (copied) */
    int auth_metrics;         /* 1: GET /metrics needs the token too */
    unsigned threads;         /* worker threads; 0 = 2 */
    unsigned timeout_s;       /* idle connection timeout; 0 = 10 */
    unsigned max_connections; /* 0 = 256 */
    she_metrics_t *metrics;   /* served at /metrics (404 when NULL); must outlive the server */
    she_httpd_ready_fn ready; /* NULL: always ready */
    void *ready_ud;
    she_httpd_limit_fn limit; /* NULL: no rate limit */
    void *limit_ud;
    she_log_t *log;           /* NULL logs to stderr; requests are logged at debug */
} she_httpd_opts_t;

/* Route flag: no bearer token needed even when one is set. */
#define SHE_HTTPD_PUBLIC 1

/* Creates a server bound and listening on listen_addr: "host:port", "[v6addr]:port" or
 * ":port" (host 127.0.0.1); NULL means "127.0.0.1:9464"; port 0 picks a free port
 * (see she_httpd_port).  opts may be NULL for the defaults.  Connections wait in the
 * kernel's backlog until she_httpd_start.  Returns SHE_ERR_INVALID for a malformed address,
 * SHE_ERR_IO if it cannot be bound (in use, no permission); *out is NULL then.
 * Free with she_httpd_free(). */
she_err_t she_httpd_new(const char *listen_addr, const she_httpd_opts_t *opts,
                        she_httpd_t **out, char *errstr, size_t errstr_size);

/* Adds a route before start (adding after start is a bug).  method is "GET", "POST", ...;
 * path an exact path such as "/v1/judge"; flags 0 or SHE_HTTPD_PUBLIC.  Returns
 * SHE_ERR_INVALID for a duplicate (method, path) or a path not starting with '/'. */
she_err_t she_httpd_route(she_httpd_t *h, const char *method, const char *path,
                          she_httpd_handler_fn fn, void *ud, int flags, char *errstr,
                          size_t errstr_size);

/* Starts answering requests on the pool threads.  Returns SHE_ERR_IO if libmicrohttpd
 * cannot start. */
she_err_t she_httpd_start(she_httpd_t *h, char *errstr, size_t errstr_size);

/* The bound TCP port. */
int she_httpd_port(const she_httpd_t *h);

/* A bearer token from a file (a mounted Secret): its first line without trailing whitespace,
 * malloc'd into *out.  SHE_ERR_NOT_FOUND when it cannot be opened, SHE_ERR_CONFIG when the first
 * line is empty; both name the file. */
she_err_t she_httpd_read_token_file(const char *path, char **out, char *errstr,
                                    size_t errstr_size);

/* Stops accepting, waits for running handlers, closes every connection and frees h.
 * NULL does nothing. */
void she_httpd_free(she_httpd_t *h);

/* ---- inside a handler ---- */

const char *she_httpd_req_method(const she_httpd_req_t *req);
const char *she_httpd_req_path(const she_httpd_req_t *req);
/* The request body (NUL-terminated, "" when none); its length in *len (may be NULL). */
const char *she_httpd_req_body(const she_httpd_req_t *req, size_t *len);
/* A request header (name case-insensitive) or query-string argument; NULL if absent. */
const char *she_httpd_req_header(const she_httpd_req_t *req, const char *name);
const char *she_httpd_req_query(const she_httpd_req_t *req, const char *key);
/* The client's IP address as text. */
const char *she_httpd_req_client(const she_httpd_req_t *req);

/* Sets the response, copying body (len bytes).  A later call replaces an earlier one. */
void she_httpd_resp_set(she_httpd_resp_t *resp, int status, const char *content_type,
                        const void *body, size_t len);
/* Answers with j as compact JSON; takes ownership of j (NULL answers 500, so
 * she_httpd_resp_json(resp, 200, json_pack(...)) needs no check). */
void she_httpd_resp_json(she_httpd_resp_t *resp, int status, json_t *j);
/* Answers {"error": "<message>"} with the given status. */
void she_httpd_resp_error(she_httpd_resp_t *resp, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
