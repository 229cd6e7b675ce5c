/* canary.h -- the decisions of the canary controller (`she canary`) as pure logic over numbers:
 * offline gates on evaluation records, live gates on `she serve`'s status snapshots, and the
 * one-canary-at-a-time state machine with its queue, plus the reader of serve's status
 * document.  No I/O and no clock: the caller passes the time in seconds, reads Kafka and HTTP,
 * and publishes the decisions (canary_cmd.c).
 *
 * Versions.  There is one stable version, at most one canary (START, then PROMOTE or
 * ROLLBACK) and at most one queued candidate: a newer evaluated version replaces a queued
 * older one, which is skipped as superseded (the offer says so, for the log).  Versions not
 * newer than the stable, the canary or the last decided one are ignored; an evaluation of the
 * stable version itself only refreshes the stable's numbers.
 *
 * Offline gates, checked when the candidate leaves the queue, against the stable of that
 * moment:
 *   macro F1 >= stable macro F1 - f1_epsilon   (not applied while the stable has no
 *                                               evaluation; the START reason says so)
 *   format failure rate <= max_format_failures
 * Both hold: START at `share`; else ABORT naming the failing gate.
 *
 * Live gates, on counter deltas since the first snapshot in which serve reports the canary
 * version (serve may or may not reset its counters when a canary starts; deltas work either
 * way), and on serve's own p95 estimates:
 *   error rate = (errors + judge failures) / requests <= max_error_rate
 *       (an answer that does not parse is a failed judgement for the caller, so it counts)
 *   canary p95 latency <= latency_factor x stable p95 + latency_slack_s
 *       (not applied while serve has no stable p95)
 *   shadow agreement = agreed / compared >= min_agreement   (not applied when min_compared
 *       is 0 and nothing was compared)
 * The gates are judged only once the canary has min_requests requests and min_compared shadow
 * comparisons (the minimum-sample rule).  From then on a failing gate rolls back at once; when
 * all hold and the canary has soaked soak_s seconds (from the first snapshot reporting it),
 * it is promoted.  A canary still short of the minimum, or never reported by serve,
 * max_soak_s after its START is rolled back, saying which. */
#ifndef SHE_CANARY_H
#define SHE_CANARY_H

#include <stdint.h>

#include "messages.h"

typedef struct she_canary_config {
    double share;               /* canary traffic share on START, (0, 1] */
    double f1_epsilon;          /* macro F1 may drop this much below the stable's */
    double max_format_failures; /* highest format-failure rate offline, 0..1 */
    double max_error_rate;      /* highest live (errors + judge failures) / requests */
    double latency_factor;      /* canary p95 <= factor x stable p95 + slack */
    double latency_slack_s;
    double min_agreement; /* lowest shadow agreement with the stable, 0..1 */
    int64_t min_requests; /* canary requests before the live gates are judged */
    int64_t min_compared; /* shadow comparisons before the live gates are judged */
    double soak_s;        /* gates must hold this long before a PROMOTE */
    double max_soak_s;    /* rollback when still undecided this long after START (>= soak_s) */
} she_canary_config_t;

/* The numbers of an evaluation record (she_evaluation_record_t) the gates use. */
typedef struct she_canary_eval {
    int64_t version;
    double macro_f1, good_f1, accuracy, format_failure_rate;
    int64_t rows;
} she_canary_eval_t;

/* One role in serve's GET /admin/status. */
typedef struct she_canary_role {
    int64_t version; /* -1: no policy in this role (no canary) */
    int64_t requests, errors, judge_failures;
    double latency_p95_s; /* NAN: unknown (no requests yet) */
    double share;         /* canary only */
} she_canary_role_t;

typedef struct she_canary_live {
    she_canary_role_t stable, canary;
    int64_t shadow_compared, shadow_agreed;
} she_canary_live_t;

/* Reads serve's GET /admin/status document (the metrics contract: {"stable": {"version",
 * "requests", "errors", "judge_failures", "latency_p95_s"}, "canary": {... the same ...,
 * "share"} or null, "shadow": {"compared", "agreed"}}) into *lv.  latency_p95_s null means
 * NAN; a missing or null canary means canary.version -1; a missing shadow means zero counts.
 * SHE_ERR_FORMAT naming the member (or the JSON position) for anything else: counts that are
 * not non-negative integers, a version that is not an integer, a role that is not an object. */
she_err_t she_canary_parse_status(const char *body, she_canary_live_t *lv, char *errstr,
                                  size_t errstr_size);

#define SHE_CANARY_MAX_METRICS 24

typedef struct she_canary_metric {
    const char *name; /* static string */
    double value;
} she_canary_metric_t;

/* A decision: what to publish as a DeploymentEvent (fields after the decision) and log. */
typedef struct she_canary_decision {
    she_deploy_action_t action;
    int64_t version;        /* the version decided about */
    int64_t stable_version; /* after the decision */
    int64_t canary_version; /* after the decision; -1: none */
    double canary_share;    /* after the decision */
    char reason[512];
    she_canary_metric_t metrics[SHE_CANARY_MAX_METRICS]; /* what the decision was based on */
    int n_metrics;
} she_canary_decision_t;

typedef enum she_canary_offer {
    SHE_CANARY_OFFER_STABLE,     /* became the stable (none yet), or refreshed its numbers */
    SHE_CANARY_OFFER_QUEUED,     /* waits for the canary slot */
    SHE_CANARY_OFFER_SUPERSEDED, /* a newer version is already queued: skipped */
    SHE_CANARY_OFFER_OLD,        /* not newer than the stable, canary or last decision */
} she_canary_offer_t;

typedef struct she_canary_s she_canary_t;

/* A controller with no stable version yet (the first offered evaluation becomes it unless
 * she_canary_set_stable is called first).  cfg is copied; its ranges are the caller's to
 * check (asserted).  Never returns NULL; free with she_canary_free (NULL is fine). */
she_canary_t *she_canary_new(const she_canary_config_t *cfg);
void she_canary_free(she_canary_t *c);

/* Sets the stable version (from the command line, the deployment log, or serve), keeping
 * its evaluation if the controller has one of that version. */
void she_canary_set_stable(she_canary_t *c, int64_t version);
/* Versions up to `version` were decided before (read back from the deployment log): their
 * evaluations are ignored from now on. */
void she_canary_mark_decided(she_canary_t *c, int64_t version);
/* Resumes a canary STARTed before a restart: it soaks again from now. */
void she_canary_resume(she_canary_t *c, int64_t canary_version, double now_s);

/* Takes an evaluation.  *skipped (may be NULL) receives the version skipped as superseded --
 * the queued one this replaces (QUEUED) or this one (SUPERSEDED) -- else -1. */
she_canary_offer_t she_canary_offer(she_canary_t *c, const she_canary_eval_t *ev,
                                    int64_t *skipped);

/* Advances the state machine at time now_s with the latest status snapshot (NULL: none, e.g.
 * serve unreachable).  Returns 1 and fills *d when a decision is due, else 0; call it again
 * after a decision (a PROMOTE or ROLLBACK frees the slot for the queued candidate). */
int she_canary_step(she_canary_t *c, double now_s, const she_canary_live_t *live,
                    she_canary_decision_t *d);

typedef struct she_canary_state {
    int64_t stable;  /* -1: none yet */
    int64_t canary;  /* -1: none */
    int64_t queued;  /* -1: none */
    double soak_s;   /* how long the current canary has soaked (0 before serve reports it) */
    int stable_has_eval;
} she_canary_state_t;

void she_canary_state(const she_canary_t *c, double now_s, she_canary_state_t *out);

/* "start", "promote", "rollback", "abort" (metric label values and log words). */
const char *she_canary_action_name(she_deploy_action_t a);

#endif
