/* selection.h -- which prompts the RL learner trains on (paper §4.1, §4.2, §5.5): offline
 * rejection sampling, dynamic difficulty sampling, diverse sampling quotas, curriculum stages and
 * reward-model-score selection, with every decision counted by reason.
 *
 * Offline rejection sampling is one pure function over the initial policy's pass flags.  The rest
 * is a stateful selector: offer it a prompt (she_selector_decide), tell it how the prompt's G
 * rollouts fared (she_selector_observe) and when a training step ends (she_selector_end_step).
 * An offered prompt goes through, in order:
 *   1. the curriculum stage's difficulty band on the prompt's OFFLINE pass rate (the initial
 *      policy's, from rejection sampling): easier / harder stages.  Streaming has no offline
 *      pass rates (a sample is met for the first time on the stream), so with stage_recent the
 *      band applies to the prompt's RECENT pass rate instead, and a prompt never observed passes
 *      the stage filter: it has to be rolled out once before its difficulty is known;
 *   2. the reward-model score band (§5.5), when enabled;
 *   3. the diverse-sampling quota of the stage's balance dimensions (domain x query type x grade),
 *      and the caps on single query types (largest share of admissions, e.g. negation <= 0.2),
 *      which `she control` publishes to every rollout consumer;
 *   4. dynamic difficulty: the prompt's RECENT pass rate (an exponential moving average of its
 *      groups' pass rates under the current policy) must lie in the band [lo, hi], which moves
 *      inside [lo_min, hi_max] (paper: 0.01 .. 0.90).  Every `window` decisions a controller
 *      widens the band on the side(s) that rejected when under min_admit of them were admitted,
 *      and moves it back toward the initial band when over max_admit were.  It never stalls:
 *      once the band is as wide as it goes on a prompt's side, a FALLBACK admits out-of-band
 *      (and unseen) prompts as needed to keep min_admit of each window flowing, and an
 *      out-of-band prompt is RETRIED every retry_after skips so that its rate follows the
 *      policy's progress instead of freezing at the value that got it skipped.
 * The selector's whole state (band, per-prompt pass rates, quota cells, curriculum position,
 * counters, random state) is written to and read from JSON, so a streaming learner can checkpoint
 * it and resume with identical decisions.
 *
 * Not here: reading data, rollouts, the reward model itself (the caller gives its score).  The
 * selector allocates as it meets new prompts and quota cells (a hash table entry each) and
 * aborts if that memory cannot be had. */
#ifndef SHE_SELECTION_H
#define SHE_SELECTION_H

#include <jansson.h>
#include <stdint.h>

#include "core/error.h"

/* Why a prompt was admitted or skipped.  ADMIT_* are admissions. */
typedef enum she_sel_reason {
    SHE_SEL_ADMIT_IN_BAND = 0, /* recent pass rate inside [lo, hi] */
    SHE_SEL_ADMIT_UNSEEN,      /* no pass rate yet; admitted with probability p_unseen */
    SHE_SEL_ADMIT_FALLBACK,    /* outside the widest band, admitted so that the flow never stops */
    SHE_SEL_ADMIT_RETRY,       /* outside the band, but skipped retry_after times: measured anew */
    SHE_SEL_ADMIT_NO_DIFFICULTY, /* dynamic difficulty sampling is off */
    SHE_SEL_SKIP_CURRICULUM,   /* offline pass rate outside the stage's band (or unknown) */
    SHE_SEL_SKIP_RM_BAND,      /* reward-model score outside [rm_lo, rm_hi] (or missing) */
    SHE_SEL_SKIP_QUOTA,        /* its domain x query type x grade cell is over its share */
    SHE_SEL_SKIP_TOO_HARD,     /* recent pass rate < lo */
    SHE_SEL_SKIP_TOO_EASY,     /* recent pass rate > hi */
    SHE_SEL_SKIP_UNSEEN,       /* no pass rate yet; not drawn (probability 1 - p_unseen) */
    SHE_SEL_SKIP_CURRICULUM_DONE, /* the last curriculum stage has met its stop condition */
    /* offline rejection sampling (she_sel_reject) */
    SHE_SEL_KEEP_MIXED,        /* some rollouts right, some wrong */
    SHE_SEL_DROP_ALL_CORRECT,
    SHE_SEL_DROP_ALL_WRONG,
    SHE_SEL_REASON__COUNT
} she_sel_reason_t;

/* "admit_in_band", "skip_too_hard", ... (stable names for logs and the JSON state). */
const char *she_sel_reason_name(she_sel_reason_t r);
static inline int she_sel_admitted(she_sel_reason_t r) { return r <= SHE_SEL_ADMIT_NO_DIFFICULTY; }

typedef struct she_sel_counts {
    int64_t n[SHE_SEL_REASON__COUNT];
} she_sel_counts_t;

/* Offline rejection sampling: pass [n_prompts, G] (the initial policy's rollouts, 1 = correct
 * final grade).  keep [n_prompts] = 1 exactly when a prompt has at least one right and one wrong
 * rollout; pass_rate [n_prompts] (NULL allowed) gets each prompt's fraction right (the offline
 * pass rate curriculum stages read).  Adds to counts (NULL allowed).  Returns the number kept. */
int she_sel_reject(const uint8_t *pass, int n_prompts, int G, uint8_t *keep, float *pass_rate,
                   she_sel_counts_t *counts);

/* Dimensions a quota balances over (bit mask). */
enum {
    SHE_SEL_DIM_DOMAIN = 1,
    SHE_SEL_DIM_QUERY_TYPE = 2,
    SHE_SEL_DIM_GRADE = 4,
};

#define SHE_SEL_MAX_STAGES 8
#define SHE_SEL_STAGE_NAME 32
#define SHE_SEL_MAX_CAPS 16
#define SHE_SEL_CAP_NAME 32

/* A cap on one query type: at most `share` of the recent admissions (decayed like the quota
 * cells, over quota_window admissions) may be of this type. */
typedef struct she_sel_cap {
    char query_type[SHE_SEL_CAP_NAME];
    float share; /* (0, 1] */
} she_sel_cap_t;

/* A curriculum stage: a filter and a stop condition. */
typedef struct she_sel_stage {
    char name[SHE_SEL_STAGE_NAME];
    float offline_lo, offline_hi; /* admit offline pass rates in [lo, hi]; [0, 1] admits every
                                     prompt, also those without an offline rate */
    unsigned balance;             /* SHE_SEL_DIM_* to balance by quota; 0 = no quota */
    int64_t max_steps;            /* the stage ends after this many training steps; 0 = never */
    int plateau_patience;         /* ... or when the pass-rate EMA has not risen by plateau_delta
                                     above its best for this many steps; 0 = off */
    float plateau_delta;
} she_sel_stage_t;

typedef struct she_selector_config {
    she_sel_stage_t stages[SHE_SEL_MAX_STAGES];
    int n_stages; /* >= 1; the defaults are one stage that admits everything and never ends */
    int stage_recent; /* 1: a prompt without an offline pass rate is placed by its recent pass
                         rate, and one never observed passes the stage filter (streaming);
                         0: unknown offline rate = outside a narrowed stage band (offline RL) */

    /* dynamic difficulty sampling */
    int difficulty;     /* 1 = on */
    float lo_min, hi_max; /* outer bounds of the band (paper: 0.01, 0.90) */
    float lo0, hi0;     /* the initial band, inside the bounds (0.05, 0.80) */
    float step;         /* how far one adjustment moves a bound (0.05) */
    int window;         /* difficulty decisions per adjustment (32) */
    float min_admit;    /* admitted fraction of a window below which the band widens, on the
                           side(s) that rejected, and up to which the fallback admits (0.25) */
    float max_admit;    /* admitted fraction above which the band moves back toward the initial
                           band, one step per window (0.75) */
    float p_unseen;     /* probability of admitting a prompt never observed (1.0) */
    int retry_after;    /* an out-of-band prompt skipped this many times is admitted once, so
                           its rate follows the policy instead of freezing; 0 = never (8) */
    float ema_alpha;    /* weight of the newest group in a prompt's recent pass rate (0.5) */

    /* diverse sampling quotas: a cell (the values of the stage's balance dimensions) is admitted
     * while its admitted count is below the least count of the active cells (those offered in the
     * last quota_window offers) plus quota_slack: the mix is held to the rarest active cell's
     * pace.  Counts decay by 1 - 1/quota_window per offer, so the admitted RATES balance; a cell
     * that enters joins at the least count, and one that stops arriving stops holding the others
     * back after quota_window offers.  Cumulative counts of a common and a rare cell differ by
     * about quota_slack / (rare cell's offer share * quota_window) relative. */
    float quota_slack;  /* 1.0 */
    int quota_window;   /* 1024 */
    she_sel_cap_t caps[SHE_SEL_MAX_CAPS]; /* per-query-type caps (she_selector_set_caps) */
    int n_caps;

    /* reward-model-based selection (§5.5): admit prompts whose score lies in [rm_lo, rm_hi] */
    int rm_select;      /* 1 = on */
    float rm_lo, rm_hi;

    float pass_ema_alpha; /* smoothing of the per-step batch pass rate for plateaus (0.1) */
    uint64_t seed;      /* for p_unseen draws */
} she_selector_config_t;

she_selector_config_t she_selector_defaults(void);

/* What the selector knows about an offered prompt. */
typedef struct she_sel_item {
    const char *id;         /* stable prompt id (the sample_id of the query-item pair) */
    const char *domain;     /* NULL = "" */
    const char *query_type; /* NULL = "" */
    int grade;              /* human label 1..4, 0 unknown */
    float offline_pass;     /* initial policy's pass rate (she_sel_reject), NAN unknown */
    float rm_score;         /* reward-model score, NAN unknown */
} she_sel_item_t;

typedef struct she_selector she_selector_t;

/* Checks the config (bounds ordered inside [0, 1], window > 0, ...); on error returns NULL and
 * fills errstr.  Free with she_selector_free (NULL allowed). */
she_selector_t *she_selector_new(const she_selector_config_t *cfg, char *errstr,
                                 size_t errstr_size);
void she_selector_free(she_selector_t *sel);

/* Decides on one offered prompt, counts the reason and returns it (she_sel_admitted() tells
 * whether to train on it). */
she_sel_reason_t she_selector_decide(she_selector_t *sel, const she_sel_item_t *item);

/* A copy of the selector's configuration (with its current caps). */
void she_selector_get_config(const she_selector_t *sel, she_selector_config_t *out);

/* Replaces the query-type caps (a control state carries them).  SHE_ERR_INVALID, selector
 * unchanged, for more than SHE_SEL_MAX_CAPS caps, an empty or too long type, a repeated type or
 * a share outside (0, 1].  The decayed counts of types that stay capped are kept. */
she_err_t she_selector_set_caps(she_selector_t *sel, const she_sel_cap_t *caps, int n_caps,
                                char *errstr, size_t errstr_size);

/* Records n_pass right out of G rollouts of prompt id (updates its recent pass rate). */
void she_selector_observe(she_selector_t *sel, const char *id, int n_pass, int G);

/* Ends a training step whose rollouts passed at batch_pass_rate: advances the curriculum when
 * the stage's stop condition holds.  Returns 1 when the stage changed (or the last one ended). */
int she_selector_end_step(she_selector_t *sel, double batch_pass_rate);

typedef struct she_selector_status {
    double lo, hi;          /* the current band */
    int stage;              /* index of the current stage; n_stages when all are done */
    const char *stage_name; /* "" when done */
    int64_t stage_steps;
    double pass_ema;
    int64_t n_widen, n_restore, n_stage_advance;
    int64_t n_prompts_seen; /* prompts with a recent pass rate */
    she_sel_counts_t counts;
} she_selector_status_t;

void she_selector_status(const she_selector_t *sel, she_selector_status_t *out);
/* The prompt's recent pass rate, or -1 if never observed. */
double she_selector_pass_rate(const she_selector_t *sel, const char *id);

/* The state as a new JSON object (the caller json_decref's it); NULL only when out of memory. */
json_t *she_selector_state_json(const she_selector_t *sel);
/* Replaces the state with one she_selector_state_json wrote (the config stays the selector's).
 * On a malformed state returns SHE_ERR_FORMAT, fills errstr and leaves the selector as it was. */
she_err_t she_selector_load_state(she_selector_t *sel, const json_t *state, char *errstr,
                                  size_t errstr_size);

#endif
