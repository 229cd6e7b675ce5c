/* selection.c -- rejection sampling, the selector: curriculum, RM band, quotas, dynamic difficulty
 * (see selection.h). */
#include "selection.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const reason_names[SHE_SEL_REASON__COUNT] = {
    "admit_in_band", "admit_unseen", "admit_fallback", "admit_retry", "admit_no_difficulty",
    "skip_curriculum", "skip_rm_band", "skip_quota", "skip_too_hard", "skip_too_easy",
    "skip_unseen", "skip_curriculum_done", "keep_mixed", "drop_all_correct", "drop_all_wrong",
};

const char *she_sel_reason_name(she_sel_reason_t r) {
    return (unsigned)r < SHE_SEL_REASON__COUNT ? reason_names[r] : "unknown";
}

int she_sel_reject(const uint8_t *pass, int n_prompts, int G, uint8_t *keep, float *pass_rate,
                   she_sel_counts_t *counts) {
    SHE_ASSERT(G > 0);
    int kept = 0;
    for (int p = 0; p < n_prompts; p++) {
        int k = 0;
        for (int i = 0; i < G; i++)
            k += pass[(size_t)p * G + i] != 0;
        she_sel_reason_t r = k == G ? SHE_SEL_DROP_ALL_CORRECT
                             : k == 0 ? SHE_SEL_DROP_ALL_WRONG
                                      : SHE_SEL_KEEP_MIXED;
        keep[p] = r == SHE_SEL_KEEP_MIXED;
        kept += keep[p];
        if (pass_rate)
            pass_rate[p] = (float)k / (float)G;
        if (counts)
            counts->n[r]++;
    }
    return kept;
}

/* ---- string-keyed table: prompt id -> recent pass rate, quota cell -> decayed counts ---- */

typedef struct entry {
    char *key; /* NULL = empty slot */
    double x;  /* prompt: recent pass rate;  cell: decayed admissions */
    int64_t n; /* prompt: groups observed;  cell: quota tick of its last offer */
    int64_t m; /* prompt: offers skipped since its last admission;  cell: 0 */
} entry_t;

typedef struct table {
    entry_t *e;
    size_t cap; /* power of two */
    size_t count;
} table_t;

static uint64_t fnv1a(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static entry_t *table_slot(entry_t *e, size_t cap, const char *key) {
    size_t i = fnv1a(key) & (cap - 1);
    while (e[i].key && strcmp(e[i].key, key) != 0)
        i = (i + 1) & (cap - 1);
    return &e[i];
}

static entry_t *table_find(const table_t *t, const char *key) {
    if (!t->cap)
        return NULL;
    entry_t *s = table_slot(t->e, t->cap, key);
    return s->key ? s : NULL;
}

/* The entry for key, created zeroed if absent.  Aborts when out of memory. */
static entry_t *table_get(table_t *t, const char *key) {
    entry_t *s = table_find(t, key);
    if (s)
        return s;
    if ((t->count + 1) * 2 > t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 64;
        entry_t *e = calloc(cap, sizeof(*e));
        SHE_CHECK_ALLOC(e);
        for (size_t i = 0; i < t->cap; i++)
            if (t->e[i].key)
                *table_slot(e, cap, t->e[i].key) = t->e[i];
        free(t->e);
        t->e = e;
        t->cap = cap;
    }
    s = table_slot(t->e, t->cap, key);
    s->key = strdup(key);
    SHE_CHECK_ALLOC(s->key);
    t->count++;
    return s;
}

static void table_clear(table_t *t) {
    for (size_t i = 0; i < t->cap; i++)
        free(t->e[i].key);
    free(t->e);
    memset(t, 0, sizeof(*t));
}

/* ---- selector ---- */

/* Everything that changes as the selector runs; one struct so a load can build a new one and
 * swap it in only when the whole JSON state was valid. */
typedef struct sel_state {
    double lo, hi;                  /* the band */
    int64_t w_n, w_admit, w_hard, w_easy; /* the current difficulty window */
    uint64_t rng;
    int stage;
    int64_t stage_steps;
    double pass_ema, best;          /* pass_ema valid when stage_steps > 0; best -1 = none yet */
    int64_t since_best;
    int64_t n_widen, n_restore, n_stage_advance;
    int64_t quota_tick;             /* offers that reached the quota check */
    she_sel_counts_t counts;
    table_t prompts;
    table_t cells;
    double cap_total; /* decayed admissions, the denominator of the caps */
    table_t capped;   /* query type -> decayed admissions (capped types only) */
} sel_state_t;

struct she_selector {
    she_selector_config_t cfg;
    sel_state_t s;
};

she_selector_config_t she_selector_defaults(void) {
    she_selector_config_t cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.n_stages = 1;
    snprintf(cfg.stages[0].name, SHE_SEL_STAGE_NAME, "all");
    cfg.stages[0].offline_hi = 1.0f;
    cfg.difficulty = 1;
    cfg.lo_min = 0.01f;
    cfg.hi_max = 0.90f;
    cfg.lo0 = 0.05f;
    cfg.hi0 = 0.80f;
    cfg.step = 0.05f;
    cfg.window = 32;
    cfg.min_admit = 0.25f;
    cfg.max_admit = 0.75f;
    cfg.p_unseen = 1.0f;
    cfg.retry_after = 8;
    cfg.ema_alpha = 0.5f;
    cfg.quota_slack = 1.0f;
    cfg.quota_window = 1024;
    cfg.rm_lo = 0.0f;
    cfg.rm_hi = 1.0f;
    cfg.pass_ema_alpha = 0.1f;
    cfg.seed = 1;
    return cfg;
}

static she_err_t check_config(const she_selector_config_t *c, char *errstr, size_t errstr_size) {
    if (c->n_stages < 1 || c->n_stages > SHE_SEL_MAX_STAGES)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size, "n_stages %d outside 1..%d",
                        c->n_stages, SHE_SEL_MAX_STAGES);
    for (int i = 0; i < c->n_stages; i++) {
        const she_sel_stage_t *st = &c->stages[i];
        if (!(st->offline_lo >= 0.0f && st->offline_lo <= st->offline_hi &&
              st->offline_hi <= 1.0f) ||
            st->max_steps < 0 || st->plateau_patience < 0 ||
            (st->balance & ~(unsigned)(SHE_SEL_DIM_DOMAIN | SHE_SEL_DIM_QUERY_TYPE |
                                       SHE_SEL_DIM_GRADE)))
            return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                            "stage %d (%s): need 0 <= offline_lo <= offline_hi <= 1, "
                            "max_steps >= 0, plateau_patience >= 0, known balance bits",
                            i, st->name);
    }
    if (!(c->lo_min >= 0.0f && c->lo_min <= c->lo0 && c->lo0 < c->hi0 && c->hi0 <= c->hi_max &&
          c->hi_max <= 1.0f))
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                        "difficulty band: need 0 <= lo_min <= lo0 < hi0 <= hi_max <= 1");
    if (!(c->step > 0.0f) || c->window < 1 || c->retry_after < 0 || !(c->min_admit >= 0.0f) ||
        !(c->min_admit <= c->max_admit) || !(c->max_admit <= 1.0f))
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                        "difficulty controller: need step > 0, window >= 1, retry_after >= 0, "
                        "0 <= min_admit <= max_admit <= 1");
    if (!(c->p_unseen >= 0.0f && c->p_unseen <= 1.0f) ||
        !(c->ema_alpha > 0.0f && c->ema_alpha <= 1.0f) ||
        !(c->pass_ema_alpha > 0.0f && c->pass_ema_alpha <= 1.0f))
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                        "need p_unseen in [0, 1], ema_alpha and pass_ema_alpha in (0, 1]");
    if (c->n_caps < 0 || c->n_caps > SHE_SEL_MAX_CAPS)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size, "more than %d query-type caps",
                        SHE_SEL_MAX_CAPS);
    for (int i = 0; i < c->n_caps; i++) {
        const she_sel_cap_t *k = &c->caps[i];
        size_t len = strnlen(k->query_type, SHE_SEL_CAP_NAME);
        if (len == 0 || len == SHE_SEL_CAP_NAME || !(k->share > 0.0f && k->share <= 1.0f))
            return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                            "query-type cap %d: need a type of 1..%d bytes and a share in (0, 1]",
                            i, SHE_SEL_CAP_NAME - 1);
        for (int j = 0; j < i; j++)
            if (strcmp(c->caps[j].query_type, k->query_type) == 0)
                return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                                "query type '%s' capped twice", k->query_type);
    }
    if (!(c->quota_slack > 0.0f) || c->quota_window < 1)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                        "quotas: need quota_slack > 0 and quota_window >= 1");
    if (c->rm_select && !(c->rm_lo <= c->rm_hi))
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size, "need rm_lo <= rm_hi");
    return SHE_OK;
}

static void state_init(sel_state_t *s, const she_selector_config_t *cfg) {
    memset(s, 0, sizeof(*s));
    s->lo = cfg->lo0;
    s->hi = cfg->hi0;
    s->rng = cfg->seed;
    s->best = -1.0;
}

static void state_clear(sel_state_t *s) {
    table_clear(&s->prompts);
    table_clear(&s->cells);
    table_clear(&s->capped);
}

she_selector_t *she_selector_new(const she_selector_config_t *cfg, char *errstr,
                                 size_t errstr_size) {
    if (check_config(cfg, errstr, errstr_size) != SHE_OK)
        return NULL;
    she_selector_t *sel = calloc(1, sizeof(*sel));
    SHE_CHECK_ALLOC(sel);
    sel->cfg = *cfg;
    state_init(&sel->s, cfg);
    return sel;
}

void she_selector_free(she_selector_t *sel) {
    if (!sel)
        return;
    state_clear(&sel->s);
    free(sel);
}

/* splitmix64: a uniform double in [0, 1) */
static double rng_uniform(uint64_t *state) {
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (double)(z >> 11) * 0x1.0p-53;
}

/* The quota cell of an item under a balance mask: the selected fields joined by \x1f. */
static void cell_key(const she_sel_item_t *it, unsigned balance, char *buf, size_t size) {
    snprintf(buf, size, "%s\x1f%s\x1f%d",
             (balance & SHE_SEL_DIM_DOMAIN) && it->domain ? it->domain : "",
             (balance & SHE_SEL_DIM_QUERY_TYPE) && it->query_type ? it->query_type : "",
             (balance & SHE_SEL_DIM_GRADE) ? it->grade : 0);
}

/* The least admitted count over the cells offered within the last quota_window offers,
 * leaving out `skip`; INFINITY when there are none. */
static double quota_min(const she_selector_t *sel, const entry_t *skip) {
    const table_t *t = &sel->s.cells;
    double lo = INFINITY;
    for (size_t i = 0; i < t->cap; i++) {
        const entry_t *e = &t->e[i];
        if (e->key && e != skip && sel->s.quota_tick - e->n < sel->cfg.quota_window)
            lo = e->x < lo ? e->x : lo;
    }
    return lo;
}

/* Decays every cell's admissions, counts the offer, and says whether the cell may be admitted:
 * its count must be below the least admitted active cell's plus quota_slack.  A cell that enters
 * (or returns after quota_window offers away) joins at that least count, so it neither holds the
 * others back nor floods in. */
static int quota_room(she_selector_t *sel, const char *key) {
    table_t *t = &sel->s.cells;
    double d = 1.0 - 1.0 / sel->cfg.quota_window;
    for (size_t i = 0; i < t->cap; i++)
        if (t->e[i].key)
            t->e[i].x *= d;
    int64_t tick = ++sel->s.quota_tick;
    entry_t *c = table_get(t, key);
    int entering = c->n == 0 || tick - c->n >= sel->cfg.quota_window;
    if (entering) {
        double lo = quota_min(sel, c);
        if (isfinite(lo) && (c->n == 0 || c->x < lo))
            c->x = lo;
    }
    c->n = tick;
    return c->x < quota_min(sel, NULL) + sel->cfg.quota_slack;
}

/* The cap on query type `type`, or NULL when the type is not capped. */
static const she_sel_cap_t *cap_of(const she_selector_t *sel, const char *type) {
    for (int i = 0; i < sel->cfg.n_caps; i++)
        if (strcmp(sel->cfg.caps[i].query_type, type) == 0)
            return &sel->cfg.caps[i];
    return NULL;
}

/* Room under a cap: one more admission keeps the type's decayed share at or under the cap, give
 * or take quota_slack admissions (so that the first few of a type always pass). */
static int cap_room(const she_selector_t *sel, const she_sel_cap_t *k) {
    const entry_t *e = table_find(&sel->s.capped, k->query_type);
    double n = e ? e->x : 0.0;
    return n + 1.0 <= (double)k->share * (sel->s.cap_total + 1.0) + sel->cfg.quota_slack;
}

/* Counts one admission (of any type: the caps' denominator) against the caps. */
static void cap_count(she_selector_t *sel, const char *type) {
    if (sel->cfg.n_caps == 0)
        return;
    double d = 1.0 - 1.0 / sel->cfg.quota_window;
    sel->s.cap_total = sel->s.cap_total * d + 1.0;
    for (int i = 0; i < sel->cfg.n_caps; i++) {
        entry_t *e = table_get(&sel->s.capped, sel->cfg.caps[i].query_type);
        e->x = e->x * d + (strcmp(type, sel->cfg.caps[i].query_type) == 0);
    }
}

/* End of a difficulty window: widen the side(s) that rejected when too little passed; move back
 * toward the initial band when plenty did. */
static void adjust_band(she_selector_t *sel) {
    const she_selector_config_t *c = &sel->cfg;
    sel_state_t *s = &sel->s;
    double f = (double)s->w_admit / (double)s->w_n;
    double lo = s->lo, hi = s->hi;
    if (f < c->min_admit) {
        if (s->w_hard > 0)
            lo = fmax(c->lo_min, lo - c->step);
        if (s->w_easy > 0)
            hi = fmin(c->hi_max, hi + c->step);
        s->n_widen += lo != s->lo || hi != s->hi;
    } else if (f > c->max_admit) {
        if (lo < c->lo0)
            lo = fmin(c->lo0, lo + c->step);
        if (hi > c->hi0)
            hi = fmax(c->hi0, hi - c->step);
        s->n_restore += lo != s->lo || hi != s->hi;
    }
    s->lo = lo;
    s->hi = hi;
    s->w_n = s->w_admit = s->w_hard = s->w_easy = 0;
}

/* Dynamic difficulty sampling on one prompt that passed every other filter. */
static she_sel_reason_t difficulty(she_selector_t *sel, const char *id) {
    const she_selector_config_t *c = &sel->cfg;
    sel_state_t *s = &sel->s;
    entry_t *e = table_find(&s->prompts, id);
    /* the fallback may admit this one when that keeps the window's admitted fraction at or
     * under min_admit: it fills the flow up to min_admit and never beyond */
    int starving = (double)(s->w_admit + 1) <= c->min_admit * (double)(s->w_n + 1);
    she_sel_reason_t r;
    if (!e) {
        int draw = c->p_unseen >= 1.0f || (c->p_unseen > 0.0f && rng_uniform(&s->rng) < c->p_unseen);
        /* a prompt never admitted is never observed: the fallback keeps unseen data flowing */
        r = draw ? SHE_SEL_ADMIT_UNSEEN : starving ? SHE_SEL_ADMIT_FALLBACK : SHE_SEL_SKIP_UNSEEN;
    } else if (e->x >= s->lo && e->x <= s->hi) {
        r = SHE_SEL_ADMIT_IN_BAND;
    } else {
        int hard = e->x < s->lo;
        int widest = hard ? s->lo <= c->lo_min : s->hi >= c->hi_max;
        /* a skipped prompt is never observed again, so its rate would stay frozen while the
         * policy moves: every retry_after skips it is admitted once to measure it anew */
        if (c->retry_after > 0 && e->m >= c->retry_after)
            r = SHE_SEL_ADMIT_RETRY;
        else if (starving && widest)
            r = SHE_SEL_ADMIT_FALLBACK;
        else
            r = hard ? SHE_SEL_SKIP_TOO_HARD : SHE_SEL_SKIP_TOO_EASY;
        s->w_hard += hard;
        s->w_easy += !hard;
    }
    if (e)
        e->m = she_sel_admitted(r) ? 0 : e->m + 1;
    s->w_n++;
    s->w_admit += she_sel_admitted(r);
    if (s->w_n >= c->window)
        adjust_band(sel);
    return r;
}

static she_sel_reason_t decide(she_selector_t *sel, const she_sel_item_t *it) {
    const she_selector_config_t *c = &sel->cfg;
    if (sel->s.stage >= c->n_stages)
        return SHE_SEL_SKIP_CURRICULUM_DONE;
    const she_sel_stage_t *st = &c->stages[sel->s.stage];
    float rate = it->offline_pass;
    if (isnan(rate) && c->stage_recent) {
        const entry_t *e = table_find(&sel->s.prompts, it->id);
        rate = e ? (float)e->x : NAN;
    }
    int unmeasured = isnan(rate) && c->stage_recent; /* measured first, placed afterwards */
    if (!(st->offline_lo <= 0.0f && st->offline_hi >= 1.0f) && !unmeasured &&
        !(rate >= st->offline_lo && rate <= st->offline_hi))
        return SHE_SEL_SKIP_CURRICULUM;
    if (c->rm_select && !(it->rm_score >= c->rm_lo && it->rm_score <= c->rm_hi))
        return SHE_SEL_SKIP_RM_BAND;
    char key[512];
    if (st->balance) {
        cell_key(it, st->balance, key, sizeof(key));
        if (!quota_room(sel, key))
            return SHE_SEL_SKIP_QUOTA;
    }
    const char *type = it->query_type ? it->query_type : "";
    const she_sel_cap_t *cap = cap_of(sel, type);
    if (cap && !cap_room(sel, cap))
        return SHE_SEL_SKIP_QUOTA;
    she_sel_reason_t r = c->difficulty ? difficulty(sel, it->id) : SHE_SEL_ADMIT_NO_DIFFICULTY;
    if (st->balance && she_sel_admitted(r))
        table_get(&sel->s.cells, key)->x += 1.0;
    if (she_sel_admitted(r))
        cap_count(sel, type);
    return r;
}

she_sel_reason_t she_selector_decide(she_selector_t *sel, const she_sel_item_t *item) {
    she_sel_reason_t r = decide(sel, item);
    sel->s.counts.n[r]++;
    return r;
}

void she_selector_get_config(const she_selector_t *sel, she_selector_config_t *out) {
    *out = sel->cfg;
}

she_err_t she_selector_set_caps(she_selector_t *sel, const she_sel_cap_t *caps, int n_caps,
                                char *errstr, size_t errstr_size) {
    she_selector_config_t c = sel->cfg;
    if (n_caps < 0 || n_caps > SHE_SEL_MAX_CAPS)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size, "%d query-type caps (at most %d)",
                        n_caps, SHE_SEL_MAX_CAPS);
    c.n_caps = n_caps;
    if (n_caps > 0)
        memcpy(c.caps, caps, sizeof(*caps) * (size_t)n_caps);
    SHE_TRY(check_config(&c, errstr, errstr_size));
    /* keep the counts of the types that stay capped; drop the others */
    table_t kept = {0};
    for (int i = 0; i < n_caps; i++) {
        const entry_t *e = table_find(&sel->s.capped, caps[i].query_type);
        table_get(&kept, caps[i].query_type)->x = e ? e->x : 0.0;
    }
    table_clear(&sel->s.capped);
    sel->s.capped = kept;
    sel->cfg = c;
    return SHE_OK;
}

void she_selector_observe(she_selector_t *sel, const char *id, int n_pass, int G) {
    SHE_ASSERT(G > 0 && n_pass >= 0 && n_pass <= G);
    entry_t *e = table_find(&sel->s.prompts, id);
    double x = (double)n_pass / G;
    if (!e) {
        e = table_get(&sel->s.prompts, id);
        e->x = x;
    } else {
        e->x += sel->cfg.ema_alpha * (x - e->x);
    }
    e->n++;
}

static void start_stage(she_selector_t *sel, int stage) {
    sel_state_t *s = &sel->s;
    s->stage = stage;
    s->stage_steps = 0;
    s->best = -1.0;
    s->since_best = 0;
    s->n_stage_advance++;
    /* quotas are relative to the stage's own balance dimensions */
    table_clear(&s->cells);
}

int she_selector_end_step(she_selector_t *sel, double batch_pass_rate) {
    sel_state_t *s = &sel->s;
    if (s->stage >= sel->cfg.n_stages)
        return 0;
    const she_sel_stage_t *st = &sel->cfg.stages[s->stage];
    s->pass_ema = s->stage_steps == 0
                      ? batch_pass_rate
                      : s->pass_ema + sel->cfg.pass_ema_alpha * (batch_pass_rate - s->pass_ema);
    s->stage_steps++;
    if (s->pass_ema > s->best + st->plateau_delta || s->best < 0.0) {
        s->best = s->pass_ema;
        s->since_best = 0;
    } else {
        s->since_best++;
    }
    int stop = (st->max_steps > 0 && s->stage_steps >= st->max_steps) ||
               (st->plateau_patience > 0 && s->since_best >= st->plateau_patience);
    if (!stop)
        return 0;
    start_stage(sel, s->stage + 1);
    return 1;
}

void she_selector_status(const she_selector_t *sel, she_selector_status_t *out) {
    const sel_state_t *s = &sel->s;
    memset(out, 0, sizeof(*out));
    out->lo = s->lo;
    out->hi = s->hi;
    out->stage = s->stage;
    out->stage_name = s->stage < sel->cfg.n_stages ? sel->cfg.stages[s->stage].name : "";
    out->stage_steps = s->stage_steps;
    out->pass_ema = s->pass_ema;
    out->n_widen = s->n_widen;
    out->n_restore = s->n_restore;
    out->n_stage_advance = s->n_stage_advance;
    out->n_prompts_seen = (int64_t)s->prompts.count;
    out->counts = s->counts;
}

double she_selector_pass_rate(const she_selector_t *sel, const char *id) {
    const entry_t *e = table_find(&sel->s.prompts, id);
    return e ? e->x : -1.0;
}

/* ---- JSON state ---- */

#define STATE_FORMAT "she-selector"
#define STATE_VERSION 1

static json_t *table_json(const table_t *t) {
    json_t *o = json_object();
    for (size_t i = 0; o && i < t->cap; i++) {
        const entry_t *e = &t->e[i];
        if (!e->key)
            continue;
        json_t *v = json_pack("[f, I, I]", e->x, (json_int_t)e->n, (json_int_t)e->m);
        if (!v || json_object_set_new(o, e->key, v) < 0) {
            json_decref(o);
            return NULL;
        }
    }
    return o;
}

json_t *she_selector_state_json(const she_selector_t *sel) {
    const sel_state_t *s = &sel->s;
    char rng[17];
    snprintf(rng, sizeof(rng), "%016" PRIx64, s->rng);
    json_t *counts = json_object();
    for (int r = 0; counts && r < SHE_SEL_REASON__COUNT; r++)
        if (json_object_set_new(counts, reason_names[r], json_integer(s->counts.n[r])) < 0) {
            json_decref(counts);
            counts = NULL;
        }
    json_t *prompts = table_json(&s->prompts), *cells = table_json(&s->cells);
    json_t *capped = table_json(&s->capped);
    if (!counts || !prompts || !cells || !capped) {
        json_decref(counts);
        json_decref(prompts);
        json_decref(cells);
        json_decref(capped);
        return NULL;
    }
    return json_pack("{s:s, s:i, s:f, s:f, s:[I, I, I, I], s:s, s:i, s:I, s:f, s:f, s:I, s:I, "
                     "s:I, s:I, s:I, s:o, s:o, s:o, s:f, s:o}",
                     "format", STATE_FORMAT, "version", STATE_VERSION, "lo", s->lo, "hi", s->hi,
                     "window", (json_int_t)s->w_n, (json_int_t)s->w_admit,
                     (json_int_t)s->w_hard, (json_int_t)s->w_easy, "rng", rng, "stage", s->stage,
                     "stage_steps", (json_int_t)s->stage_steps, "pass_ema", s->pass_ema, "best",
                     s->best, "since_best", (json_int_t)s->since_best, "n_widen",
                     (json_int_t)s->n_widen, "n_restore", (json_int_t)s->n_restore,
                     "n_stage_advance", (json_int_t)s->n_stage_advance, "quota_tick",
                     (json_int_t)s->quota_tick, "counts", counts,
                     "prompts", prompts, "cells", cells, "cap_total", s->cap_total, "capped",
                     capped);
}

/* A JSON number (integer or real) as a double; 0 and *ok = 0 when it is neither. */
static double num(const json_t *v, int *ok) {
    if (!json_is_number(v)) {
        *ok = 0;
        return 0.0;
    }
    return json_number_value(v);
}

static int64_t integer(const json_t *v, int *ok) {
    if (!json_is_integer(v)) {
        *ok = 0;
        return 0;
    }
    return json_integer_value(v);
}

static int load_table(table_t *t, const json_t *o) {
    if (!json_is_object(o))
        return 0;
    const char *key;
    json_t *v;
    int ok = 1;
    json_object_foreach((json_t *)o, key, v) {
        if (!json_is_array(v) || json_array_size(v) != 3)
            return 0;
        entry_t *e = table_get(t, key);
        e->x = num(json_array_get(v, 0), &ok);
        e->n = integer(json_array_get(v, 1), &ok);
        e->m = integer(json_array_get(v, 2), &ok);
    }
    return ok;
}

she_err_t she_selector_load_state(she_selector_t *sel, const json_t *state, char *errstr,
                                  size_t errstr_size) {
    const json_t *j = state;
    int ok = json_is_object(j) &&
             json_is_string(json_object_get(j, "format")) &&
             strcmp(json_string_value(json_object_get(j, "format")), STATE_FORMAT) == 0;
    if (!ok)
        return she_errf(SHE_ERR_FORMAT, errstr, errstr_size, "not a %s state", STATE_FORMAT);
    if (integer(json_object_get(j, "version"), &ok) != STATE_VERSION || !ok)
        return she_errf(SHE_ERR_FORMAT, errstr, errstr_size, "selector state version is not %d",
                        STATE_VERSION);
    sel_state_t s;
    state_init(&s, &sel->cfg);
    s.lo = num(json_object_get(j, "lo"), &ok);
    s.hi = num(json_object_get(j, "hi"), &ok);
    const json_t *w = json_object_get(j, "window");
    ok = ok && json_is_array(w) && json_array_size(w) == 4;
    if (ok) {
        s.w_n = integer(json_array_get(w, 0), &ok);
        s.w_admit = integer(json_array_get(w, 1), &ok);
        s.w_hard = integer(json_array_get(w, 2), &ok);
        s.w_easy = integer(json_array_get(w, 3), &ok);
    }
    const char *rng = json_string_value(json_object_get(j, "rng"));
    char *end = NULL;
    if (rng)
        s.rng = strtoull(rng, &end, 16);
    ok = ok && rng && *rng && end && *end == '\0';
    s.stage = (int)integer(json_object_get(j, "stage"), &ok);
    s.stage_steps = integer(json_object_get(j, "stage_steps"), &ok);
    s.pass_ema = num(json_object_get(j, "pass_ema"), &ok);
    s.best = num(json_object_get(j, "best"), &ok);
    s.since_best = integer(json_object_get(j, "since_best"), &ok);
    s.n_widen = integer(json_object_get(j, "n_widen"), &ok);
    s.n_restore = integer(json_object_get(j, "n_restore"), &ok);
    s.n_stage_advance = integer(json_object_get(j, "n_stage_advance"), &ok);
    s.quota_tick = integer(json_object_get(j, "quota_tick"), &ok);
    const json_t *counts = json_object_get(j, "counts");
    ok = ok && json_is_object(counts);
    for (int r = 0; ok && r < SHE_SEL_REASON__COUNT; r++)
        s.counts.n[r] = integer(json_object_get(counts, reason_names[r]), &ok);
    ok = ok && s.stage >= 0 && s.stage <= sel->cfg.n_stages && s.w_n >= 0 &&
         s.w_n < sel->cfg.window && s.lo <= s.hi;
    ok = ok && load_table(&s.prompts, json_object_get(j, "prompts")) &&
         load_table(&s.cells, json_object_get(j, "cells"));
    /* the caps' counts: absent from states written before there were caps */
    if (ok && json_object_get(j, "capped")) {
        s.cap_total = num(json_object_get(j, "cap_total"), &ok);
        ok = ok && load_table(&s.capped, json_object_get(j, "capped"));
    }
    if (!ok) {
        state_clear(&s);
        return she_errf(SHE_ERR_FORMAT, errstr, errstr_size,
                        "malformed selector state (missing or mistyped field, or a stage / "
                        "window that does not fit this config)");
    }
    state_clear(&sel->s);
    sel->s = s;
    return SHE_OK;
}
