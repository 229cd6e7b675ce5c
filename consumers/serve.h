/* serve.h -- the core of `she serve`: the relevance judge behind an HTTP JSON API, with a stable
 * and an optional canary policy side by side (consumers/serve_cmd.c adds configuration, Kafka
 * and signals).
 *
 * A request (POST /v1/judge, body {"query": str, "title": str, "attributes": {str: str},
 * "description": str}, the last two optional) is parsed strictly: anything else is answered
 * 4xx with {"error": "..."} naming the field or the JSON position, and counted.  Routing is a
 * pure function of the normalised query (ASCII lowercase, whitespace runs as one space, ends
 * trimmed): the query's hash places it in [0, 1), and it goes to the canary when that
 * position is below the canary share, so the same query always meets the same policy while
 * the share is unchanged, and raising the share only moves queries from stable to canary.
 * A second, independent position of the hash picks the canary-routed queries that are also
 * judged by stable (shadow comparison): that judgement runs after the answer is sent, and
 * only counts whether both grades agree (two answers without a grade agree).
 *
 * Each loaded policy has its own tokenizer, model, judge (greedy) and worker thread.  The
 * worker takes the queued requests once it has judge.max_batch of them or the first has
 * waited batch_wait_ms, and judges them in one she_judge_run.  Only one batch runs at a time
 * over all policies: each already spreads over every core (OpenMP), and two at once would
 * only fight over them.  A request that is not answered within timeout_ms gets 503 (and,
 * if it is still queued, never runs), and so does one that finds the queue full.
 *
 * Policies change under traffic: she_serve_load replaces a role's policy, she_serve_deploy
 * brings the state to what a DeploymentEvent says (stable version, canary version or none,
 * share), loading versions from the checkpoint announcements seen so far.  A checkpoint is
 * verified like core/policy_watch.c does (manifest, the announced SHA-256 of the weights)
 * before it is loaded; one that fails is refused with a log line and the old state keeps
 * serving.  A policy taken out of service finishes the requests already routed to it and is
 * freed by the last of them.
 *
 * Metrics (names fixed by the monitoring contract): she_serve_requests_total{role,version,
 * code}, she_serve_request_duration_seconds{role,version} (queueing included),
 * she_serve_judge_failures_total{role,version} (answers that did not parse),
 * she_serve_batch_rows, she_serve_canary_share, she_serve_policy_version{role} (-1 for a
 * role without a policy), she_serve_shadow_comparisons_total{result},
 * she_serve_rejected_requests_total{reason = auth | rate | size | invalid}.  Requests that
 * the HTTP server itself rejects (401, 413) are read from its she_http_requests_total, so
 * the server must be given the same registry.
 *
 * GET /admin/status answers {"stable": {"version", "requests", "errors", "judge_failures",
 * "latency_p95_s"}, "canary": {... the same ..., "share"} or null, "shadow": {"compared",
 * "agreed"}}: counts since the policy took its role ("errors": answers 5xx -- timeouts, a full
 * queue, a failed batch; "latency_p95_s": over every answer of that version in that role, null
 * before the first), shadow counts of the current canary.
 *
 * Not here: TLS, per-client quotas (the rate limit is global), streaming answers, sampling
 * temperature (serving is greedy). */
#ifndef SHE_SERVE_H
#define SHE_SERVE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "httpd.h"
#include "log.h"
#include "messages.h"
#include "metrics.h"
#include "sample.h"
#include "trainer/judge.h"

/* ---- requests ---- */

typedef struct she_serve_limits {
    size_t max_field_bytes; /* query, title, attribute names and values (UTF-8 bytes) */
    size_t max_desc_bytes;  /* description */
    int max_attributes;
} she_serve_limits_t;

/* Fills *out (zeroed by the caller; free with she_sample_clear) from a request body of len
 * bytes (need not be NUL-terminated).  Returns SHE_ERR_INVALID with a message for the client
 * naming what is wrong: not JSON (line, column and byte), not an object, an unknown field, a
 * required field missing, a field of the wrong type, an empty query or title, a field or
 * attribute over its limit, too many attributes; *out is left cleared then. */
she_err_t she_serve_parse_request(const char *body, size_t len, const she_serve_limits_t *lim,
                                  she_sample_t *out, char *errstr, size_t errstr_size);

/* ---- routing ---- */

typedef enum she_serve_role {
    SHE_SERVE_ROLE_STABLE = 0,
    SHE_SERVE_ROLE_CANARY = 1,
} she_serve_role_t;

const char *she_serve_role_name(she_serve_role_t role); /* "stable", "canary" */

/* Hash of the normalised query (see above). */
uint64_t she_serve_query_hash(const char *query);

/* The role of a query with this hash under canary_share (0..1); *shadow (may be NULL) is set
 * to 1 for a canary-routed query that stable also judges under shadow_share. */
she_serve_role_t she_serve_route(uint64_t hash, double canary_share, double shadow_share,
                                 int *shadow);

/* ---- rate limit: a token bucket ---- */

typedef struct she_serve_bucket_s she_serve_bucket_t;

/* rate tokens per second, up to burst (>= 1) saved up; starts full.  Never returns NULL.
 * Free with she_serve_bucket_free (NULL is fine). */
she_serve_bucket_t *she_serve_bucket_new(double rate, double burst);
void she_serve_bucket_free(she_serve_bucket_t *b);
/* Takes a token at time now_s (monotonic seconds); 1 if there was one.  Thread-safe. */
int she_serve_bucket_take(she_serve_bucket_t *b, double now_s);

/* ---- the server ---- */

typedef struct she_serve_opts {
    she_judge_opts_t judge; /* max_batch: rows per batch; greedy (temperature is ignored) */
    int batch_wait_ms;      /* longest a request waits for others to join its batch */
    int timeout_ms;         /* longest a request waits for its answer (then 503) */
    int queue_max;          /* requests waiting per policy (more: 503) */
    double shadow_share;    /* share of canary-routed requests stable judges too */
    double rate_limit;      /* judge requests per second over all clients; 0 = none */
    double rate_burst;      /* bucket size; 0 = max(1, rate_limit) */
    she_serve_limits_t limits;
} she_serve_opts_t;

/* batch 16 rows / 5 ms, timeout 30 s, queue 256, shadow 0.1, no rate limit; field limits
 * 2048 bytes, description 16384, 32 attributes; judge defaults with 128 prompt and 128 new
 * tokens. */
void she_serve_opts_default(she_serve_opts_t *o);

typedef struct she_serve_s she_serve_t;

/* A server without policies (not ready until a stable one is loaded).  lg and reg must
 * outlive it.  SHE_ERR_INVALID for bad options or metric names; *out is NULL then.  Free with
 * she_serve_free, after the HTTP server it is attached to. */
she_err_t she_serve_new(const she_serve_opts_t *o, she_log_t *lg, she_metrics_t *reg,
                        she_serve_t **out, char *errstr, size_t errstr_size);
void she_serve_free(she_serve_t *sv); /* NULL is fine */

/* Stops taking judge requests (they get 503, and the server is not ready) and waits up to
 * timeout_ms for those already taken to be answered.  Returns how many are still unanswered.
 * For a clean stop: drain, then free the HTTP server, then the serve core. */
int she_serve_drain(she_serve_t *sv, int timeout_ms);

/* Hooks for she_httpd_opts_t: ready (ud = sv) is 1 once a stable policy is loaded; limit
 * (ud = sv) applies the rate limit to POST /v1/judge and counts what it refuses. */
int she_serve_ready(void *sv, char *reason, size_t reason_size);
int she_serve_limit(void *sv, const char *client, const char *method, const char *path);

/* Registers POST /v1/judge and GET /admin/status on h (created with the serve hooks and the
 * same registry, not started yet).  SHE_ERR_INVALID from she_httpd_route. */
she_err_t she_serve_attach(she_serve_t *sv, she_httpd_t *h, char *errstr, size_t errstr_size);

/* Changing policies: she_serve_load, she_serve_note_checkpoint and she_serve_deploy are called
 * from one thread at a time (the command's main loop); requests keep flowing meanwhile.
 *
 * Loads the checkpoint in dir as the role's policy, version `version`: the directory must
 * verify against its manifest and, when sha256 is given, the manifest's hash of
 * model.safetensors must be it.  A canary needs a stable policy first.  On success the old
 * policy of the role leaves service; on failure (SHE_ERR_FORMAT, SHE_ERR_NOT_FOUND,
 * SHE_ERR_INVALID naming the file) nothing changes. */
she_err_t she_serve_load(she_serve_t *sv, she_serve_role_t role, const char *dir,
                         int64_t version, const char *sha256, char *errstr, size_t errstr_size);
/* Share of queries routed to the canary (clamped to 0..1; meaningless while there is none). */
void she_serve_set_canary_share(she_serve_t *sv, double share);
/* Version of the role's policy, -1 when there is none. */
int64_t she_serve_version(she_serve_t *sv, she_serve_role_t role);

/* Remembers where a version's checkpoint is (a later announcement of a version replaces an
 * earlier one), for she_serve_deploy. */
void she_serve_note_checkpoint(she_serve_t *sv, const she_checkpoint_announcement_t *a);

/* Brings the deployment to ev's state: the stable version (the canary promoted when it is
 * that version, else loaded), the canary version (loaded, or none for -1) and the share.
 * Returns SHE_ERR_NOT_FOUND when a version was not announced yet (nothing changed: retry
 * after more announcements), SHE_ERR_INVALID for an event that makes no sense (unknown
 * action, share outside 0..1), and the load errors for a refused checkpoint (the parts that
 * could be done are done; the old policy of the refused role keeps serving). */
she_err_t she_serve_deploy(she_serve_t *sv, const she_deployment_event_t *ev, char *errstr,
                           size_t errstr_size);

/* ---- judging without HTTP (what POST /v1/judge does after parsing) ---- */

typedef struct she_serve_answer {
    int status;             /* 200; 422 (the request does not fit the prompt); 503 (no
                             * policy, draining, queue full, timeout); 500 (a failed batch) */
    char error[SHE_ERRSTR_SIZE]; /* why, when status != 200 */
    she_serve_role_t role;
    int64_t version;
    double latency_s;       /* from the call to the answer, queueing included */
    she_judge_result_t res; /* valid when status == 200 */
} she_serve_answer_t;

/* Routes and judges s (taken over: *s is left zeroed), waiting for the batch.  Counts the
 * request in the metrics and the role's status, and starts the shadow judgement when the
 * route asks for one.  503 without a stable policy, while draining, when the queue is full
 * or after timeout_ms. */
void she_serve_judge(she_serve_t *sv, she_sample_t *s, she_serve_answer_t *ans);

/* The JSON answer of POST /v1/judge for a 200 answer: grade (null when step 5 did not
 * parse), steps {query: {category, attributes} | null, item: the same, category, attributes,
 * grade: each null when that step did not parse}, text (the chain, with bytes that are not
 * UTF-8 replaced), format_ok, format_error (the first failing step, when not format_ok),
 * prompt_truncated, policy_version, role, latency_ms.  NULL only when out of memory. */
json_t *she_serve_answer_json(const she_serve_answer_t *ans);

/* The GET /admin/status document (see above).  NULL only when out of memory. */
json_t *she_serve_status(she_serve_t *sv);

#endif
