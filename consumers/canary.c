/* canary.c -- gates and state machine of the canary controller (canary.h). */
#include "canary.h"

#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct she_canary_s {
    she_canary_config_t cfg;
    int64_t stable;
    she_canary_eval_t stable_eval;
    int stable_has_eval;
    int64_t canary; /* -1: none */
    she_canary_eval_t canary_eval;
    int canary_has_eval; /* 0 for a canary resumed after a restart */
    double t_start;      /* when the canary was started (or resumed) */
    int seen;            /* serve has reported the canary */
    double t_seen;
    she_canary_live_t base; /* first snapshot reporting the canary */
    she_canary_eval_t queued;
    int has_queued;
    int64_t decided; /* highest version decided (promoted, rolled back or aborted) */
};

she_canary_t *she_canary_new(const she_canary_config_t *cfg) {
    SHE_ASSERT(cfg->share > 0 && cfg->share <= 1);
    SHE_ASSERT(cfg->soak_s >= 0 && cfg->max_soak_s >= cfg->soak_s);
    SHE_ASSERT(cfg->min_requests >= 0 && cfg->min_compared >= 0);
    she_canary_t *c = calloc(1, sizeof(*c));
    SHE_CHECK_ALLOC(c);
    c->cfg = *cfg;
    c->stable = -1;
    c->canary = -1;
    c->decided = -1;
    return c;
}

void she_canary_free(she_canary_t *c) { free(c); }

void she_canary_set_stable(she_canary_t *c, int64_t version) {
    if (version != c->stable)
        c->stable_has_eval = 0;
    c->stable = version;
    if (c->has_queued && c->queued.version <= version)
        c->has_queued = 0;
}

void she_canary_mark_decided(she_canary_t *c, int64_t version) {
    if (version > c->decided)
        c->decided = version;
    if (c->has_queued && c->queued.version <= c->decided)
        c->has_queued = 0;
}

void she_canary_resume(she_canary_t *c, int64_t canary_version, double now_s) {
    c->canary = canary_version;
    c->canary_has_eval = 0;
    c->t_start = now_s;
    c->seen = 0;
    if (c->has_queued && c->queued.version <= canary_version)
        c->has_queued = 0;
}

she_canary_offer_t she_canary_offer(she_canary_t *c, const she_canary_eval_t *ev,
                                    int64_t *skipped) {
    if (skipped)
        *skipped = -1;
    if (c->stable < 0 || ev->version == c->stable) {
        c->stable = ev->version;
        c->stable_eval = *ev;
        c->stable_has_eval = 1;
        return SHE_CANARY_OFFER_STABLE;
    }
    if (ev->version == c->canary && !c->canary_has_eval) { /* a resumed canary's numbers */
        c->canary_eval = *ev;
        c->canary_has_eval = 1;
    }
    if (ev->version < c->stable || ev->version <= c->canary || ev->version <= c->decided)
        return SHE_CANARY_OFFER_OLD;
    if (c->has_queued && ev->version < c->queued.version) {
        if (skipped)
            *skipped = ev->version;
        return SHE_CANARY_OFFER_SUPERSEDED;
    }
    if (skipped && c->has_queued && ev->version > c->queued.version)
        *skipped = c->queued.version;
    c->queued = *ev;
    c->has_queued = 1;
    return SHE_CANARY_OFFER_QUEUED;
}

/* ---- decisions ---- */

static void metric(she_canary_decision_t *d, const char *name, double v) {
    if (isnan(v) || d->n_metrics == SHE_CANARY_MAX_METRICS)
        return;
    d->metrics[d->n_metrics++] = (she_canary_metric_t){name, v};
}

static void reason(she_canary_decision_t *d, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void reason(she_canary_decision_t *d, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(d->reason, sizeof(d->reason), fmt, ap);
    va_end(ap);
}

static void begin(she_canary_t *c, she_canary_decision_t *d, she_deploy_action_t a,
                  int64_t version) {
    memset(d, 0, sizeof(*d));
    d->action = a;
    d->version = version;
    d->stable_version = c->stable;
    d->canary_version = -1;
    d->canary_share = 0;
}

/* The queued candidate through the offline gates: START or ABORT naming every failed gate. */
static void offline(she_canary_t *c, double now_s, she_canary_decision_t *d) {
    const she_canary_config_t *g = &c->cfg;
    she_canary_eval_t ev = c->queued;
    c->has_queued = 0;
    begin(c, d, SHE_DEPLOY_ACTION_START, ev.version);
    metric(d, "canary_macro_f1", ev.macro_f1);
    metric(d, "canary_good_f1", ev.good_f1);
    metric(d, "canary_accuracy", ev.accuracy);
    metric(d, "canary_format_failure_rate", ev.format_failure_rate);
    metric(d, "canary_eval_rows", (double)ev.rows);
    metric(d, "f1_epsilon", g->f1_epsilon);
    metric(d, "max_format_failures", g->max_format_failures);
    char f1[192], fmt[96];
    int f1_ok = 1, fmt_ok = ev.format_failure_rate <= g->max_format_failures;
    if (c->stable_has_eval) {
        double bound = c->stable_eval.macro_f1 - g->f1_epsilon;
        metric(d, "stable_macro_f1", c->stable_eval.macro_f1);
        f1_ok = ev.macro_f1 >= bound;
        snprintf(f1, sizeof(f1), "macro F1 %.4f %s %.4f (stable v%" PRId64 " %.4f - %.4f)",
                 ev.macro_f1, f1_ok ? ">=" : "<", bound, c->stable, c->stable_eval.macro_f1,
                 g->f1_epsilon);
    } else {
        snprintf(f1, sizeof(f1),
                 "macro F1 %.4f (F1 gate not applied: stable v%" PRId64 " has no evaluation)",
                 ev.macro_f1, c->stable);
    }
    snprintf(fmt, sizeof(fmt), "format failure rate %.4f %s %.4f", ev.format_failure_rate,
             fmt_ok ? "<=" : ">", g->max_format_failures);
    if (!f1_ok || !fmt_ok) {
        d->action = SHE_DEPLOY_ACTION_ABORT;
        reason(d, "offline gate failed: %s%s%s", f1_ok ? "" : f1, f1_ok || fmt_ok ? "" : "; ",
               fmt_ok ? "" : fmt);
        c->decided = ev.version;
        return;
    }
    reason(d, "offline gates passed: %s, %s; canary at share %.3f", f1, fmt, g->share);
    d->canary_version = ev.version;
    d->canary_share = g->share;
    c->canary = ev.version;
    c->canary_eval = ev;
    c->canary_has_eval = 1;
    c->t_start = now_s;
    c->seen = 0;
}

/* Ends the canary: PROMOTE makes it the stable, ROLLBACK keeps the stable. */
static void finish(she_canary_t *c, she_canary_decision_t *d, int promote) {
    d->action = promote ? SHE_DEPLOY_ACTION_PROMOTE : SHE_DEPLOY_ACTION_ROLLBACK;
    c->decided = c->canary;
    if (promote) {
        c->stable = c->canary;
        c->stable_eval = c->canary_eval;
        c->stable_has_eval = c->canary_has_eval;
    }
    d->stable_version = c->stable;
    c->canary = -1;
    c->seen = 0;
}

static int64_t delta(int64_t now, int64_t base) { return now >= base ? now - base : now; }

/* The live gates on a snapshot that reports the canary; returns 1 with a decision. */
static int live_gates(she_canary_t *c, double now_s, const she_canary_live_t *lv,
                      she_canary_decision_t *d) {
    const she_canary_config_t *g = &c->cfg;
    if (!c->seen) {
        c->seen = 1;
        c->t_seen = now_s;
        c->base = *lv;
    }
    /* Counters that went down were reset by serve (a restart): count from zero again. */
    int64_t req = delta(lv->canary.requests, c->base.canary.requests);
    int64_t err = delta(lv->canary.errors, c->base.canary.errors);
    int64_t jf = delta(lv->canary.judge_failures, c->base.canary.judge_failures);
    int64_t cmp = delta(lv->shadow_compared, c->base.shadow_compared);
    int64_t agr = delta(lv->shadow_agreed, c->base.shadow_agreed);
    if (agr > cmp)
        agr = cmp;
    double soaked = now_s - c->t_seen;
    double err_rate = req > 0 ? (double)(err + jf) / (double)req : NAN;
    double agreement = cmp > 0 ? (double)agr / (double)cmp : NAN;
    double p95 = lv->canary.latency_p95_s, stable_p95 = lv->stable.latency_p95_s;
    double p95_bound = g->latency_factor * stable_p95 + g->latency_slack_s;

    begin(c, d, SHE_DEPLOY_ACTION_UNKNOWN, c->canary);
    metric(d, "soak_seconds", soaked);
    metric(d, "canary_requests", (double)req);
    metric(d, "canary_errors", (double)err);
    metric(d, "canary_judge_failures", (double)jf);
    metric(d, "canary_error_rate", err_rate);
    metric(d, "max_error_rate", g->max_error_rate);
    metric(d, "canary_latency_p95_seconds", p95);
    metric(d, "stable_latency_p95_seconds", stable_p95);
    metric(d, "latency_bound_seconds", p95_bound);
    metric(d, "shadow_compared", (double)cmp);
    metric(d, "shadow_agreed", (double)agr);
    metric(d, "shadow_agreement", agreement);
    metric(d, "min_agreement", g->min_agreement);
    metric(d, "canary_share", lv->canary.share);
    metric(d, "stable_requests", (double)lv->stable.requests);

    if (req < g->min_requests || cmp < g->min_compared)
        return 0; /* the minimum-sample rule: nothing is judged on too few requests */
    if (req > 0 && err_rate > g->max_error_rate) {
        reason(d, "live gate failed: canary error rate %.4f > %.4f (%" PRId64 " errors + %" PRId64
               " judge failures in %" PRId64 " requests)",
               err_rate, g->max_error_rate, err, jf, req);
    } else if (!isnan(stable_p95) && !isnan(p95) && p95 > p95_bound) {
        reason(d, "live gate failed: canary p95 latency %.4f s > %.4f s (%.2f x stable p95 %.4f s "
               "+ %.4f s)",
               p95, p95_bound, g->latency_factor, stable_p95, g->latency_slack_s);
    } else if (cmp > 0 && agreement < g->min_agreement) {
        reason(d, "live gate failed: shadow agreement %.4f < %.4f (%" PRId64 " of %" PRId64
               " compared requests)",
               agreement, g->min_agreement, agr, cmp);
    } else if (soaked >= g->soak_s) {
        char lat[96] = "p95 latency not compared (no stable p95)";
        if (!isnan(stable_p95) && !isnan(p95))
            snprintf(lat, sizeof(lat), "p95 latency %.4f s <= %.4f s", p95, p95_bound);
        reason(d, "live gates held for %.0f s: error rate %.4f <= %.4f over %" PRId64
               " requests, %s, shadow agreement %.4f over %" PRId64 " compared",
               soaked, req > 0 ? err_rate : 0.0, g->max_error_rate, req, lat,
               cmp > 0 ? agreement : 1.0, cmp);
        finish(c, d, 1);
        return 1;
    } else {
        return 0;
    }
    finish(c, d, 0);
    return 1;
}

int she_canary_step(she_canary_t *c, double now_s, const she_canary_live_t *live,
                    she_canary_decision_t *d) {
    if (c->stable < 0)
        return 0;
    if (c->canary < 0) {
        if (!c->has_queued)
            return 0;
        offline(c, now_s, d);
        return 1;
    }
    int64_t reported = live ? live->canary.version : -1;
    if (reported == c->canary && live_gates(c, now_s, live, d))
        return 1;
    if (now_s - c->t_start < c->cfg.max_soak_s)
        return 0;
    /* Undecided for too long: roll back, saying what was missing. */
    if (c->seen && reported == c->canary) {
        double req = 0, cmp = 0; /* as live_gates just measured them */
        for (int i = 0; i < d->n_metrics; i++) {
            if (strcmp(d->metrics[i].name, "canary_requests") == 0)
                req = d->metrics[i].value;
            else if (strcmp(d->metrics[i].name, "shadow_compared") == 0)
                cmp = d->metrics[i].value;
        }
        reason(d, "not enough traffic within %.0f s to judge canary v%" PRId64 ": %.0f of %" PRId64
               " requests, %.0f of %" PRId64 " shadow comparisons",
               c->cfg.max_soak_s, c->canary, req, c->cfg.min_requests, cmp, c->cfg.min_compared);
    } else {
        char what[64];
        if (!live)
            snprintf(what, sizeof(what), "no status from serve");
        else if (reported < 0)
            snprintf(what, sizeof(what), "serve reports no canary");
        else
            snprintf(what, sizeof(what), "serve reports canary v%" PRId64, reported);
        begin(c, d, SHE_DEPLOY_ACTION_ROLLBACK, c->canary);
        reason(d, "serve %s canary v%" PRId64 " within %.0f s of its start (%s)",
               c->seen ? "stopped reporting" : "did not report", c->canary, c->cfg.max_soak_s,
               what);
    }
    finish(c, d, 0);
    return 1;
}

/* ---- serve's status ---- */

/* A non-negative integer member; SHE_ERR_FORMAT naming it otherwise. */
static she_err_t get_count(const json_t *o, const char *where, const char *key, int64_t *out,
                           char *errstr, size_t errstr_size) {
    json_t *v = json_object_get(o, key);
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return she_errf(SHE_ERR_FORMAT, errstr, errstr_size,
                        "/admin/status: %s.%s is not a non-negative integer", where, key);
    *out = json_integer_value(v);
    return SHE_OK;
}

static she_err_t get_role(const json_t *o, const char *where, she_canary_role_t *r,
                          char *errstr, size_t errstr_size) {
    if (!json_is_object(o))
        return she_errf(SHE_ERR_FORMAT, errstr, errstr_size, "/admin/status: %s is not an object",
                        where);
    json_t *v = json_object_get(o, "version");
    if (!json_is_integer(v))
        return she_errf(SHE_ERR_FORMAT, errstr, errstr_size,
                        "/admin/status: %s.version is not an integer", where);
    r->version = json_integer_value(v);
    SHE_TRY(get_count(o, where, "requests", &r->requests, errstr, errstr_size));
    SHE_TRY(get_count(o, where, "errors", &r->errors, errstr, errstr_size));
    SHE_TRY(get_count(o, where, "judge_failures", &r->judge_failures, errstr, errstr_size));
    v = json_object_get(o, "latency_p95_s");
    r->latency_p95_s = json_is_number(v) ? json_number_value(v) : NAN; /* null: no data */
    v = json_object_get(o, "share");
    r->share = json_is_number(v) ? json_number_value(v) : 0;
    return SHE_OK;
}

she_err_t she_canary_parse_status(const char *body, she_canary_live_t *lv, char *errstr,
                                  size_t errstr_size) {
    json_error_t je;
    json_t *j = json_loads(body, 0, &je);
    if (!j)
        return she_errf(SHE_ERR_FORMAT, errstr, errstr_size, "/admin/status: line %d: %s",
                        je.line, je.text);
    memset(lv, 0, sizeof(*lv));
    lv->canary.version = -1;
    lv->canary.latency_p95_s = NAN;
    she_err_t err = get_role(json_object_get(j, "stable"), "stable", &lv->stable, errstr,
                             errstr_size);
    json_t *canary = json_object_get(j, "canary"), *shadow = json_object_get(j, "shadow");
    if (err == SHE_OK && canary && !json_is_null(canary))
        err = get_role(canary, "canary", &lv->canary, errstr, errstr_size);
    if (err == SHE_OK && shadow && !json_is_null(shadow)) {
        err = get_count(shadow, "shadow", "compared", &lv->shadow_compared, errstr, errstr_size);
        if (err == SHE_OK)
            err = get_count(shadow, "shadow", "agreed", &lv->shadow_agreed, errstr, errstr_size);
    }
    json_decref(j);
    return err;
}

void she_canary_state(const she_canary_t *c, double now_s, she_canary_state_t *out) {
    out->stable = c->stable;
    out->canary = c->canary;
    out->queued = c->has_queued ? c->queued.version : -1;
    out->soak_s = c->canary >= 0 && c->seen ? now_s - c->t_seen : 0;
    out->stable_has_eval = c->stable_has_eval;
}

const char *she_canary_action_name(she_deploy_action_t a) {
    switch (a) {
    case SHE_DEPLOY_ACTION_START: return "start";
    case SHE_DEPLOY_ACTION_PROMOTE: return "promote";
    case SHE_DEPLOY_ACTION_ROLLBACK: return "rollback";
    case SHE_DEPLOY_ACTION_ABORT: return "abort";
    default: return "unknown";
    }
}
