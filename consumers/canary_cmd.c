/* canary_cmd.c -- `she canary`: moves evaluated policies to production through a canary.
 *
 * It reads the evaluation records on she.evaluations (all of them, from the beginning: no
 * consumer group), runs them through the offline gates and, one canary at a time, publishes
 * DeploymentEvents on she.deployments (key: the version decided, in decimal), which `she
 * serve` follows: START puts the candidate on canary at canary.share, PROMOTE makes it the
 * stable, ROLLBACK drops it, ABORT records a candidate refused offline.  While a canary soaks
 * it polls serve's GET /admin/status every canary.poll.seconds for the live gates.  The
 * gates and the state machine are consumers/canary.h; this file is the I/O around them.
 *
 * The stable version at start: --stable-version, else the one the deployment log ends with
 * (she.deployments read back to its end, which also tells which versions were decided
 * already and which canary was soaking when the controller stopped: it soaks again), else
 * the one serve reports, else the first evaluated policy.  A malformed evaluation record
 * goes to the dead-letter topic.  Stops cleanly on SIGTERM.
 *
 * Not here: TLS to serve (plain http:// only; put it on a private network or a sidecar),
 * noticing that someone else changed serve's stable version behind the controller's back. */
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "clock.h"
#include "cmd.h"
#include "commands.h"
#include "consumers/canary.h"
#include "messages.h"
#include "signals.h"
#include "stream.h"

static const she_conf_def_t canary_defs[] = {
    {"canary.share", SHE_CONF_DOUBLE, "0.1", "traffic share of a started canary", 0.001, 1, NULL,
     "share"},
    {"canary.f1.epsilon", SHE_CONF_DOUBLE, "0.02",
     "offline gate: macro F1 may be this much below the stable's", 0, 1, NULL, NULL},
    {"canary.max.format.failures", SHE_CONF_DOUBLE, "0.05",
     "offline gate: highest share of unparsable answers on the held-out set", 0, 1, NULL, NULL},
    {"canary.max.error.rate", SHE_CONF_DOUBLE, "0.05",
     "live gate: highest (errors + judge failures) / requests of the canary", 0, 1, NULL, NULL},
    {"canary.max.latency.factor", SHE_CONF_DOUBLE, "1.5",
     "live gate: canary p95 latency <= this x stable p95 + canary.latency.slack.seconds", 1,
     1000, NULL, NULL},
    {"canary.latency.slack.seconds", SHE_CONF_DOUBLE, "0.05",
     "live gate: absolute slack added to the latency bound", 0, 3600, NULL, NULL},
    {"canary.min.agreement", SHE_CONF_DOUBLE, "0.7",
     "live gate: lowest share of shadow-compared requests where canary and stable agree", 0, 1,
     NULL, NULL},
    {"canary.min.requests", SHE_CONF_INT, "50",
     "canary requests before the live gates are judged", 0, 1e12, NULL, NULL},
    {"canary.min.compared", SHE_CONF_INT, "20",
     "shadow comparisons before the live gates are judged (0: agreement optional)", 0, 1e12,
     NULL, NULL},
    {"canary.soak.seconds", SHE_CONF_DOUBLE, "300",
     "the live gates must hold this long before a promotion", 0, 31536000, NULL, "soak"},
    {"canary.max.soak.seconds", SHE_CONF_DOUBLE, "0",
     "roll back a canary still undecided this long after its start (0: 3 x soak + 60 s)", 0,
     31536000,
     NULL, NULL},
    {"canary.poll.seconds", SHE_CONF_DOUBLE, "2", "how often serve's status is read", 0.05, 3600,
     NULL, NULL},
    {"canary.serve.url", SHE_CONF_STR, "http://127.0.0.1:8080",
     "base URL of `she serve` (GET <url>/admin/status)", 0, 0, NULL, "serve-url"},
    {"canary.serve.token", SHE_CONF_STR, "",
     "bearer token for serve's admin endpoint ('' = none)", 0, 0, NULL, NULL},
    {"canary.serve.token.file", SHE_CONF_STR, "",
     "file holding that token (first line; e.g. a mounted Secret) instead of canary.serve.token",
     0, 0, NULL, "token-file"},
    {"canary.stable.version", SHE_CONF_INT, "-1",
     "the stable version at start (-1: from the deployment log, serve, or the first evaluation)",
     -1, 9.2e18, NULL, "stable-version"},
    {"metrics.listen", SHE_CONF_STR, "127.0.0.1:9472", "/metrics address (0 = off)", 0, 0, NULL,
     "metrics"},
    {NULL, 0, NULL, NULL, 0, 0, NULL, NULL},
};

#define HTTP_TIMEOUT_MS 2000
#define HTTP_MAX_BYTES (1 << 20)

/* ---- serve's status over HTTP/1.0 ---- */

typedef struct serve_url {
    char host[256];
    char port[16];
    char path[1024]; /* ".../admin/status" */
} serve_url_t;

/* "http://host[:port][/prefix]" or "http://[v6]:port" -> host, port, prefix + /admin/status. */
static she_err_t parse_url(const char *url, serve_url_t *u, char *errstr, size_t errstr_size) {
    if (strncmp(url, "http://", 7) != 0)
        return she_errf(SHE_ERR_CONFIG, errstr, errstr_size,
                        "canary.serve.url: '%s' is not an http:// URL", url);
    const char *h = url + 7, *end;
    if (*h == '[') {
        end = strchr(h, ']');
        if (!end)
            return she_errf(SHE_ERR_CONFIG, errstr, errstr_size,
                            "canary.serve.url: '%s': unclosed '['", url);
        snprintf(u->host, sizeof(u->host), "%.*s", (int)(end - h - 1), h + 1);
        end++;
    } else {
        end = h + strcspn(h, ":/");
        snprintf(u->host, sizeof(u->host), "%.*s", (int)(end - h), h);
    }
    snprintf(u->port, sizeof(u->port), "80");
    if (*end == ':') {
        size_t n = strspn(end + 1, "0123456789");
        if (n == 0 || n >= sizeof(u->port) || (end[1 + n] && end[1 + n] != '/'))
            return she_errf(SHE_ERR_CONFIG, errstr, errstr_size,
                            "canary.serve.url: '%s': bad port", url);
        snprintf(u->port, sizeof(u->port), "%.*s", (int)n, end + 1);
        end += 1 + n;
    } else if (*end && *end != '/') {
        return she_errf(SHE_ERR_CONFIG, errstr, errstr_size, "canary.serve.url: '%s': bad host",
                        url);
    }
    if (!u->host[0])
        return she_errf(SHE_ERR_CONFIG, errstr, errstr_size, "canary.serve.url: '%s': no host",
                        url);
    size_t plen = strlen(end);
    while (plen > 0 && end[plen - 1] == '/')
        plen--;
    snprintf(u->path, sizeof(u->path), "%.*s/admin/status", (int)plen, end);
    return SHE_OK;
}

/* GET u->path; *body (malloc'd, NUL-terminated) on a complete answer of any status. */
static she_err_t http_get(const serve_url_t *u, const char *token, int *status, char **body,
                          char *errstr, size_t errstr_size) {
    *body = NULL;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
    int rc = getaddrinfo(u->host, u->port, &hints, &ai);
    if (rc != 0)
        return she_errf(SHE_ERR_IO, errstr, errstr_size, "%s:%s: %s", u->host, u->port,
                        gai_strerror(rc));
    int fd = -1;
    struct timeval tv = {.tv_sec = HTTP_TIMEOUT_MS / 1000,
                         .tv_usec = (HTTP_TIMEOUT_MS % 1000) * 1000};
    for (struct addrinfo *a = ai; a && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype, a->ai_protocol);
        if (fd < 0)
            continue;
        /* SO_SNDTIMEO bounds connect() too on Linux */
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        if (connect(fd, a->ai_addr, a->ai_addrlen) != 0) {
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(ai);
    if (fd < 0)
        return she_errf(SHE_ERR_IO, errstr, errstr_size, "connect to %s:%s: %s", u->host,
                        u->port, strerror(errno));
    char req[2048];
    int n = snprintf(req, sizeof(req), "GET %s HTTP/1.0\r\nHost: %s\r\n%s%s%sAccept: "
                     "application/json\r\n\r\n",
                     u->path, u->host, token[0] ? "Authorization: Bearer " : "", token,
                     token[0] ? "\r\n" : "");
    she_err_t err = SHE_OK;
    if (n <= 0 || (size_t)n >= sizeof(req) || write(fd, req, (size_t)n) != n)
        err = she_errf(SHE_ERR_IO, errstr, errstr_size, "GET %s: cannot send the request",
                       u->path);
    char *buf = malloc(HTTP_MAX_BYTES + 1);
    SHE_CHECK_ALLOC(buf);
    size_t len = 0;
    ssize_t r = 0;
    while (err == SHE_OK && len < HTTP_MAX_BYTES &&
           (r = read(fd, buf + len, HTTP_MAX_BYTES - len)) > 0)
        len += (size_t)r;
    close(fd);
    if (err == SHE_OK && r < 0)
        err = she_errf(SHE_ERR_IO, errstr, errstr_size, "GET %s: %s", u->path, strerror(errno));
    buf[len] = '\0';
    char *sep = strstr(buf, "\r\n\r\n");
    if (err == SHE_OK && (sscanf(buf, "HTTP/%*d.%*d %d", status) != 1 || !sep))
        err = she_errf(SHE_ERR_FORMAT, errstr, errstr_size, "GET %s: malformed HTTP answer",
                       u->path);
    if (err != SHE_OK) {
        free(buf);
        return err;
    }
    memmove(buf, sep + 4, len - (size_t)(sep + 4 - buf) + 1);
    *body = buf;
    return SHE_OK;
}

/* ---- the controller ---- */

typedef struct controller {
    she_log_t *lg;
    she_stream_t *st;
    she_canary_t *can;
    serve_url_t url;
    const char *token;
    int serve_down; /* last status read failed (logged once per outage) */
    she_metric_t *m_decisions;
    she_metric_series_t *s_active, *s_canary, *s_stable, *s_soak;
} controller_t;

/* Reads serve's status; 0 (logged once per outage) when it cannot be had. */
static int read_status(controller_t *c, she_canary_live_t *lv) {
    char errstr[SHE_ERRSTR_SIZE], *body = NULL;
    int status = 0;
    she_err_t err = http_get(&c->url, c->token, &status, &body, errstr, sizeof(errstr));
    if (err == SHE_OK && status != 200)
        err = she_errf(SHE_ERR_IO, errstr, sizeof(errstr), "GET %s: HTTP %d: %.200s",
                       c->url.path, status, body);
    if (err == SHE_OK)
        err = she_canary_parse_status(body, lv, errstr, sizeof(errstr));
    free(body);
    if (err != SHE_OK) {
        if (!c->serve_down)
            she_log_warn(c->lg, "no status from serve (%s); live gates wait", errstr);
        c->serve_down = 1;
        return 0;
    }
    if (c->serve_down)
        she_log_info(c->lg, "serve answers again: stable v%" PRId64, lv->stable.version);
    c->serve_down = 0;
    return 1;
}

/* Reads she.deployments back to its end: the last stable version, the highest version decided
 * and a canary left soaking.  Returns 1 when there was any event. */
static int restore(controller_t *c, const she_conf_t *conf, int64_t *stable, int64_t *decided,
                   int64_t *soaking) {
    char errstr[SHE_ERRSTR_SIZE];
    she_stream_t *rd = NULL;
    she_stream_opts_t o = {.component = "canary", .consumer = 1};
    const char *topics[] = {"deployments"};
    *stable = *decided = *soaking = -1;
    if (she_stream_new(conf, c->lg, NULL, &o, &rd, errstr, sizeof(errstr)) != SHE_OK ||
        she_stream_assign(rd, topics, 1, NULL, 30000, errstr, sizeof(errstr)) != SHE_OK) {
        she_log_warn(c->lg, "cannot read the deployment log (%s); starting afresh", errstr);
        she_stream_free(rd);
        return 0;
    }
    int64_t lo = 0, hi = 0;
    rd_kafka_query_watermark_offsets(she_stream_consumer(rd), she_stream_topic_name("deployments"),
                                     0, &lo, &hi, 10000);
    she_deployment_event_t ev = {0};
    int n = 0;
    int64_t deadline = she_stream_now_ms() + 10000, next = lo;
    while (next < hi && she_stream_now_ms() < deadline && !she_signals_stop_requested()) {
        rd_kafka_message_t *rkm = she_stream_poll(rd, 200);
        if (!rkm)
            continue;
        next = rkm->offset + 1;
        char key[32] = "";
        if (rkm->key && rkm->key_len < sizeof(key)) {
            memcpy(key, rkm->key, rkm->key_len);
            key[rkm->key_len] = '\0';
        }
        char *end;
        long long version = strtoll(key, &end, 10);
        if (she_msg_decode_deployment_event(she_stream_codec(rd), rkm->payload, rkm->len, &ev,
                                            errstr, sizeof(errstr)) != SHE_OK ||
            !key[0] || *end) {
            she_log_warn(c->lg, "deployment log offset %" PRId64 " unreadable (%s); skipped",
                         rkm->offset, key[0] && !*end ? errstr : "key is not a version");
        } else {
            n++;
            *stable = ev.stable_version;
            if (ev.action == SHE_DEPLOY_ACTION_START) {
                *soaking = ev.canary_version;
            } else {
                if (version > *decided)
                    *decided = version;
                if (version == *soaking)
                    *soaking = -1;
            }
        }
        rd_kafka_message_destroy(rkm);
    }
    she_msg_clear_deployment_event(&ev);
    she_stream_free(rd);
    return n > 0;
}

/* "v<N>", or "none" for -1. */
static void version_text(int64_t v, char *buf, size_t size) {
    if (v < 0)
        snprintf(buf, size, "none");
    else
        snprintf(buf, size, "v%" PRId64, v);
}

/* Publishes a decision on she.deployments, logs it with its reason and counts it. */
static void publish(controller_t *c, const she_canary_decision_t *d) {
    she_msg_metric_t metrics[SHE_CANARY_MAX_METRICS];
    for (int i = 0; i < d->n_metrics; i++)
        metrics[i] = (she_msg_metric_t){(char *)d->metrics[i].name, d->metrics[i].value};
    she_deployment_event_t ev = {.action = d->action,
                                 .stable_version = d->stable_version,
                                 .canary_version = d->canary_version,
                                 .canary_share = (float)d->canary_share,
                                 .reason = (char *)d->reason,
                                 .metrics = metrics,
                                 .n_metrics = d->n_metrics,
                                 .created_ms = she_stream_now_ms()};
    char errstr[SHE_ERRSTR_SIZE], key[32];
    snprintf(key, sizeof(key), "%" PRId64, d->version);
    const uint8_t *buf;
    size_t len;
    she_err_t err = she_msg_encode_deployment_event(she_stream_codec(c->st), &ev, &buf, &len,
                                                    errstr, sizeof(errstr));
    if (err == SHE_OK)
        err = she_stream_produce(c->st, "deployments", key, strlen(key), buf, len, errstr,
                                 sizeof(errstr));
    /* serve acts on the event: deliver it now rather than with the next batch */
    if (err == SHE_OK)
        err = she_stream_commit(c->st, 10000, errstr, sizeof(errstr));
    char line[1024];
    int off = 0;
    for (int i = 0; i < d->n_metrics && off < (int)sizeof(line) - 64; i++)
        off += snprintf(line + off, sizeof(line) - (size_t)off, "%s%s=%.4g", i ? " " : "",
                        d->metrics[i].name, d->metrics[i].value);
    line[off] = '\0';
    const char *action = she_canary_action_name(d->action);
    char canary[32];
    version_text(d->canary_version, canary, sizeof(canary));
    she_log_info(c->lg, "%s v%" PRId64 " (stable v%" PRId64 ", canary %s, share %.3f): %s [%s]",
                 action, d->version, d->stable_version, canary, d->canary_share, d->reason, line);
    if (err != SHE_OK)
        she_log_error(c->lg, "deployment event for v%" PRId64 " not published: %s", d->version,
                      errstr);
    if (c->m_decisions) {
        const char *label[] = {action};
        she_metrics_inc(she_metrics_series(c->m_decisions, label));
    }
}

static void take_evaluation(controller_t *c, const rd_kafka_message_t *rkm,
                            she_evaluation_record_t *er) {
    char errstr[SHE_ERRSTR_SIZE];
    if (she_msg_decode_evaluation(she_stream_codec(c->st), rkm->payload, rkm->len, er, errstr,
                                  sizeof(errstr)) != SHE_OK) {
        she_stream_dead_letter(c->st, rkm, errstr);
        return;
    }
    she_canary_eval_t ev = {.version = er->policy_version,
                            .macro_f1 = er->macro_f1,
                            .good_f1 = er->good_f1,
                            .accuracy = er->accuracy,
                            .format_failure_rate = er->format_failure_rate,
                            .rows = er->rows};
    int64_t skipped = -1;
    she_canary_offer_t o = she_canary_offer(c->can, &ev, &skipped);
    she_canary_state_t s;
    she_canary_state(c->can, 0, &s);
    switch (o) {
    case SHE_CANARY_OFFER_STABLE:
        she_log_info(c->lg, "v%" PRId64 " is the stable: macro F1 %.4f, format failures %.4f on "
                     "%s",
                     ev.version, ev.macro_f1, ev.format_failure_rate, er->dataset);
        break;
    case SHE_CANARY_OFFER_QUEUED:
        she_log_info(c->lg, "v%" PRId64 " evaluated: macro F1 %.4f, format failures %.4f on %s%s",
                     ev.version, ev.macro_f1, ev.format_failure_rate, er->dataset,
                     s.canary >= 0 ? "; queued behind the canary" : "");
        if (skipped >= 0)
            she_log_info(c->lg, "skipping v%" PRId64 ": superseded by v%" PRId64
                         " before its canary started", skipped, ev.version);
        break;
    case SHE_CANARY_OFFER_SUPERSEDED:
        she_log_info(c->lg, "skipping v%" PRId64 ": superseded by v%" PRId64 " (queued)",
                     skipped, s.queued);
        break;
    case SHE_CANARY_OFFER_OLD:
        she_log_debug(c->lg, "v%" PRId64 ": already decided or deployed; ignored", ev.version);
        break;
    }
}

static void set_gauges(controller_t *c, double now) {
    if (!c->s_active)
        return;
    she_canary_state_t s;
    she_canary_state(c->can, now, &s);
    she_metrics_set(c->s_active, s.canary >= 0);
    she_metrics_set(c->s_canary, (double)s.canary);
    she_metrics_set(c->s_stable, (double)s.stable);
    she_metrics_set(c->s_soak, s.soak_s);
}

static she_err_t register_metrics(controller_t *c, she_metrics_t *reg, char *errstr,
                                  size_t errstr_size) {
    she_metric_t *m_active, *m_canary, *m_stable, *m_soak;
    SHE_TRY(she_metrics_counter(reg, "she_canary_decisions_total",
                                "Canary decisions published on she.deployments.", "action",
                                &c->m_decisions, errstr, errstr_size));
    SHE_TRY(she_metrics_gauge(reg, "she_canary_active", "1 while a canary soaks.", NULL,
                              &m_active, errstr, errstr_size));
    SHE_TRY(she_metrics_gauge(reg, "she_canary_version",
                              "Policy version on canary (-1: none).", NULL, &m_canary, errstr,
                              errstr_size));
    SHE_TRY(she_metrics_gauge(reg, "she_stable_version",
                              "Stable policy version (-1: not known yet).", NULL, &m_stable,
                              errstr, errstr_size));
    SHE_TRY(she_metrics_gauge(reg, "she_canary_soak_seconds",
                              "How long the current canary has soaked.", NULL, &m_soak, errstr,
                              errstr_size));
    static const char *const actions[] = {"start", "promote", "rollback", "abort"};
    for (int i = 0; i < 4; i++) /* every action from the first scrape, at 0 */
        she_metrics_series(c->m_decisions, &actions[i]);
    c->s_active = she_metrics_series(m_active, NULL);
    c->s_canary = she_metrics_series(m_canary, NULL);
    c->s_stable = she_metrics_series(m_stable, NULL);
    c->s_soak = she_metrics_series(m_soak, NULL);
    return SHE_OK;
}

int she_cmd_canary(int argc, char **argv, char **envp) {
    she_cmd_env_t env;
    int rc = she_cmd_init(
        &env, argc, argv, envp, "she canary [--serve-url URL] [--stable-version N] [options]",
        "Moves evaluated policies (she.evaluations) to production through a canary of\n"
        "`she serve`: offline gates (macro F1, format failures), START at canary.share, live\n"
        "gates from serve's /admin/status during canary.soak.seconds (error rate, p95\n"
        "latency against the stable's, shadow agreement), then PROMOTE or ROLLBACK; every\n"
        "decision is a DeploymentEvent on she.deployments and a log line with its reason.\n"
        "Stops cleanly on SIGTERM.",
        canary_defs);
    if (rc >= 0) {
        she_cmd_fini(&env);
        return rc;
    }
    she_signals_install();
    const she_conf_t *conf = env.conf;
    char errstr[SHE_ERRSTR_SIZE];
    double soak = she_conf_get_double(conf, "canary.soak.seconds");
    double max_soak = she_conf_get_double(conf, "canary.max.soak.seconds");
    she_canary_config_t cfg = {
        .share = she_conf_get_double(conf, "canary.share"),
        .f1_epsilon = she_conf_get_double(conf, "canary.f1.epsilon"),
        .max_format_failures = she_conf_get_double(conf, "canary.max.format.failures"),
        .max_error_rate = she_conf_get_double(conf, "canary.max.error.rate"),
        .latency_factor = she_conf_get_double(conf, "canary.max.latency.factor"),
        .latency_slack_s = she_conf_get_double(conf, "canary.latency.slack.seconds"),
        .min_agreement = she_conf_get_double(conf, "canary.min.agreement"),
        .min_requests = she_conf_get_int(conf, "canary.min.requests"),
        .min_compared = she_conf_get_int(conf, "canary.min.compared"),
        .soak_s = soak,
        /* the default leaves serve a minute to load the canary even for a short soak */
        .max_soak_s = max_soak > 0 ? max_soak : 3 * soak + 60,
    };
    controller_t c = {.lg = env.lg, .token = she_conf_get(conf, "canary.serve.token")};
    she_metrics_t *reg = she_metrics_new();
    she_httpd_t *httpd = NULL;
    int status = SHE_EXIT_OK;
    char *file_token = NULL;
    she_err_t err = parse_url(she_conf_get(conf, "canary.serve.url"), &c.url, errstr,
                              sizeof(errstr));
    const char *token_file = she_conf_get(conf, "canary.serve.token.file");
    if (err == SHE_OK && token_file[0] && c.token[0])
        err = she_errf(SHE_ERR_CONFIG, errstr, sizeof(errstr),
                       "give canary.serve.token or canary.serve.token.file, not both");
    else if (err == SHE_OK && token_file[0] &&
             (err = she_httpd_read_token_file(token_file, &file_token, errstr, sizeof(errstr))) ==
                 SHE_OK)
        c.token = file_token;
    if (err == SHE_OK && cfg.max_soak_s < cfg.soak_s)
        err = she_errf(SHE_ERR_CONFIG, errstr, sizeof(errstr),
                       "canary.max.soak.seconds (%g) is shorter than canary.soak.seconds (%g)",
                       cfg.max_soak_s, cfg.soak_s);
    if (err == SHE_OK) {
        c.can = she_canary_new(&cfg);
        she_stream_opts_t o = {.component = "canary", .consumer = 1, .producer = 1};
        err = she_stream_new(conf, env.lg, reg, &o, &c.st, errstr, sizeof(errstr));
    }
    if (err == SHE_OK)
        err = register_metrics(&c, reg, errstr, sizeof(errstr));
    if (err == SHE_OK)
        err = she_stream_serve_metrics(she_conf_get(conf, "metrics.listen"), reg, env.lg, &httpd,
                                       errstr, sizeof(errstr));
    const char *topics[] = {"evaluations"};
    if (err == SHE_OK)
        err = she_stream_assign(c.st, topics, 1, NULL, 30000, errstr, sizeof(errstr));
    if (err != SHE_OK) {
        she_log_error(env.lg, "%s", errstr);
        status = she_cmd_exit_status(err);
    }
    if (err == SHE_OK) {
        int64_t stable = she_conf_get_int(conf, "canary.stable.version");
        int64_t log_stable, decided, soaking;
        she_canary_live_t lv;
        int have_log = restore(&c, conf, &log_stable, &decided, &soaking);
        if (stable >= 0) {
            she_log_info(env.lg, "stable v%" PRId64 " (--stable-version)", stable);
        } else if (have_log && log_stable >= 0) {
            stable = log_stable;
            she_log_info(env.lg, "stable v%" PRId64 " (from the deployment log)", stable);
        } else if (read_status(&c, &lv) && lv.stable.version >= 0) {
            stable = lv.stable.version;
            she_log_info(env.lg, "stable v%" PRId64 " (as serve reports it)", stable);
        } else {
            she_log_info(env.lg, "no stable version yet: the first evaluated policy becomes it");
        }
        if (stable >= 0)
            she_canary_set_stable(c.can, stable);
        she_canary_mark_decided(c.can, decided);
        if (soaking >= 0 && soaking > stable) {
            she_canary_resume(c.can, soaking, she_now_s());
            she_log_info(env.lg, "canary v%" PRId64 " was soaking before the restart: it soaks "
                         "again", soaking);
        }
        she_log_info(env.lg, "gates: macro F1 >= stable - %.3f, format failures <= %.3f; live "
                     "after %" PRId64 " requests / %" PRId64 " comparisons: error rate <= %.3f, "
                     "p95 <= %.2f x stable + %.3f s, agreement >= %.3f; soak %.0f s (at most "
                     "%.0f s); serve %s:%s%s",
                     cfg.f1_epsilon, cfg.max_format_failures, cfg.min_requests, cfg.min_compared,
                     cfg.max_error_rate, cfg.latency_factor, cfg.latency_slack_s,
                     cfg.min_agreement, cfg.soak_s, cfg.max_soak_s, c.url.host, c.url.port,
                     c.url.path);
        double poll_s = she_conf_get_double(conf, "canary.poll.seconds");
        double last_poll = -1e18;
        int have_live = 0;
        she_evaluation_record_t er = {0};
        she_canary_decision_t d;
        while (!she_signals_stop_requested()) {
            rd_kafka_message_t *rkm = she_stream_poll(c.st, 200);
            if (rkm) {
                take_evaluation(&c, rkm, &er);
                rd_kafka_message_destroy(rkm);
            }
            double now = she_now_s();
            she_canary_state_t s;
            she_canary_state(c.can, now, &s);
            if (s.canary >= 0 && now - last_poll >= poll_s) {
                have_live = read_status(&c, &lv);
                last_poll = now;
            }
            while (she_canary_step(c.can, now, have_live ? &lv : NULL, &d)) {
                publish(&c, &d);
                if (d.action == SHE_DEPLOY_ACTION_START) { /* the old snapshot is not its data */
                    have_live = 0;
                    last_poll = -1e18;
                }
            }
            set_gauges(&c, now);
            she_stream_service(c.st);
        }
        she_msg_clear_evaluation(&er);
        she_canary_state_t s;
        she_canary_state(c.can, she_now_s(), &s);
        char canary[32];
        version_text(s.canary, canary, sizeof(canary));
        she_log_info(env.lg, "stopping (SIGTERM): stable v%" PRId64 ", canary %s", s.stable,
                     canary);
    }
    she_httpd_free(httpd);
    she_stream_free(c.st);
    she_canary_free(c.can);
    she_metrics_free(reg);
    free(file_token);
    she_cmd_fini(&env);
    return status;
}
