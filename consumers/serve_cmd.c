/* serve_cmd.c -- `she serve`: the relevance judge over HTTP (consumers/serve.h), with a stable
 * policy from --model and a canary either fixed on the command line (--canary DIR
 * --canary-share S, no Kafka) or driven by `she canary` through she.deployments (--follow).
 *
 * Following: one reader assigned to she.checkpoints and she.deployments from the beginning.
 * At start it reads both to their ends, remembering where every announced version lives and
 * keeping only the last deployment event, which it applies before the HTTP server starts; then
 * it applies each new event as it comes.  An event naming a version not announced yet waits
 * for the announcement up to serve.resolve.timeout.ms (a newer event replaces it).  Malformed
 * messages and events that make no sense go to the dead-letter topic; a checkpoint that fails
 * verification is refused by the serve core, and the old state keeps serving.
 *
 * SIGTERM: /readyz turns 503 and new judge requests get 503 while the requests in flight are
 * answered (their batches run to the end); then the HTTP server stops and the policies are
 * unloaded. */
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "cmd.h"
#include "commands.h"
#include "consumers/serve.h"
#include "dataset.h"
#include "engine.h"
#include "messages.h"
#include "signals.h"
#include "stream.h"

static const she_conf_def_t serve_defs[] = {
    {"serve.listen", SHE_CONF_STR, "127.0.0.1:8080",
     "HTTP address (host:port, [v6]:port; port 0 picks a free one)", 0, 0, NULL, "listen"},
    {"serve.port.file", SHE_CONF_STR, NULL, "write the bound port to this file once listening", 0,
     0, NULL, "port-file"},
    {"serve.model", SHE_CONF_STR, NULL, "stable policy checkpoint directory (required)", 0, 0,
     NULL, "model"},
    {"serve.model.version", SHE_CONF_INT, "-1",
     "version of serve.model (-1: its trainer_state.json \"version\", else 0)", -1, 1e15, NULL,
     NULL},
    {"serve.canary", SHE_CONF_STR, NULL, "static canary checkpoint directory (no Kafka)", 0, 0,
     NULL, "canary"},
    {"serve.canary.version", SHE_CONF_INT, "-1",
     "version of serve.canary (-1: its trainer_state.json \"version\", else stable + 1)", -1,
     1e15, NULL, NULL},
    {"serve.canary.share", SHE_CONF_DOUBLE, "0.1", "share of queries routed to serve.canary", 0,
     1, NULL, "canary-share"},
    {"serve.follow", SHE_CONF_BOOL, "false",
     "follow she.deployments (canary, promotion, rollback by `she canary`)", 0, 0, NULL,
     "follow"},
    {"serve.resolve.timeout.ms", SHE_CONF_INT, "30000",
     "how long a deployment waits for its checkpoint's announcement", 0, 86400000, NULL, NULL},
    {"serve.batch.max", SHE_CONF_INT, "16", "requests judged together at most", 1, 1024, NULL,
     "batch"},
    {"serve.batch.wait.ms", SHE_CONF_INT, "5", "longest a request waits for others to join", 0,
     10000, NULL, NULL},
    {"serve.timeout.ms", SHE_CONF_INT, "30000", "longest a request waits for its answer (503)", 1,
     600000, NULL, NULL},
    {"serve.queue.max", SHE_CONF_INT, "256", "requests queued per policy at most (503)", 1,
     1000000, NULL, NULL},
    {"serve.shadow.share", SHE_CONF_DOUBLE, "0.1",
     "share of canary-routed requests stable judges too (agreement)", 0, 1, NULL, NULL},
    {"serve.device", SHE_CONF_STR, "cpu",
     "where judging runs: cpu, cuda or cuda:N, optionally /tf32 or /bf16 GEMMs", 0, 0, NULL,
     "device"},
    {"serve.max.prompt", SHE_CONF_INT, "128", "prompt tokens (the item text is cut to fit)", 2,
     4096, NULL, NULL},
    {"serve.max.new", SHE_CONF_INT, "128", "answer tokens", 1, 4096, NULL, NULL},
    {"serve.threads", SHE_CONF_INT, "16",
     "HTTP threads (each waits on its request: at least the batch size)", 1, 1024, NULL, NULL},
    {"serve.max.body.bytes", SHE_CONF_INT, "65536", "request body limit (413)", 256, 1 << 30,
     NULL, NULL},
    {"serve.max.field.bytes", SHE_CONF_INT, "2048",
     "limit of query, title and attribute names and values", 1, 1 << 30, NULL, NULL},
    {"serve.max.description.bytes", SHE_CONF_INT, "16384", "limit of the description", 0,
     1 << 30, NULL, NULL},
    {"serve.max.attributes", SHE_CONF_INT, "32", "attributes per request at most", 0, 100000,
     NULL, NULL},
    {"serve.rate.limit", SHE_CONF_DOUBLE, "0",
     "judge requests per second over all clients (429 beyond; 0 = no limit)", 0, 1e9, NULL,
     NULL},
    {"serve.rate.burst", SHE_CONF_DOUBLE, "0", "requests saved up by the rate limit (0 = rate)",
     0, 1e9, NULL, NULL},
    {"serve.auth.token", SHE_CONF_STR, NULL,
     "bearer token required by /v1/judge and /admin/* (unset: no auth)", 0, 0, NULL, NULL},
    {"serve.auth.token.file", SHE_CONF_STR, NULL, "file holding the bearer token (first line)", 0,
     0, NULL, "token-file"},
    {"serve.auth.metrics", SHE_CONF_BOOL, "false", "/metrics needs the token too", 0, 0, NULL,
     NULL},
    {NULL, 0, NULL, NULL, 0, 0, NULL, NULL},
};

/* The "version" of a checkpoint's trainer_state.json (the learner writes one), or fallback. */
static int64_t dir_version(const char *dir, int64_t fallback) {
    char path[4200];
    snprintf(path, sizeof(path), "%s/trainer_state.json", dir);
    json_t *st = json_load_file(path, 0, NULL);
    json_t *v = json_object_get(st, "version");
    int64_t version = json_is_integer(v) ? (int64_t)json_integer_value(v) : fallback;
    json_decref(st);
    return version;
}

static she_err_t write_port_file(const char *path, int port, char *errstr, size_t errstr_size) {
    she_outfile_t of;
    SHE_TRY(she_outfile_open(&of, path, errstr, errstr_size));
    fprintf(of.f, "%d\n", port);
    return she_outfile_close(&of, 1, errstr, errstr_size);
}

/* ---- following she.deployments ---- */

typedef struct follower {
    she_serve_t *sv;
    she_log_t *lg;
    she_stream_t *st;
    she_deployment_event_t pending; /* waiting for a checkpoint announcement */
    int has_pending;
    double pending_since;
    double resolve_timeout_s;
} follower_t;

/* Applies the pending event; keeps it pending while a version is not announced (until the
 * timeout).  rkm (may be NULL) is the event's message, dead-lettered if the event is invalid. */
static void apply_pending(follower_t *f, const rd_kafka_message_t *rkm) {
    char errstr[SHE_ERRSTR_SIZE];
    she_err_t err = she_serve_deploy(f->sv, &f->pending, errstr, sizeof(errstr));
    if (err == SHE_ERR_NOT_FOUND && she_now_s() - f->pending_since < f->resolve_timeout_s)
        return;
    if (err == SHE_ERR_NOT_FOUND)
        she_log_error(f->lg, "deployment event given up after %.0f s: %s; the old state keeps "
                      "serving", f->resolve_timeout_s, errstr);
    else if (err == SHE_ERR_INVALID && rkm)
        she_stream_dead_letter(f->st, rkm, errstr); /* refused checkpoints: logged by serve */
    she_msg_clear_deployment_event(&f->pending);
    f->has_pending = 0;
}

/* Takes one message of either topic; deployment events are applied unless catching up. */
static void follow_message(follower_t *f, const rd_kafka_message_t *rkm, int catching_up) {
    char errstr[SHE_ERRSTR_SIZE];
    const char *topic = rd_kafka_topic_name(rkm->rkt);
    she_avro_codec_t *ac = she_stream_codec(f->st);
    if (strcmp(topic, she_stream_topic_name("checkpoints")) == 0) {
        she_checkpoint_announcement_t a = {0};
        if (she_msg_decode_checkpoint(ac, rkm->payload, rkm->len, &a, errstr, sizeof(errstr)) !=
            SHE_OK)
            she_stream_dead_letter(f->st, rkm, errstr);
        else
            she_serve_note_checkpoint(f->sv, &a);
        she_msg_clear_checkpoint(&a);
        if (f->has_pending && !catching_up)
            apply_pending(f, NULL);
        return;
    }
    she_deployment_event_t ev = {0};
    if (she_msg_decode_deployment_event(ac, rkm->payload, rkm->len, &ev, errstr,
                                        sizeof(errstr)) != SHE_OK) {
        she_stream_dead_letter(f->st, rkm, errstr);
        return;
    }
    if (f->has_pending && !catching_up)
        she_log_warn(f->lg, "a newer deployment event replaces one still waiting for its "
                     "checkpoint");
    she_msg_clear_deployment_event(&f->pending);
    f->pending = ev;
    f->has_pending = 1;
    f->pending_since = she_now_s();
    if (!catching_up)
        apply_pending(f, rkm);
}

/* Assigns both topics from the beginning and reads them to their ends, then applies the last
 * deployment event. */
static she_err_t follow_start(follower_t *f, const she_conf_t *conf, she_metrics_t *reg,
                              char *errstr, size_t errstr_size) {
    she_stream_opts_t o = {.component = "serve", .consumer = 1, .producer = 1};
    SHE_TRY(she_stream_new(conf, f->lg, reg, &o, &f->st, errstr, errstr_size));
    const char *ids[2] = {"checkpoints", "deployments"};
    SHE_TRY(she_stream_assign(f->st, ids, 2, NULL, 30000, errstr, errstr_size));
    int64_t hi[2] = {0, 0}, next[2] = {0, 0};
    for (int i = 0; i < 2; i++) {
        int64_t lo = 0;
        rd_kafka_resp_err_t e = rd_kafka_query_watermark_offsets(
            she_stream_consumer(f->st), she_stream_topic_name(ids[i]), 0, &lo, &hi[i], 10000);
        if (e != RD_KAFKA_RESP_ERR_NO_ERROR)
            return she_errf(SHE_ERR_KAFKA, errstr, errstr_size, "%s: %s",
                            she_stream_topic_name(ids[i]), rd_kafka_err2str(e));
        next[i] = lo;
    }
    double deadline = she_now_s() + 30;
    while ((next[0] < hi[0] || next[1] < hi[1]) && !she_signals_stop_requested()) {
        if (she_now_s() > deadline)
            return she_errf(SHE_ERR_TIMEOUT, errstr, errstr_size,
                            "could not read she.checkpoints and she.deployments to their ends");
        rd_kafka_message_t *rkm = she_stream_poll(f->st, 200);
        if (!rkm)
            continue;
        int i = strcmp(rd_kafka_topic_name(rkm->rkt), she_stream_topic_name(ids[0])) == 0 ? 0 : 1;
        next[i] = rkm->offset + 1;
        follow_message(f, rkm, 1);
        rd_kafka_message_destroy(rkm);
    }
    she_log_info(f->lg, "read %" PRId64 " checkpoint announcements and %" PRId64
                 " deployment events", hi[0], hi[1]);
    if (f->has_pending)
        apply_pending(f, NULL);
    return SHE_OK;
}

/* ---- the command ---- */

static void opts_from_conf(const she_conf_t *conf, she_serve_opts_t *o) {
    she_serve_opts_default(o);
    o->judge.max_batch = (int)she_conf_get_int(conf, "serve.batch.max");
    o->judge.max_prompt = (int)she_conf_get_int(conf, "serve.max.prompt");
    o->judge.max_new_tokens = (int)she_conf_get_int(conf, "serve.max.new");
    o->judge.device = she_conf_get(conf, "serve.device");
    o->batch_wait_ms = (int)she_conf_get_int(conf, "serve.batch.wait.ms");
    o->timeout_ms = (int)she_conf_get_int(conf, "serve.timeout.ms");
    o->queue_max = (int)she_conf_get_int(conf, "serve.queue.max");
    o->shadow_share = she_conf_get_double(conf, "serve.shadow.share");
    o->rate_limit = she_conf_get_double(conf, "serve.rate.limit");
    o->rate_burst = she_conf_get_double(conf, "serve.rate.burst");
    o->limits.max_field_bytes = (size_t)she_conf_get_int(conf, "serve.max.field.bytes");
    o->limits.max_desc_bytes = (size_t)she_conf_get_int(conf, "serve.max.description.bytes");
    o->limits.max_attributes = (int)she_conf_get_int(conf, "serve.max.attributes");
}

/* Loads the policies named on the command line. */
static she_err_t load_static(she_serve_t *sv, const she_conf_t *conf, char *errstr,
                             size_t errstr_size) {
    const char *model = she_conf_get(conf, "serve.model");
    int64_t v = she_conf_get_int(conf, "serve.model.version");
    if (v < 0)
        v = dir_version(model, 0);
    SHE_TRY(she_serve_load(sv, SHE_SERVE_ROLE_STABLE, model, v, NULL, errstr, errstr_size));
    const char *canary = she_conf_get(conf, "serve.canary");
    if (!canary)
        return SHE_OK;
    int64_t cv = she_conf_get_int(conf, "serve.canary.version");
    if (cv < 0)
        cv = dir_version(canary, v + 1);
    SHE_TRY(she_serve_load(sv, SHE_SERVE_ROLE_CANARY, canary, cv, NULL, errstr, errstr_size));
    she_serve_set_canary_share(sv, she_conf_get_double(conf, "serve.canary.share"));
    return SHE_OK;
}

int she_cmd_serve(int argc, char **argv, char **envp) {
    she_cmd_env_t env;
    int rc = she_cmd_init(
        &env, argc, argv, envp, "she serve --model DIR [--canary DIR --canary-share S] [options]",
        "Serves the relevance judge over HTTP: POST /v1/judge with {\"query\", \"title\",\n"
        "\"attributes\", \"description\"} answers the grade, the five steps, the policy version\n"
        "and role. Concurrent requests are judged in batches (greedy). A canary policy gets a\n"
        "share of the queries by a hash of the query, fixed with --canary or driven by the\n"
        "deployment events on she.deployments with --follow. GET /admin/status, /metrics,\n"
        "/healthz, /readyz. Stops cleanly on SIGTERM.",
        serve_defs);
    if (rc >= 0) {
        she_cmd_fini(&env);
        return rc;
    }
    she_signals_install();
    const she_conf_t *conf = env.conf;
    char errstr[SHE_ERRSTR_SIZE];
    she_err_t err = SHE_OK;
    int follow = she_conf_get_bool(conf, "serve.follow");
    she_device_t dev; /* a wrong --device fails before anything loads (exit 2) */
    if (she_device_select(she_conf_get(conf, "serve.device"), &dev, errstr, sizeof(errstr)) !=
        SHE_OK)
        err = SHE_ERR_CONFIG;
    else if (!she_conf_get(conf, "serve.model"))
        err = she_errf(SHE_ERR_CONFIG, errstr, sizeof(errstr), "--model DIR is required");
    else if (follow && she_conf_get(conf, "serve.canary"))
        err = she_errf(SHE_ERR_CONFIG, errstr, sizeof(errstr),
                       "--canary is the static mode: with --follow the canary comes from "
                       "she.deployments");
    else if (she_conf_get(conf, "serve.auth.token") && she_conf_get(conf, "serve.auth.token.file"))
        err = she_errf(SHE_ERR_CONFIG, errstr, sizeof(errstr),
                       "give serve.auth.token or serve.auth.token.file, not both");
    char *token = NULL;
    if (err == SHE_OK && she_conf_get(conf, "serve.auth.token.file"))
        err = she_httpd_read_token_file(she_conf_get(conf, "serve.auth.token.file"), &token, errstr,
                         sizeof(errstr));
    else if (err == SHE_OK && she_conf_get(conf, "serve.auth.token")) {
        token = strdup(she_conf_get(conf, "serve.auth.token"));
        SHE_CHECK_ALLOC(token);
    }

    she_metrics_t *reg = she_metrics_new();
    she_serve_t *sv = NULL;
    she_httpd_t *httpd = NULL;
    follower_t f = {.lg = env.lg,
                    .resolve_timeout_s = she_conf_get_int(conf, "serve.resolve.timeout.ms") / 1e3};
    she_serve_opts_t so;
    opts_from_conf(conf, &so);
    if (err == SHE_OK)
        err = she_serve_new(&so, env.lg, reg, &sv, errstr, sizeof(errstr));
    if (err == SHE_OK)
        err = load_static(sv, conf, errstr, sizeof(errstr));
    f.sv = sv;
    if (err == SHE_OK && follow)
        err = follow_start(&f, conf, reg, errstr, sizeof(errstr));
    she_httpd_opts_t ho = {.max_body_bytes = (size_t)she_conf_get_int(conf, "serve.max.body.bytes"),
                           .bearer_token = token,
                           .auth_metrics = she_conf_get_bool(conf, "serve.auth.metrics"),
                           .threads = (unsigned)she_conf_get_int(conf, "serve.threads"),
                           .metrics = reg,
                           .ready = she_serve_ready,
                           .ready_ud = sv,
                           .limit = she_serve_limit,
                           .limit_ud = sv,
                           .log = env.lg};
    if (err == SHE_OK)
        err = she_httpd_new(she_conf_get(conf, "serve.listen"), &ho, &httpd, errstr,
                            sizeof(errstr));
    if (err == SHE_OK)
        err = she_serve_attach(sv, httpd, errstr, sizeof(errstr));
    if (err == SHE_OK)
        err = she_httpd_start(httpd, errstr, sizeof(errstr));
    const char *port_file = she_conf_get(conf, "serve.port.file");
    if (err == SHE_OK && port_file)
        err = write_port_file(port_file, she_httpd_port(httpd), errstr, sizeof(errstr));
    int status = she_cmd_exit_status(err);
    if (err != SHE_OK) {
        she_log_error(env.lg, "%s", errstr);
    } else {
        char canary[64] = "none";
        if (she_serve_version(sv, SHE_SERVE_ROLE_CANARY) >= 0)
            snprintf(canary, sizeof(canary), "v%" PRId64,
                     she_serve_version(sv, SHE_SERVE_ROLE_CANARY));
        she_log_info(env.lg, "serving on port %d: stable v%" PRId64 ", canary %s%s%s",
                     she_httpd_port(httpd), she_serve_version(sv, SHE_SERVE_ROLE_STABLE), canary,
                     token ? ", bearer token required" : "",
                     follow ? ", following she.deployments" : "");
        while (!she_signals_stop_requested()) {
            if (!follow) {
                she_signals_sleep_ms(200);
                continue;
            }
            rd_kafka_message_t *rkm = she_stream_poll(f.st, 200);
            if (rkm) {
                follow_message(&f, rkm, 0);
                rd_kafka_message_destroy(rkm);
            } else if (f.has_pending) {
                apply_pending(&f, NULL);
            }
        }
        she_log_info(env.lg, "stopping (SIGTERM): finishing the requests in flight");
        int left = she_serve_drain(sv, so.timeout_ms + 1000);
        if (left)
            she_log_warn(env.lg, "%d requests still in flight; cut off", left);
        /* a handler has returned before its answer is written: give the HTTP threads a
         * moment to write the last answers before the server closes every connection */
        nanosleep(&(struct timespec){0, 100 * 1000 * 1000}, NULL);
    }
    she_httpd_free(httpd);
    she_stream_free(f.st);
    she_msg_clear_deployment_event(&f.pending);
    she_serve_free(sv);
    she_metrics_free(reg);
    if (port_file && status == SHE_EXIT_OK)
        remove(port_file);
    free(token);
    she_cmd_fini(&env);
    return status;
}
