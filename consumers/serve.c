/* serve.c -- the judge server's core: request parsing, routing, per-policy batching workers,
 * deployments and the counters behind /metrics and /admin/status (serve.h).
 *
 * Locks: the server's mu (the two role slots and the share; held only to read or swap
 * pointers), a policy's mu (its queue, its jobs' states and references), the server's gen_mu
 * (one batch generating at a time).  No thread holds two of them at once, and none is held
 * while a policy is freed (which joins its worker).  A policy is reference-counted: its slot
 * holds one reference, every request routed to it another, and every shadow judgement of a
 * canary one on that canary, so the last of them stops its worker and frees it. */
#include "serve.h"

#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "clock.h"
#include "dataset.h"
#include "policy_watch.h"
#include "reader.h"
#include "tokenizer.h"

#define PATH_CAP 4096

/* ---- requests ---- */

static const char *json_type_name(const json_t *v) {
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    default: return "null";
    }
}

/* A client-chosen name for a message: at most 40 bytes, cut on a character boundary (jansson
 * has checked it is UTF-8), with "..." when cut. */
static const char *short_name(const char *s, char out[48]) {
    size_t n = strlen(s);
    if (n <= 40)
        return s;
    n = 40;
    while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
        n--;
    snprintf(out, 48, "%.*s...", (int)n, s);
    return out;
}

/* Replaces, in place, each byte of s that is not part of valid UTF-8 with '?' (jansson's
 * messages quote the bytes near an error, which may be half a character). */
static void utf8_clean(char *s) {
    size_t n = strlen(s);
    for (size_t ok; (ok = she_utf8_valid_prefix(s, n)) < n; s += ok + 1, n -= ok + 1)
        s[ok] = '?';
}

static int blank(const char *s) {
    for (; *s; s++)
        if (!strchr(" \t\r\n\f\v", *s))
            return 0;
    return 1;
}

/* Reads an optional or required string field of the request. */
static she_err_t text_field(json_t *root, const char *field, int required, size_t max,
                            const char **out, char *errstr, size_t errstr_size) {
    json_t *v = json_object_get(root, field);
    *out = NULL;
    if (!v || (!required && json_is_null(v))) {
        if (required)
            return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                            "field \"%s\" is required", field);
        return SHE_OK;
    }
    if (!json_is_string(v))
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                        "field \"%s\": expected a string, got %s", field, json_type_name(v));
    size_t n = json_string_length(v);
    if (n > max)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                        "field \"%s\" is %zu bytes, over the limit of %zu", field, n, max);
    if (required && blank(json_string_value(v)))
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size, "field \"%s\" is empty", field);
    *out = json_string_value(v);
    return SHE_OK;
}

static she_err_t attributes_field(json_t *root, const she_serve_limits_t *lim, she_sample_t *s,
                                  char *errstr, size_t errstr_size) {
    json_t *a = json_object_get(root, "attributes");
    if (!a || json_is_null(a))
        return SHE_OK;
    if (!json_is_object(a))
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                        "field \"attributes\": expected an object of strings, got %s",
                        json_type_name(a));
    if (json_object_size(a) > (size_t)lim->max_attributes)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                        "field \"attributes\" has %zu entries, over the limit of %d",
                        json_object_size(a), lim->max_attributes);
    const char *key;
    json_t *v;
    char tmp[48];
    json_object_foreach(a, key, v) {
        size_t kn = strlen(key);
        if (kn == 0 || blank(key))
            return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                            "field \"attributes\": an attribute name is empty");
        if (kn > lim->max_field_bytes)
            return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                            "field \"attributes\": the name \"%s\" is %zu bytes, over the limit "
                            "of %zu", short_name(key, tmp), kn, lim->max_field_bytes);
        if (!json_is_string(v))
            return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                            "field \"attributes\": \"%s\": expected a string, got %s",
                            short_name(key, tmp), json_type_name(v));
        if (json_string_length(v) > lim->max_field_bytes)
            return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                            "field \"attributes\": \"%s\" is %zu bytes, over the limit of %zu",
                            short_name(key, tmp), json_string_length(v), lim->max_field_bytes);
        she_kv_append(&s->item_attrs, &s->n_item_attrs, key, json_string_value(v));
    }
    return SHE_OK;
}

she_err_t she_serve_parse_request(const char *body, size_t len, const she_serve_limits_t *lim,
                                  she_sample_t *out, char *errstr, size_t errstr_size) {
    static const char *const known[] = {"query", "title", "attributes", "description"};
    json_error_t je;
    /* Without JSON_ALLOW_NUL jansson refuses "\u0000", and it checks UTF-8 and refuses
     * trailing content; nesting is bounded by its parser depth limit.  Any value is decoded,
     * so that a scalar body is told it is not an object rather than not JSON. */
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &je);
    if (!root) {
        utf8_clean(je.text);
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                        "invalid JSON at line %d, column %d (byte %d): %s", je.line, je.column,
                        je.position, je.text);
    }
    she_err_t err = SHE_OK;
    if (!json_is_object(root))
        err = she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                       "the body must be a JSON object, got %s", json_type_name(root));
    const char *key;
    json_t *v;
    char tmp[48];
    if (err == SHE_OK)
        json_object_foreach(root, key, v) {
            size_t i = 0;
            while (i < sizeof(known) / sizeof(known[0]) && strcmp(key, known[i]) != 0)
                i++;
            if (i == sizeof(known) / sizeof(known[0])) {
                err = she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                               "unknown field \"%s\" (expected query, title, attributes, "
                               "description)", short_name(key, tmp));
                break;
            }
        }
    const char *query = NULL, *title = NULL, *desc = NULL;
    if (err == SHE_OK)
        err = text_field(root, "query", 1, lim->max_field_bytes, &query, errstr, errstr_size);
    if (err == SHE_OK)
        err = text_field(root, "title", 1, lim->max_field_bytes, &title, errstr, errstr_size);
    if (err == SHE_OK)
        err = text_field(root, "description", 0, lim->max_desc_bytes, &desc, errstr,
                         errstr_size);
    if (err == SHE_OK)
        err = attributes_field(root, lim, out, errstr, errstr_size);
    if (err == SHE_OK) {
        out->sample_id = strdup("request");
        out->query = strdup(query);
        out->item_title = strdup(title);
        out->item_desc = desc ? strdup(desc) : NULL;
        SHE_CHECK_ALLOC(out->sample_id);
        SHE_CHECK_ALLOC(out->query);
        SHE_CHECK_ALLOC(out->item_title);
    } else {
        she_sample_clear(out);
    }
    json_decref(root);
    return err;
}

/* ---- routing ---- */

const char *she_serve_role_name(she_serve_role_t role) {
    return role == SHE_SERVE_ROLE_CANARY ? "canary" : "stable";
}

uint64_t she_serve_query_hash(const char *query) {
    size_t n = strlen(query), k = 0;
    char *norm = malloc(n + 1);
    SHE_CHECK_ALLOC(norm);
    int gap = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)query[i];
        if (strchr(" \t\r\n\f\v", c)) {
            gap = k > 0;
            continue;
        }
        if (gap)
            norm[k++] = ' ';
        gap = 0;
        norm[k++] = (char)(c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c);
    }
    uint64_t h = she_hash_mix(she_hash64(norm, k));
    free(norm);
    return h;
}

/* The top 53 bits of h as a number in [0, 1). */
static double unit_position(uint64_t h) { return (double)(h >> 11) * 0x1.0p-53; }

she_serve_role_t she_serve_route(uint64_t hash, double canary_share, double shadow_share,
                                 int *shadow) {
    int canary = unit_position(hash) < canary_share;
    if (shadow)
        *shadow = canary &&
                  unit_position(she_hash_mix(hash ^ 0x9e3779b97f4a7c15ull)) < shadow_share;
    return canary ? SHE_SERVE_ROLE_CANARY : SHE_SERVE_ROLE_STABLE;
}

/* ---- rate limit ---- */

struct she_serve_bucket_s {
    pthread_mutex_t mu;
    double rate, burst, tokens, last_s;
    int started;
};

she_serve_bucket_t *she_serve_bucket_new(double rate, double burst) {
    she_serve_bucket_t *b = calloc(1, sizeof(*b));
    SHE_CHECK_ALLOC(b);
    pthread_mutex_init(&b->mu, NULL);
    b->rate = rate;
    b->burst = burst < 1 ? 1 : burst;
    b->tokens = b->burst;
    return b;
}

void she_serve_bucket_free(she_serve_bucket_t *b) {
    if (!b)
        return;
    pthread_mutex_destroy(&b->mu);
    free(b);
}

int she_serve_bucket_take(she_serve_bucket_t *b, double now_s) {
    pthread_mutex_lock(&b->mu);
    if (!b->started) {
        b->started = 1;
        b->last_s = now_s;
    }
    /* a caller that read the clock before another took the lock may come in late */
    if (now_s > b->last_s) {
        b->tokens = fmin(b->burst, b->tokens + (now_s - b->last_s) * b->rate);
        b->last_s = now_s;
    }
    int ok = b->tokens >= 1;
    if (ok)
        b->tokens -= 1;
    pthread_mutex_unlock(&b->mu);
    return ok;
}

/* ---- policies, jobs and workers ---- */

enum { JOB_QUEUED, JOB_RUNNING, JOB_DONE, JOB_FAILED };

typedef struct policy policy_t;

typedef struct job {
    struct job *next;
    she_sample_t sample;
    she_judge_result_t res;
    int state;  /* JOB_*, under the policy's mu */
    int refs;   /* the waiting request and the queue or worker, under the policy's mu */
    double t_enq;
    /* A shadow judgement has no one waiting: its worker compares it with the canary's grade
     * and counts the result against shadow_of (a reference to the canary policy). */
    policy_t *shadow_of;
    she_grade_t canary_grade;
    char err[SHE_ERRSTR_SIZE];
} job_t;

typedef struct role_stats {
    atomic_llong requests, errors, judge_failures;
} role_stats_t;

struct policy {
    she_serve_t *sv;
    int64_t version;
    char version_label[24];
    char dir[PATH_CAP];
    she_tokenizer_t *tok;
    she_model_t *m;
    she_judge_t *judge;
    atomic_int refs;
    pthread_mutex_t mu;
    pthread_cond_t work_cv; /* to the worker: a job arrived, or stop */
    pthread_cond_t done_cv; /* to waiting requests: a batch ended */
    job_t *head, *tail;
    int queued;
    int stop;
    pthread_t worker;
    int has_worker;
    role_stats_t stats[2]; /* per role, since the policy took it */
    atomic_llong shadow_compared, shadow_agreed;
    job_t **batch;             /* (max_batch) the worker's current batch */
    she_sample_t *samples;     /* (max_batch) shallow copies of the batch's samples */
    she_judge_result_t *res;   /* (max_batch) */
};

typedef struct ckpt_ref {
    int64_t version;
    char *uri, *sha256;
} ckpt_ref_t;

struct she_serve_s {
    she_serve_opts_t o;
    she_log_t *lg;
    she_metrics_t *reg;
    pthread_mutex_t mu;     /* slot, share */
    policy_t *slot[2];      /* by she_serve_role_t */
    double share;
    pthread_mutex_t gen_mu; /* one batch at a time over all policies */
    she_serve_bucket_t *bucket;
    ckpt_ref_t *ckpts;      /* announced checkpoints; used by the deploying thread only */
    int n_ckpts;
    she_metric_t *m_requests, *m_duration, *m_failures;
    she_metric_series_t *s_batch_rows, *s_share, *s_version[2], *s_agree, *s_disagree;
    she_metric_series_t *http_401[2], *http_413[2]; /* the HTTP server's, per serve route */
    atomic_llong rejected_rate, rejected_invalid;
    atomic_int draining;  /* she_serve_drain was called */
    atomic_int in_flight; /* she_serve_judge calls running */
};

static struct timespec monotonic_at(double t) {
    struct timespec ts;
    double s = floor(t);
    ts.tv_sec = (time_t)s;
    ts.tv_nsec = (long)((t - s) * 1e9);
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

static void job_free(job_t *j) {
    she_sample_clear(&j->sample);
    free(j);
}

static void unlink_job(policy_t *p, job_t *j) {
    job_t **pp = &p->head, *prev = NULL;
    while (*pp && *pp != j) {
        prev = *pp;
        pp = &(*pp)->next;
    }
    SHE_ASSERT(*pp == j);
    *pp = j->next;
    if (p->tail == j)
        p->tail = prev;
    p->queued--;
}

static void policy_put(policy_t *p);

/* Counts a shadow judgement against the canary it shadows and drops that reference. */
static void finish_shadow(she_serve_t *sv, job_t *j, int ok) {
    if (ok) {
        int agree = j->res.grade == j->canary_grade;
        atomic_fetch_add(&j->shadow_of->shadow_compared, 1);
        if (agree)
            atomic_fetch_add(&j->shadow_of->shadow_agreed, 1);
        she_metrics_inc(agree ? sv->s_agree : sv->s_disagree);
    }
    policy_put(j->shadow_of);
    job_free(j);
}

static void *worker_main(void *arg) {
    policy_t *p = arg;
    she_serve_t *sv = p->sv;
    const int max = sv->o.judge.max_batch;
    pthread_mutex_lock(&p->mu);
    while (!p->stop) {
        if (!p->head) {
            pthread_cond_wait(&p->work_cv, &p->mu);
            continue;
        }
        /* the batch window opens with its oldest request */
        double close_at = p->head->t_enq + sv->o.batch_wait_ms / 1000.0;
        struct timespec ts = monotonic_at(close_at);
        while (!p->stop && p->head && p->queued < max && she_now_s() < close_at)
            pthread_cond_timedwait(&p->work_cv, &p->mu, &ts);
        if (p->stop)
            break;
        int n = 0;
        while (p->head && n < max) {
            job_t *j = p->head;
            unlink_job(p, j);
            j->state = JOB_RUNNING;
            p->batch[n] = j;
            p->samples[n++] = j->sample;
        }
        if (n == 0)
            continue; /* the requests that opened the window timed out */
        pthread_mutex_unlock(&p->mu);

        char errstr[SHE_ERRSTR_SIZE];
        double t0 = she_now_s();
        pthread_mutex_lock(&sv->gen_mu);
        she_err_t err = she_judge_run(p->judge, p->samples, n, p->res, NULL, NULL, errstr,
                                      sizeof(errstr));
        pthread_mutex_unlock(&sv->gen_mu);
        she_metrics_observe(sv->s_batch_rows, n);
        if (err != SHE_OK)
            she_log_error(sv->lg, "policy v%" PRId64 ": batch of %d rows failed: %s", p->version,
                          n, errstr);
        else
            she_log_debug(sv->lg, "policy v%" PRId64 ": batch of %d rows in %.1f ms", p->version,
                          n, (she_now_s() - t0) * 1e3);

        int n_shadows = 0; /* shadow jobs are moved to the front of p->batch */
        pthread_mutex_lock(&p->mu);
        for (int i = 0; i < n; i++) {
            job_t *j = p->batch[i];
            if (err == SHE_OK) {
                j->res = p->res[i];
                j->state = JOB_DONE;
            } else {
                snprintf(j->err, sizeof(j->err), "%s", errstr);
                j->state = JOB_FAILED;
            }
            if (j->shadow_of)
                p->batch[n_shadows++] = j;
            else if (--j->refs == 0)
                job_free(j); /* its request timed out while it ran */
        }
        pthread_cond_broadcast(&p->done_cv);
        pthread_mutex_unlock(&p->mu);
        for (int i = 0; i < n_shadows; i++)
            finish_shadow(sv, p->batch[i], err == SHE_OK);
        pthread_mutex_lock(&p->mu);
    }
    /* Stopping happens once no request holds the policy, so what is still queued are shadow
     * judgements: they are dropped uncounted. */
    job_t *left = p->head;
    p->head = p->tail = NULL;
    p->queued = 0;
    pthread_mutex_unlock(&p->mu);
    while (left) {
        job_t *next = left->next;
        finish_shadow(sv, left, 0);
        left = next;
    }
    return NULL;
}

static void policy_free(policy_t *p) {
    if (p->has_worker) {
        pthread_mutex_lock(&p->mu);
        p->stop = 1;
        pthread_cond_signal(&p->work_cv);
        pthread_mutex_unlock(&p->mu);
        pthread_join(p->worker, NULL);
    }
    she_log_info(p->sv->lg, "policy v%" PRId64 " (%s) unloaded", p->version, p->dir);
    she_judge_free(p->judge);
    she_model_free(p->m);
    she_tokenizer_free(p->tok);
    pthread_cond_destroy(&p->work_cv);
    pthread_cond_destroy(&p->done_cv);
    pthread_mutex_destroy(&p->mu);
    free(p->batch);
    free(p->samples);
    free(p->res);
    free(p);
}

static void policy_put(policy_t *p) {
    if (p && atomic_fetch_sub(&p->refs, 1) == 1)
        policy_free(p);
}

/* Verifies, loads and starts a policy (one reference, the caller's). */
static she_err_t policy_new(she_serve_t *sv, const char *dir, int64_t version,
                            const char *sha256, policy_t **out, char *errstr,
                            size_t errstr_size) {
    *out = NULL;
    policy_t *p = calloc(1, sizeof(*p));
    SHE_CHECK_ALLOC(p);
    p->sv = sv;
    p->version = version;
    snprintf(p->version_label, sizeof(p->version_label), "%" PRId64, version);
    snprintf(p->dir, sizeof(p->dir), "%s", dir);
    atomic_init(&p->refs, 1);
    pthread_mutex_init(&p->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->work_cv, &ca);
    pthread_cond_init(&p->done_cv, &ca);
    pthread_condattr_destroy(&ca);
    int max = sv->o.judge.max_batch;
    p->batch = calloc((size_t)max, sizeof(*p->batch));
    p->samples = calloc((size_t)max, sizeof(*p->samples));
    p->res = calloc((size_t)max, sizeof(*p->res));
    SHE_CHECK_ALLOC(p->batch);
    SHE_CHECK_ALLOC(p->samples);
    SHE_CHECK_ALLOC(p->res);

    double t0 = she_now_s();
    /* she_model_load verifies the whole directory against its manifest (tokenizer.json
     * included) before reading it; the announced hash is then checked against the manifest's,
     * as the policy watch does. */
    char path[PATH_CAP + 32], hex[65];
    she_err_t err = she_model_load(dir, 1, 16, &p->m, NULL, errstr, errstr_size);
    if (err == SHE_OK && sha256) {
        err = she_policy_manifest_sha256(dir, "model.safetensors", hex, errstr, errstr_size);
        if (err == SHE_OK && strcmp(hex, sha256) != 0)
            err = she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                           "%s: model.safetensors has sha256 %s, the announcement says %s", dir,
                           hex, sha256);
    }
    snprintf(path, sizeof(path), "%s/tokenizer.json", dir);
    if (err == SHE_OK)
        err = she_tokenizer_load(path, &p->tok, errstr, errstr_size);
    if (err == SHE_OK)
        err = she_judge_new(p->m, p->tok, &sv->o.judge, &p->judge, errstr, errstr_size);
    if (err == SHE_OK && pthread_create(&p->worker, NULL, worker_main, p) != 0)
        err = she_errf(SHE_ERR_IO, errstr, errstr_size, "cannot start the batch worker");
    if (err != SHE_OK) {
        policy_free(p);
        return err;
    }
    p->has_worker = 1;
    she_log_info(sv->lg, "policy v%" PRId64 " loaded from %s in %.0f ms (D=%d L=%d V=%d)",
                 version, dir, (she_now_s() - t0) * 1e3, p->m->cfg.hidden_size,
                 p->m->cfg.n_layers, p->m->cfg.vocab_size);
    *out = p;
    return SHE_OK;
}

/* Queues s (moved into the job on success) on p with refs references (2: a request that
 * waits; 1: a shadow judgement of canary's grade, taking over the caller's reference to
 * canary).  NULL when the queue is full or the policy is stopping. */
static job_t *job_submit(policy_t *p, she_sample_t *s, int refs, policy_t *canary,
                         she_grade_t canary_grade) {
    job_t *j = calloc(1, sizeof(*j));
    if (!j)
        return NULL;
    pthread_mutex_lock(&p->mu);
    if (p->stop || p->queued >= p->sv->o.queue_max) {
        pthread_mutex_unlock(&p->mu);
        free(j);
        return NULL;
    }
    j->sample = *s;
    memset(s, 0, sizeof(*s));
    j->state = JOB_QUEUED;
    j->refs = refs;
    j->shadow_of = canary;
    j->canary_grade = canary_grade;
    j->t_enq = she_now_s();
    if (p->tail)
        p->tail->next = j;
    else
        p->head = j;
    p->tail = j;
    p->queued++;
    pthread_cond_signal(&p->work_cv);
    pthread_mutex_unlock(&p->mu);
    return j;
}

/* Waits for j until deadline and drops the request's reference.  Returns the job's state:
 * JOB_DONE (res filled), JOB_FAILED (err filled), or JOB_QUEUED / JOB_RUNNING on timeout. */
static int job_wait(policy_t *p, job_t *j, double deadline, she_judge_result_t *res, char *err,
                    size_t err_size) {
    struct timespec ts = monotonic_at(deadline);
    pthread_mutex_lock(&p->mu);
    while ((j->state == JOB_QUEUED || j->state == JOB_RUNNING) && she_now_s() < deadline)
        pthread_cond_timedwait(&p->done_cv, &p->mu, &ts);
    int state = j->state;
    if (state == JOB_DONE)
        *res = j->res;
    else if (state == JOB_FAILED)
        snprintf(err, err_size, "%s", j->err);
    if (state == JOB_QUEUED) { /* never runs now */
        unlink_job(p, j);
        j->refs--;
    }
    if (--j->refs == 0)
        job_free(j);
    pthread_mutex_unlock(&p->mu);
    return state;
}

/* ---- the server ---- */

void she_serve_opts_default(she_serve_opts_t *o) {
    memset(o, 0, sizeof(*o));
    she_judge_opts_default(&o->judge);
    o->judge.max_batch = 16;
    o->batch_wait_ms = 5;
    o->timeout_ms = 30000;
    o->queue_max = 256;
    o->shadow_share = 0.1;
    o->limits.max_field_bytes = 2048;
    o->limits.max_desc_bytes = 16384;
    o->limits.max_attributes = 32;
}

/* she_serve_rejected_requests_total: auth and size come from the HTTP server's own counts of
 * the serve routes (it answers those before any serve code runs).  she_metrics_get is a
 * lock-free read, so it is safe under the registry lock a collect callback runs with. */
static void rejected_collect(void *ud, she_metrics_scrape_t *sc) {
    she_serve_t *sv = ud;
    double auth = 0, size = 0;
    for (int i = 0; i < 2; i++) {
        if (sv->http_401[i])
            auth += she_metrics_get(sv->http_401[i]);
        if (sv->http_413[i])
            size += she_metrics_get(sv->http_413[i]);
    }
    const char *l_auth[] = {"auth"}, *l_rate[] = {"rate"}, *l_size[] = {"size"},
               *l_invalid[] = {"invalid"};
    she_metrics_emit(sc, l_auth, auth);
    she_metrics_emit(sc, l_rate, (double)atomic_load(&sv->rejected_rate));
    she_metrics_emit(sc, l_size, size);
    she_metrics_emit(sc, l_invalid, (double)atomic_load(&sv->rejected_invalid));
}

/* Gauges of the slots; under sv->mu. */
static void publish_state(she_serve_t *sv) {
    for (int r = 0; r < 2; r++)
        she_metrics_set(sv->s_version[r], sv->slot[r] ? (double)sv->slot[r]->version : -1.0);
    she_metrics_set(sv->s_share, sv->slot[SHE_SERVE_ROLE_CANARY] ? sv->share : 0.0);
}

she_err_t she_serve_new(const she_serve_opts_t *o, she_log_t *lg, she_metrics_t *reg,
                        she_serve_t **out, char *errstr, size_t errstr_size) {
    *out = NULL;
    if (o->judge.max_batch < 1 || o->batch_wait_ms < 0 || o->timeout_ms < 1 || o->queue_max < 1 ||
        !(o->shadow_share >= 0 && o->shadow_share <= 1) || !(o->rate_limit >= 0) ||
        o->limits.max_field_bytes < 1 || o->limits.max_attributes < 0)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                        "serve: bad options (batch %d, wait %d ms, timeout %d ms, queue %d, "
                        "shadow share %g, rate %g)", o->judge.max_batch, o->batch_wait_ms,
                        o->timeout_ms, o->queue_max, o->shadow_share, o->rate_limit);
    she_serve_t *sv = calloc(1, sizeof(*sv));
    SHE_CHECK_ALLOC(sv);
    sv->o = *o;
    sv->o.judge.temperature = 0.0f; /* serving is greedy: the same request, the same answer */
    sv->lg = lg;
    sv->reg = reg;
    pthread_mutex_init(&sv->mu, NULL);
    pthread_mutex_init(&sv->gen_mu, NULL);
    if (o->rate_limit > 0)
        sv->bucket = she_serve_bucket_new(o->rate_limit,
                                          o->rate_burst > 0 ? o->rate_burst : o->rate_limit);
    she_metric_t *m_batch = NULL, *m_share = NULL, *m_version = NULL, *m_shadow = NULL;
    double rows[10];
    she_metrics_buckets_exp(1, 2, 10, rows);
    she_err_t err = she_metrics_counter(
        reg, "she_serve_requests_total", "Judge requests answered, by role, policy version and "
        "HTTP status.", "role,version,code", &sv->m_requests, errstr, errstr_size);
    if (err == SHE_OK)
        err = she_metrics_histogram(reg, "she_serve_request_duration_seconds",
                                    "Judge request latency, queueing for a batch included.",
                                    "role,version", NULL, 0, &sv->m_duration, errstr,
                                    errstr_size);
    if (err == SHE_OK)
        err = she_metrics_counter(reg, "she_serve_judge_failures_total",
                                  "Answers whose chain of thought did not parse.",
                                  "role,version", &sv->m_failures, errstr, errstr_size);
    if (err == SHE_OK)
        err = she_metrics_histogram(reg, "she_serve_batch_rows",
                                    "Requests judged together in one generated batch.", NULL,
                                    rows, 10, &m_batch, errstr, errstr_size);
    if (err == SHE_OK)
        err = she_metrics_gauge(reg, "she_serve_canary_share",
                                "Share of queries routed to the canary policy (0..1).", NULL,
                                &m_share, errstr, errstr_size);
    if (err == SHE_OK)
        err = she_metrics_gauge(reg, "she_serve_policy_version",
                                "Policy version serving each role (-1: none).", "role",
                                &m_version, errstr, errstr_size);
    if (err == SHE_OK)
        err = she_metrics_counter(reg, "she_serve_shadow_comparisons_total",
                                  "Canary answers also judged by stable, by grade agreement.",
                                  "result", &m_shadow, errstr, errstr_size);
    if (err == SHE_OK)
        err = she_metrics_callback(reg, SHE_METRIC_COUNTER, "she_serve_rejected_requests_total",
                                   "Requests refused before judging, by reason.", "reason",
                                   rejected_collect, sv, errstr, errstr_size);
    if (err != SHE_OK) {
        she_serve_free(sv);
        return err;
    }
    const char *stable[] = {"stable"}, *canary[] = {"canary"}, *agree[] = {"agree"},
               *disagree[] = {"disagree"};
    sv->s_batch_rows = she_metrics_series(m_batch, NULL);
    sv->s_share = she_metrics_series(m_share, NULL);
    sv->s_version[SHE_SERVE_ROLE_STABLE] = she_metrics_series(m_version, stable);
    sv->s_version[SHE_SERVE_ROLE_CANARY] = she_metrics_series(m_version, canary);
    sv->s_agree = she_metrics_series(m_shadow, agree);
    sv->s_disagree = she_metrics_series(m_shadow, disagree);
    publish_state(sv);
    *out = sv;
    return SHE_OK;
}

void she_serve_free(she_serve_t *sv) {
    if (!sv)
        return;
    pthread_mutex_lock(&sv->mu);
    policy_t *stable = sv->slot[SHE_SERVE_ROLE_STABLE], *canary = sv->slot[SHE_SERVE_ROLE_CANARY];
    sv->slot[0] = sv->slot[1] = NULL;
    pthread_mutex_unlock(&sv->mu);
    /* the canary goes first: stable's queued shadow judgements may hold the last references
     * to it, and stopping stable drops them */
    policy_put(canary);
    policy_put(stable);
    for (int i = 0; i < sv->n_ckpts; i++) {
        free(sv->ckpts[i].uri);
        free(sv->ckpts[i].sha256);
    }
    free(sv->ckpts);
    she_serve_bucket_free(sv->bucket);
    pthread_mutex_destroy(&sv->mu);
    pthread_mutex_destroy(&sv->gen_mu);
    free(sv);
}

int she_serve_ready(void *ud, char *reason, size_t reason_size) {
    she_serve_t *sv = ud;
    if (atomic_load(&sv->draining)) {
        snprintf(reason, reason_size, "shutting down");
        return 0;
    }
    pthread_mutex_lock(&sv->mu);
    int ok = sv->slot[SHE_SERVE_ROLE_STABLE] != NULL;
    pthread_mutex_unlock(&sv->mu);
    if (!ok)
        snprintf(reason, reason_size, "no stable policy loaded");
    return ok;
}

int she_serve_drain(she_serve_t *sv, int timeout_ms) {
    atomic_store(&sv->draining, 1);
    double deadline = she_now_s() + timeout_ms / 1000.0;
    while (atomic_load(&sv->in_flight) > 0 && she_now_s() < deadline)
        nanosleep(&(struct timespec){0, 10 * 1000 * 1000}, NULL);
    return atomic_load(&sv->in_flight);
}

int she_serve_limit(void *ud, const char *client, const char *method, const char *path) {
    (void)client, (void)method;
    she_serve_t *sv = ud;
    /* only judging is limited: the canary controller must still read /admin/status */
    if (!sv->bucket || strcmp(path, "/v1/judge") != 0 ||
        she_serve_bucket_take(sv->bucket, she_now_s()))
        return 1;
    atomic_fetch_add(&sv->rejected_rate, 1);
    return 0;
}

/* ---- policies in service ---- */

/* Puts p (a reference the caller gives up) in role's slot; returns the slot's old policy (a
 * reference for the caller to drop). */
static policy_t *swap_slot(she_serve_t *sv, she_serve_role_t role, policy_t *p) {
    pthread_mutex_lock(&sv->mu);
    policy_t *old = sv->slot[role];
    sv->slot[role] = p;
    publish_state(sv);
    pthread_mutex_unlock(&sv->mu);
    return old;
}

she_err_t she_serve_load(she_serve_t *sv, she_serve_role_t role, const char *dir,
                         int64_t version, const char *sha256, char *errstr, size_t errstr_size) {
    if (role == SHE_SERVE_ROLE_CANARY && she_serve_version(sv, SHE_SERVE_ROLE_STABLE) < 0)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                        "a canary needs a stable policy first");
    policy_t *p;
    SHE_TRY(policy_new(sv, dir, version, sha256, &p, errstr, errstr_size));
    policy_t *old = swap_slot(sv, role, p);
    she_log_info(sv->lg, "%s: policy v%" PRId64 " in service%s", she_serve_role_name(role),
                 version, old ? " (replacing the previous one)" : "");
    policy_put(old);
    return SHE_OK;
}

void she_serve_set_canary_share(she_serve_t *sv, double share) {
    pthread_mutex_lock(&sv->mu);
    sv->share = isnan(share) ? 0 : fmin(1, fmax(0, share));
    publish_state(sv);
    pthread_mutex_unlock(&sv->mu);
}

int64_t she_serve_version(she_serve_t *sv, she_serve_role_t role) {
    pthread_mutex_lock(&sv->mu);
    int64_t v = sv->slot[role] ? sv->slot[role]->version : -1;
    pthread_mutex_unlock(&sv->mu);
    return v;
}

void she_serve_note_checkpoint(she_serve_t *sv, const she_checkpoint_announcement_t *a) {
    int i = 0;
    while (i < sv->n_ckpts && sv->ckpts[i].version != a->version)
        i++;
    if (i == sv->n_ckpts) {
        ckpt_ref_t *grown = realloc(sv->ckpts, (size_t)(sv->n_ckpts + 1) * sizeof(*grown));
        SHE_CHECK_ALLOC(grown);
        sv->ckpts = grown;
        sv->n_ckpts++;
    } else {
        free(sv->ckpts[i].uri);
        free(sv->ckpts[i].sha256);
    }
    sv->ckpts[i].version = a->version;
    sv->ckpts[i].uri = strdup(a->uri);
    sv->ckpts[i].sha256 = strdup(a->sha256);
    SHE_CHECK_ALLOC(sv->ckpts[i].uri);
    SHE_CHECK_ALLOC(sv->ckpts[i].sha256);
}

static const ckpt_ref_t *find_ckpt(const she_serve_t *sv, int64_t version) {
    for (int i = 0; i < sv->n_ckpts; i++)
        if (sv->ckpts[i].version == version)
            return &sv->ckpts[i];
    return NULL;
}

/* A reference to the policy of that version if one is in service, else NULL. */
static policy_t *find_loaded(she_serve_t *sv, int64_t version) {
    policy_t *p = NULL;
    pthread_mutex_lock(&sv->mu);
    for (int r = 0; r < 2 && !p; r++)
        if (sv->slot[r] && sv->slot[r]->version == version)
            p = sv->slot[r];
    if (p)
        atomic_fetch_add(&p->refs, 1);
    pthread_mutex_unlock(&sv->mu);
    return p;
}

/* The policy of version v: the one in service, else loaded from its announced checkpoint. */
static she_err_t get_version(she_serve_t *sv, int64_t v, policy_t **out, char *errstr,
                             size_t errstr_size) {
    if ((*out = find_loaded(sv, v)) != NULL)
        return SHE_OK;
    const ckpt_ref_t *c = find_ckpt(sv, v);
    SHE_ASSERT(c); /* the caller checked */
    const char *dir = strncmp(c->uri, "file://", 7) == 0 ? c->uri + 7 : c->uri;
    return policy_new(sv, dir, v, c->sha256, out, errstr, errstr_size);
}

static const char *action_name(she_deploy_action_t a) {
    static const char *const names[] = {"UNKNOWN", "START", "PROMOTE", "ROLLBACK", "ABORT"};
    return a >= 0 && a <= SHE_DEPLOY_ACTION_ABORT ? names[a] : "UNKNOWN";
}

she_err_t she_serve_deploy(she_serve_t *sv, const she_deployment_event_t *ev, char *errstr,
                           size_t errstr_size) {
    if (ev->action <= SHE_DEPLOY_ACTION_UNKNOWN || ev->action > SHE_DEPLOY_ACTION_ABORT)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                        "deployment event with an unknown action");
    if (!(ev->canary_share >= 0 && ev->canary_share <= 1) || ev->stable_version < 0)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                        "%s event: canary share %g outside 0..1 or stable version %" PRId64,
                        action_name(ev->action), ev->canary_share, ev->stable_version);
    int64_t want[2] = {ev->stable_version, ev->canary_version < 0 ? -1 : ev->canary_version};
    int change[2];
    for (int r = 0; r < 2; r++) {
        int64_t have = she_serve_version(sv, (she_serve_role_t)r);
        change[r] = want[r] >= 0 && want[r] != have;
        policy_t *loaded = change[r] ? find_loaded(sv, want[r]) : NULL;
        if (change[r] && !loaded && !find_ckpt(sv, want[r]))
            return she_errf(SHE_ERR_NOT_FOUND, errstr, errstr_size,
                            "%s event: version %" PRId64 " (%s) is not announced on "
                            "she.checkpoints", action_name(ev->action), want[r],
                            she_serve_role_name((she_serve_role_t)r));
        policy_put(loaded);
    }
    policy_t *next[2] = {NULL, NULL};
    she_err_t err = SHE_OK;
    char why[SHE_ERRSTR_SIZE] = "";
    for (int r = 0; r < 2; r++) {
        if (!change[r])
            continue;
        she_err_t e = get_version(sv, want[r], &next[r], why, sizeof(why));
        if (e != SHE_OK) {
            she_log_error(sv->lg, "%s event: refused %s v%" PRId64 ": %s; the old state keeps "
                          "serving", action_name(ev->action),
                          she_serve_role_name((she_serve_role_t)r), want[r], why);
            if (err == SHE_OK)
                err = she_errf(e, errstr, errstr_size, "refused %s v%" PRId64 ": %s",
                               she_serve_role_name((she_serve_role_t)r), want[r], why);
        }
    }
    /* install what could be loaded, in one step for the routing */
    policy_t *old[2] = {NULL, NULL};
    pthread_mutex_lock(&sv->mu);
    if (next[SHE_SERVE_ROLE_STABLE]) {
        old[SHE_SERVE_ROLE_STABLE] = sv->slot[SHE_SERVE_ROLE_STABLE];
        sv->slot[SHE_SERVE_ROLE_STABLE] = next[SHE_SERVE_ROLE_STABLE];
    }
    if (want[SHE_SERVE_ROLE_CANARY] < 0 || next[SHE_SERVE_ROLE_CANARY]) {
        old[SHE_SERVE_ROLE_CANARY] = sv->slot[SHE_SERVE_ROLE_CANARY];
        sv->slot[SHE_SERVE_ROLE_CANARY] = next[SHE_SERVE_ROLE_CANARY];
    }
    /* the share is the event's only when the canary is the event's */
    policy_t *c = sv->slot[SHE_SERVE_ROLE_CANARY];
    if ((want[SHE_SERVE_ROLE_CANARY] < 0 && !c) ||
        (c && c->version == want[SHE_SERVE_ROLE_CANARY]))
        sv->share = ev->canary_share;
    publish_state(sv);
    int64_t vs = sv->slot[SHE_SERVE_ROLE_STABLE] ? sv->slot[SHE_SERVE_ROLE_STABLE]->version : -1;
    char canary[64] = "none";
    if (c)
        snprintf(canary, sizeof(canary), "v%" PRId64 " at %.1f%%", c->version, 100 * sv->share);
    pthread_mutex_unlock(&sv->mu);
    she_log_info(sv->lg, "%s: stable v%" PRId64 ", canary %s (%s)", action_name(ev->action), vs,
                 canary, ev->reason ? ev->reason : "");
    policy_put(old[SHE_SERVE_ROLE_CANARY]);
    policy_put(old[SHE_SERVE_ROLE_STABLE]);
    return err;
}

/* ---- judging ---- */

static void count_answer(she_serve_t *sv, policy_t *p, const she_serve_answer_t *ans) {
    char code[8];
    snprintf(code, sizeof(code), "%d", ans->status);
    const char *role = she_serve_role_name(ans->role);
    const char *rvc[] = {role, p->version_label, code}, *rv[] = {role, p->version_label};
    she_metrics_inc(she_metrics_series(sv->m_requests, rvc));
    she_metrics_observe(she_metrics_series(sv->m_duration, rv), ans->latency_s);
    role_stats_t *st = &p->stats[ans->role];
    atomic_fetch_add(&st->requests, 1);
    if (ans->status >= 500) {
        atomic_fetch_add(&st->errors, 1);
    } else if (ans->status == 200 && !ans->res.format_ok) {
        atomic_fetch_add(&st->judge_failures, 1);
        she_metrics_inc(she_metrics_series(sv->m_failures, rv));
    }
}

static void judge_routed(she_serve_t *sv, she_sample_t *s, she_serve_answer_t *ans) {
    double t0 = she_now_s(), deadline = t0 + sv->o.timeout_ms / 1000.0;
    ans->status = 0;
    ans->error[0] = '\0';
    if (atomic_load(&sv->draining)) {
        ans->status = 503;
        ans->role = SHE_SERVE_ROLE_STABLE;
        ans->version = -1;
        ans->latency_s = 0;
        snprintf(ans->error, sizeof(ans->error), "shutting down");
        she_sample_clear(s);
        return;
    }
    uint64_t hash = she_serve_query_hash(s->query);
    int shadow = 0;
    pthread_mutex_lock(&sv->mu);
    policy_t *stable = sv->slot[SHE_SERVE_ROLE_STABLE], *canary = sv->slot[SHE_SERVE_ROLE_CANARY];
    she_serve_role_t role =
        she_serve_route(hash, canary ? sv->share : 0, sv->o.shadow_share, &shadow);
    policy_t *p = role == SHE_SERVE_ROLE_CANARY ? canary : stable;
    policy_t *sp = shadow && stable != canary ? stable : NULL;
    if (p)
        atomic_fetch_add(&p->refs, 1);
    if (sp)
        atomic_fetch_add(&sp->refs, 1);
    pthread_mutex_unlock(&sv->mu);
    ans->role = role;
    ans->version = p ? p->version : -1;
    if (!p) {
        ans->status = 503;
        snprintf(ans->error, sizeof(ans->error), "no stable policy is loaded");
        ans->latency_s = she_now_s() - t0;
        she_sample_clear(s);
        return;
    }
    she_sample_t copy = {0};
    if (sp)
        she_sample_copy(&copy, s);
    job_t *j = job_submit(p, s, 2, NULL, SHE_GRADE_UNKNOWN);
    if (!j) {
        ans->status = 503;
        snprintf(ans->error, sizeof(ans->error), "the %s policy's queue is full",
                 she_serve_role_name(role));
        she_sample_clear(s);
    } else {
        int state = job_wait(p, j, deadline, &ans->res, ans->error, sizeof(ans->error));
        ans->status = state == JOB_DONE ? 200 : state == JOB_FAILED ? 500 : 503;
        if (state == JOB_QUEUED || state == JOB_RUNNING)
            snprintf(ans->error, sizeof(ans->error), "no answer within %d ms",
                     sv->o.timeout_ms);
        if (state == JOB_DONE && !ans->res.prompt_ok) {
            ans->status = 422;
            snprintf(ans->error, sizeof(ans->error),
                     "query and title do not fit the policy's prompt of %d tokens",
                     sv->o.judge.max_prompt);
        }
    }
    ans->latency_s = she_now_s() - t0;
    count_answer(sv, p, ans);
    she_log_debug(sv->lg, "judge %s v%" PRId64 " -> %d (%s) in %.1f ms",
                  she_serve_role_name(role), p->version, ans->status,
                  ans->status == 200 ? she_grade_name(ans->res.grade) : ans->error,
                  ans->latency_s * 1e3);
    if (sp && ans->status == 200) {
        /* the shadow job holds the canary until its worker has counted it */
        atomic_fetch_add(&p->refs, 1);
        if (!job_submit(sp, &copy, 1, p, ans->res.grade))
            policy_put(p);
    }
    she_sample_clear(&copy);
    policy_put(sp);
    policy_put(p);
}

void she_serve_judge(she_serve_t *sv, she_sample_t *s, she_serve_answer_t *ans) {
    atomic_fetch_add(&sv->in_flight, 1);
    judge_routed(sv, s, ans);
    atomic_fetch_sub(&sv->in_flight, 1);
}

/* A JSON string of s[0..n) with each byte that is not valid UTF-8 replaced by U+FFFD:
 * generated text can hold broken sequences, which jansson refuses. */
static json_t *json_text(const char *s, size_t n) {
    size_t ok = she_utf8_valid_prefix(s, n);
    if (ok == n)
        return json_stringn(s, n);
    char *buf = malloc(3 * n + 1);
    if (!buf)
        return NULL;
    size_t k = 0;
    while (n > 0) {
        ok = she_utf8_valid_prefix(s, n);
        memcpy(buf + k, s, ok);
        k += ok;
        if (ok == n)
            break;
        memcpy(buf + k, "\xEF\xBF\xBD", 3);
        k += 3;
        s += ok + 1;
        n -= ok + 1;
    }
    json_t *j = json_stringn(buf, k);
    free(buf);
    return j;
}

static json_t *json_str(const char *s) { return json_text(s, strlen(s)); }

static json_t *interp_json(const she_cot_interp_t *in) {
    json_t *attrs = json_object();
    for (int i = 0; attrs && i < in->n_attrs; i++)
        json_object_set_new(attrs, in->attrs[i].key, json_str(in->attrs[i].value));
    json_t *j = json_object();
    if (j) {
        json_object_set_new(j, "category", json_str(in->category));
        json_object_set_new(j, "attributes", attrs);
    } else {
        json_decref(attrs);
    }
    return j;
}

json_t *she_serve_answer_json(const she_serve_answer_t *ans) {
    const she_judge_result_t *r = &ans->res;
    const she_cot_parsed_t *pp = &r->parsed;
    json_t *steps = json_object(), *j = json_object();
    if (!steps || !j) {
        json_decref(steps);
        json_decref(j);
        return NULL;
    }
    json_object_set_new(steps, "query", pp->ok[0] ? interp_json(&pp->cot.query) : json_null());
    json_object_set_new(steps, "item", pp->ok[1] ? interp_json(&pp->cot.item) : json_null());
    json_object_set_new(steps, "category", pp->ok[2] ? json_string(she_cat_match_name(
                                                           pp->cot.cat_match))
                                                     : json_null());
    json_object_set_new(steps, "attributes", pp->ok[3] ? json_string(she_attr_match_name(
                                                             pp->cot.attr_match))
                                                       : json_null());
    json_object_set_new(steps, "grade",
                        pp->ok[4] ? json_string(she_grade_name(pp->cot.grade)) : json_null());
    json_object_set_new(j, "grade",
                        r->grade != SHE_GRADE_UNKNOWN ? json_string(she_grade_name(r->grade))
                                                      : json_null());
    json_object_set_new(j, "steps", steps);
    json_object_set_new(j, "text", json_text(r->text, (size_t)r->text_len));
    json_object_set_new(j, "format_ok", json_boolean(r->format_ok));
    json_object_set_new(j, "prompt_truncated", json_boolean(r->prompt_truncated));
    if (!r->format_ok) {
        int i = 0;
        while (i < SHE_COT_N_STEPS - 1 && pp->ok[i])
            i++;
        char msg[SHE_COT_MAX_ERR + 64];
        snprintf(msg, sizeof(msg), "step %d (%s): %s", i + 1, she_cot_step_name(i + 1),
                 pp->err[i][0] ? pp->err[i] : "missing");
        json_object_set_new(j, "format_error", json_str(msg));
    }
    json_object_set_new(j, "policy_version", json_integer(ans->version));
    json_object_set_new(j, "role", json_string(she_serve_role_name(ans->role)));
    json_object_set_new(j, "latency_ms", json_real(ans->latency_s * 1e3));
    return j;
}

/* ---- status ---- */

static json_t *role_json(she_serve_t *sv, policy_t *p, she_serve_role_t role) {
    if (!p)
        return json_null();
    const char *rv[] = {she_serve_role_name(role), p->version_label};
    double p95 = she_metrics_hist_quantile(she_metrics_series(sv->m_duration, rv), 0.95);
    const role_stats_t *st = &p->stats[role];
    return json_pack("{s:I, s:I, s:I, s:I, s:o}", "version", (json_int_t)p->version, "requests",
                     (json_int_t)atomic_load(&st->requests), "errors",
                     (json_int_t)atomic_load(&st->errors), "judge_failures",
                     (json_int_t)atomic_load(&st->judge_failures), "latency_p95_s",
                     isnan(p95) ? json_null() : json_real(p95));
}

json_t *she_serve_status(she_serve_t *sv) {
    pthread_mutex_lock(&sv->mu);
    policy_t *stable = sv->slot[SHE_SERVE_ROLE_STABLE], *canary = sv->slot[SHE_SERVE_ROLE_CANARY];
    double share = sv->share;
    if (stable)
        atomic_fetch_add(&stable->refs, 1);
    if (canary)
        atomic_fetch_add(&canary->refs, 1);
    pthread_mutex_unlock(&sv->mu);
    /* shadow counts first: a shadow judgement follows its counted request, so read in this
     * order the document never shows more comparisons than canary requests */
    json_int_t agreed = canary ? atomic_load(&canary->shadow_agreed) : 0;
    json_int_t compared = canary ? atomic_load(&canary->shadow_compared) : 0;
    json_t *c = role_json(sv, canary, SHE_SERVE_ROLE_CANARY);
    if (canary && c)
        json_object_set_new(c, "share", json_real(share));
    json_t *j = json_pack("{s:o, s:o, s:{s:I, s:I}}", "stable",
                          role_json(sv, stable, SHE_SERVE_ROLE_STABLE), "canary", c, "shadow",
                          "compared", compared, "agreed", agreed);
    policy_put(canary);
    policy_put(stable);
    return j;
}

/* ---- HTTP ---- */

static int json_content_type(const char *ct) {
    return strncasecmp(ct, "application/json", 16) == 0 &&
           (ct[16] == '\0' || ct[16] == ';' || ct[16] == ' ');
}

static void post_judge(void *ud, const she_httpd_req_t *req, she_httpd_resp_t *resp) {
    she_serve_t *sv = ud;
    const char *ct = she_httpd_req_header(req, "Content-Type");
    if (ct && !json_content_type(ct)) {
        atomic_fetch_add(&sv->rejected_invalid, 1);
        she_httpd_resp_error(resp, 415, "Content-Type must be application/json, not \"%.64s\"",
                             ct);
        return;
    }
    size_t len;
    const char *body = she_httpd_req_body(req, &len);
    she_sample_t s = {0};
    char errstr[SHE_ERRSTR_SIZE];
    if (she_serve_parse_request(body, len, &sv->o.limits, &s, errstr, sizeof(errstr)) !=
        SHE_OK) {
        atomic_fetch_add(&sv->rejected_invalid, 1);
        she_httpd_resp_error(resp, 400, "%s", errstr);
        return;
    }
    she_serve_answer_t *ans = malloc(sizeof(*ans));
    if (!ans) {
        she_sample_clear(&s);
        she_httpd_resp_error(resp, 500, "out of memory");
        return;
    }
    she_serve_judge(sv, &s, ans);
    if (ans->status == 200)
        she_httpd_resp_json(resp, 200, she_serve_answer_json(ans));
    else
        she_httpd_resp_error(resp, ans->status, "%s", ans->error);
    free(ans);
}

static void get_status(void *ud, const she_httpd_req_t *req, she_httpd_resp_t *resp) {
    (void)req;
    she_httpd_resp_json(resp, 200, she_serve_status(ud));
}

she_err_t she_serve_attach(she_serve_t *sv, she_httpd_t *h, char *errstr, size_t errstr_size) {
    static const char *const paths[2] = {"/v1/judge", "/admin/status"};
    SHE_TRY(she_httpd_route(h, "POST", paths[0], post_judge, sv, 0, errstr, errstr_size));
    SHE_TRY(she_httpd_route(h, "GET", paths[1], get_status, sv, 0, errstr, errstr_size));
    /* the same schema as httpd.c registers, so this finds its metric */
    she_metric_t *http;
    SHE_TRY(she_metrics_counter(sv->reg, "she_http_requests_total",
                                "HTTP requests answered, by route and status code.",
                                "route,code", &http, errstr, errstr_size));
    for (int i = 0; i < 2; i++) {
        const char *l401[] = {paths[i], "401"}, *l413[] = {paths[i], "413"};
        sv->http_401[i] = she_metrics_series(http, l401);
        sv->http_413[i] = she_metrics_series(http, l413);
    }
    return SHE_OK;
}
