/* learner.c -- advantages, forward at the behaviour tokens, clipped loss with KL, backward,
 * AdamW (see learner.h). */
#include "learner.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "rollout.h"

#define J SHE_RL_N_STEPS

/* One version's gap while a step runs: sums, so that ranks' tables can be added up. */
typedef struct gap_acc {
    int64_t version, n_groups, tokens;
    double sum, max;
} gap_acc_t;

#define GAP_CAP SHE_LEARNER_GAP_VERSIONS

struct she_learner {
    she_model_t *policy, *ref;   /* host copies */
    she_adamw_t *opt;
    she_engine_t *pe, *re;       /* where they run: the policy with opt, the reference (or NULL) */
    she_learner_config_t cfg;
    she_dist_t *dist;       /* NULL: one process */
    int world;              /* ranks (1 without dist) */
    int64_t *part_rows;     /* (mini_batches) rows with tokens per part, over all ranks */
    int64_t *gathered;      /* (world, max(2, mini_batches)) every rank's counts */
    double *packed;         /* (world, PACK) every rank's step statistics */
    /* the gap per behaviour-policy version, newest first, and the older ones pooled */
    gap_acc_t gap[GAP_CAP], gap_older;
    int n_gap;
    uint8_t *row_gap;       /* (B) index into gap[] of each row's version; n_gap: pooled */
    /* per response row, [B, Tr] with Tr the longest response (grown with the batch) */
    size_t cap_bt;
    int cap_b;
    float *old_logp, *logp, *ref_logp, *entropy, *adv, *dlogp, *rewards;
    uint8_t *mask, *step, *pass;
    const she_rollout_group_t **row_group; /* (B) */
    const she_response_t **row_resp;       /* (B) */
    /* one micro-batch laid out for the engine, [micro_batch, max_seq] */
    int32_t *tokens, *targets;
    uint8_t *fmask;
    float *flogp, *fent, *fdlogp;
};

she_learner_config_t she_learner_defaults(void) {
    she_learner_config_t c = {.adv = she_adv_defaults(),
                              .loss = she_rl_loss_defaults(),
                              .adamw = she_adamw_defaults(),
                              .temperature = 0.99f,
                              .max_grad_norm = 1.0f,
                              .micro_batch = 16,
                              .mini_batches = 1,
                              .epochs = 1};
    return c;
}

she_err_t she_learner_new(she_model_t *policy, she_adamw_t *opt, she_model_t *ref,
                          const she_learner_config_t *cfg, she_learner_t **out, char *errstr,
                          size_t errstr_size) {
    *out = NULL;
    if (cfg->micro_batch < 1 || cfg->micro_batch > policy->max_batch || cfg->mini_batches < 1 ||
        cfg->epochs < 1 || !(cfg->temperature > 0) || cfg->loss.clip_eps < 0 ||
        cfg->loss.kl_beta < 0)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                        "learner: bad configuration (micro-batch %d for a model of %d rows, "
                        "%d mini-batches, %d epochs, temperature %g)",
                        cfg->micro_batch, policy->max_batch, cfg->mini_batches, cfg->epochs,
                        (double)cfg->temperature);
    if (cfg->loss.kl_beta > 0 && !ref)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                        "learner: a KL penalty needs a reference policy");
    if (ref && (ref->max_batch < cfg->micro_batch || ref->n_params != policy->n_params))
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                        "learner: the reference policy differs in shape or reserved rows");
    if (opt->n != policy->n_params)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                        "learner: optimizer of %zu parameters for a model of %zu", opt->n,
                        policy->n_params);
    she_learner_t *ln = calloc(1, sizeof(*ln));
    SHE_CHECK_ALLOC(ln);
    ln->policy = policy;
    ln->ref = ref;
    ln->opt = opt;
    ln->cfg = *cfg;
    she_device_t cpu = {SHE_DEVICE_CPU, 0, SHE_MATH_FP32};
    she_err_t err = she_engine_new(policy, opt, &cpu, &ln->pe, errstr, errstr_size);
    if (err == SHE_OK && ref)
        err = she_engine_new(ref, NULL, &cpu, &ln->re, errstr, errstr_size);
    if (err != SHE_OK) {
        she_learner_free(ln);
        return err;
    }
    ln->world = 1;
    ln->part_rows = malloc(sizeof(int64_t) * (size_t)cfg->mini_batches);
    SHE_CHECK_ALLOC(ln->part_rows);
    size_t n = (size_t)cfg->micro_batch * policy->max_seq;
    ln->tokens = malloc(sizeof(int32_t) * n);
    ln->targets = malloc(sizeof(int32_t) * n);
    ln->fmask = malloc(n);
    ln->flogp = malloc(sizeof(float) * n);
    ln->fent = malloc(sizeof(float) * n);
    ln->fdlogp = malloc(sizeof(float) * n);
    SHE_CHECK_ALLOC(ln->tokens);
    SHE_CHECK_ALLOC(ln->targets);
    SHE_CHECK_ALLOC(ln->fmask);
    SHE_CHECK_ALLOC(ln->flogp);
    SHE_CHECK_ALLOC(ln->fent);
    SHE_CHECK_ALLOC(ln->fdlogp);
    *out = ln;
    return SHE_OK;
}

void she_learner_free(she_learner_t *ln) {
    if (!ln)
        return;
    she_engine_free(ln->pe);
    she_engine_free(ln->re);
    free(ln->old_logp);
    free(ln->logp);
    free(ln->ref_logp);
    free(ln->entropy);
    free(ln->adv);
    free(ln->dlogp);
    free(ln->rewards);
    free(ln->mask);
    free(ln->step);
    free(ln->pass);
    free(ln->row_group);
    free(ln->row_resp);
    free(ln->row_gap);
    free(ln->part_rows);
    free(ln->gathered);
    free(ln->packed);
    free(ln->tokens);
    free(ln->targets);
    free(ln->fmask);
    free(ln->flogp);
    free(ln->fent);
    free(ln->fdlogp);
    free(ln);
}

static void *grow(void *p, size_t bytes) {
    p = realloc(p, bytes ? bytes : 1);
    SHE_CHECK_ALLOC(p);
    return p;
}

static void reserve(she_learner_t *ln, int B, int Tr) {
    size_t bt = (size_t)B * Tr;
    if (bt > ln->cap_bt) {
        ln->old_logp = grow(ln->old_logp, sizeof(float) * bt);
        ln->logp = grow(ln->logp, sizeof(float) * bt);
        ln->ref_logp = grow(ln->ref_logp, sizeof(float) * bt);
        ln->entropy = grow(ln->entropy, sizeof(float) * bt);
        ln->adv = grow(ln->adv, sizeof(float) * bt);
        ln->dlogp = grow(ln->dlogp, sizeof(float) * bt);
        ln->mask = grow(ln->mask, bt);
        ln->step = grow(ln->step, bt);
        ln->cap_bt = bt;
    }
    if (B > ln->cap_b) {
        ln->rewards = grow(ln->rewards, sizeof(float) * J * B);
        ln->pass = grow(ln->pass, (size_t)B);
        ln->row_group = grow(ln->row_group, sizeof(*ln->row_group) * B);
        ln->row_resp = grow(ln->row_resp, sizeof(*ln->row_resp) * B);
        ln->row_gap = grow(ln->row_gap, (size_t)B);
        ln->cap_b = B;
    }
}

/* Lays rows [r0, r1) out as prompt + response, right padded, with targets at the response
 * positions; returns T. */
static int layout(she_learner_t *ln, int r0, int r1) {
    int T = 0;
    for (int r = r0; r < r1; r++) {
        int len = ln->row_group[r]->n_prompt_tokens + ln->row_resp[r]->n_tokens;
        T = len > T ? len : T;
    }
    for (int r = r0; r < r1; r++) {
        const she_rollout_group_t *g = ln->row_group[r];
        const she_response_t *resp = ln->row_resp[r];
        int P = g->n_prompt_tokens, R = resp->n_tokens;
        size_t o = (size_t)(r - r0) * T;
        for (int t = 0; t < T; t++) {
            ln->tokens[o + t] = t < P ? g->prompt_tokens[t] : t < P + R ? resp->tokens[t - P] : 0;
            ln->fmask[o + t] = t < P + R;
            ln->targets[o + t] = t >= P - 1 && t < P + R - 1 ? resp->tokens[t + 1 - P] : -1;
        }
    }
    return T;
}

/* Forward of engine e over rows [r0, r1) into [B, Tr] arrays logp (and entropy when
 * non-NULL). */
static she_err_t forward_rows(she_learner_t *ln, she_engine_t *e, int r0, int r1, int Tr,
                              float *logp, float *entropy, char *errstr, size_t errstr_size) {
    int T = layout(ln, r0, r1);
    SHE_TRY(she_engine_forward(e, ln->tokens, ln->fmask, ln->targets, r1 - r0, T,
                               ln->cfg.temperature, ln->flogp, entropy ? ln->fent : NULL, errstr,
                               errstr_size));
    for (int r = r0; r < r1; r++) {
        int P = ln->row_group[r]->n_prompt_tokens, R = ln->row_resp[r]->n_tokens;
        size_t o = (size_t)(r - r0) * T;
        for (int t = 0; t < Tr; t++) {
            size_t at = (size_t)r * Tr + t;
            logp[at] = t < R ? ln->flogp[o + P - 1 + t] : 0.0f;
            if (entropy)
                entropy[at] = t < R ? ln->fent[o + P - 1 + t] : 0.0f;
        }
    }
    return SHE_OK;
}

/* Adds one loss call's statistics (weights: responses for losses, tokens for token means). */
static void add_loss_stats(she_rl_loss_stats_t *acc, const she_rl_loss_stats_t *s) {
    if (s->n_tokens == 0)
        return;
    double nr = s->n_responses, nt = (double)s->n_tokens;
    acc->loss += s->loss * nr;
    acc->pg_loss += s->pg_loss * nr;
    acc->kl_loss += s->kl_loss * nr;
    acc->kl_mean += s->kl_mean * nt;
    acc->clip_frac += s->clip_frac * nt;
    acc->clip_frac_low += s->clip_frac_low * nt;
    acc->clip_frac_high += s->clip_frac_high * nt;
    acc->ratio_mean += s->ratio_mean * nt;
    acc->adv_mean += s->adv_mean * nt;
    acc->entropy_mean += s->entropy_mean * nt;
    if (acc->n_tokens == 0 || s->ratio_min < acc->ratio_min)
        acc->ratio_min = s->ratio_min;
    if (acc->n_tokens == 0 || s->ratio_max > acc->ratio_max)
        acc->ratio_max = s->ratio_max;
    acc->n_tokens += s->n_tokens;
    acc->n_responses += s->n_responses;
}

static void finish_loss_stats(she_rl_loss_stats_t *acc) {
    double nr = acc->n_responses, nt = (double)acc->n_tokens;
    if (acc->n_tokens == 0)
        return;
    acc->loss /= nr;
    acc->pg_loss /= nr;
    acc->kl_loss /= nr;
    acc->kl_mean /= nt;
    acc->clip_frac /= nt;
    acc->clip_frac_low /= nt;
    acc->clip_frac_high /= nt;
    acc->ratio_mean /= nt;
    acc->adv_mean /= nt;
    acc->entropy_mean /= nt;
}

static int rows_with_tokens(const she_learner_t *ln, int r0, int r1) {
    int n = 0;
    for (int r = r0; r < r1; r++)
        n += ln->row_resp[r]->n_tokens > 0;
    return n;
}

/* ---- the gap per behaviour-policy version ---- */

static void gap_merge(gap_acc_t *dst, const gap_acc_t *a) {
    dst->n_groups += a->n_groups;
    dst->tokens += a->tokens;
    dst->sum += a->sum;
    dst->max = a->max > dst->max ? a->max : dst->max;
}

static void gap_pool(gap_acc_t *older, const gap_acc_t *a) {
    if (older->n_groups == 0 || a->version > older->version)
        older->version = a->version;
    gap_merge(older, a);
}

/* Adds a into tab[0, *n) (newest version first, at most GAP_CAP entries): into its version's
 * entry, else a new one.  A version older than every entry of a full table, or the oldest
 * entry when a newer version pushes it out, goes to the pool of older versions. */
static void gap_add(gap_acc_t *tab, int *n, gap_acc_t *older, const gap_acc_t *a) {
    int k = 0;
    while (k < *n && tab[k].version > a->version)
        k++;
    if (k < *n && tab[k].version == a->version) {
        gap_merge(&tab[k], a);
        return;
    }
    if (k == GAP_CAP) {
        gap_pool(older, a);
        return;
    }
    if (*n == GAP_CAP)
        gap_pool(older, &tab[--*n]);
    memmove(tab + k + 1, tab + k, sizeof(*tab) * (size_t)(*n - k));
    tab[k] = *a;
    (*n)++;
}

/* The table of the groups' versions (nothing measured yet) and each row's entry in it. */
static void gap_table(she_learner_t *ln, const she_rewarded_group_t *groups, int n, int G) {
    memset(&ln->gap_older, 0, sizeof(ln->gap_older));
    ln->n_gap = 0;
    for (int i = 0; i < n; i++) {
        gap_acc_t a = {.version = groups[i].rollout.policy_version, .n_groups = 1};
        gap_add(ln->gap, &ln->n_gap, &ln->gap_older, &a);
    }
    for (int i = 0; i < n; i++) {
        int k = 0;
        while (k < ln->n_gap && ln->gap[k].version != groups[i].rollout.policy_version)
            k++;
        memset(ln->row_gap + (size_t)i * G, k, (size_t)G); /* k == n_gap: pooled */
    }
}

static void gap_out(const gap_acc_t *a, she_learner_gap_t *out) {
    *out = (she_learner_gap_t){.version = a->version, .n_groups = (int)a->n_groups,
                               .tokens = (long)a->tokens,
                               .mean = a->tokens ? a->sum / (double)a->tokens : 0.0,
                               .max = a->max};
}

/* ---- combining the ranks' statistics ---- */

/* A rank's step statistics as sums (and minima, maxima), one double each: every rank gathers
 * all ranks' and adds them up in rank order, so all hold the same combined statistics. */
enum {
    PK_GROUPS, PK_ROWS, PK_TOKENS,
    PK_REWARD,                  /* J step-reward sums */
    PK_TOTAL = PK_REWARD + J, PK_PASS, PK_ALL_PASS, PK_ALL_FAIL,
    PK_ADV_N, PK_ADV_SUM, PK_ADV_SUM2, PK_ADV_MIN, PK_ADV_MAX, PK_ADV_CLIPPED, PK_ADV_DEGENERATE,
    PK_LOSS,                    /* the 10 weighted sums add_loss_stats keeps, in its order */
    PK_RATIO_MIN = PK_LOSS + 10, PK_RATIO_MAX, PK_LOSS_TOKENS, PK_LOSS_RESPONSES,
    PK_GAP_SUM, PK_GAP_MAX, PK_GAP_TOKENS,
    PK_N_GAP,
    PK_GAP_TAB,                 /* GAP_CAP entries, then the pool: version groups tokens sum max */
    PACK = PK_GAP_TAB + (GAP_CAP + 1) * 5
};

static double *loss_sums(she_rl_loss_stats_t *l, int i) {
    double *v[10] = {&l->loss, &l->pg_loss, &l->kl_loss, &l->kl_mean, &l->clip_frac,
                     &l->clip_frac_low, &l->clip_frac_high, &l->ratio_mean, &l->adv_mean,
                     &l->entropy_mean};
    return v[i];
}

static void pack_gap(double *p, const gap_acc_t *a) {
    p[0] = (double)a->version, p[1] = (double)a->n_groups, p[2] = (double)a->tokens;
    p[3] = a->sum, p[4] = a->max;
}

static gap_acc_t unpack_gap(const double *p) {
    return (gap_acc_t){(int64_t)p[0], (int64_t)p[1], (int64_t)p[2], p[3], p[4]};
}

/* st holds this rank's statistics with the loss sums not yet divided (add_loss_stats) and
 * *gap_sum the gap's sum; both become the combined batch's. */
static she_err_t combine_ranks(she_learner_t *ln, she_learner_stats_t *st, double *gap_sum,
                               char *errstr, size_t errstr_size) {
    double mine[PACK] = {0};
    mine[PK_GROUPS] = st->n_groups, mine[PK_ROWS] = st->n_rows, mine[PK_TOKENS] = st->n_tokens;
    if (st->n_rows > 0) {
        for (int j = 0; j < J; j++)
            mine[PK_REWARD + j] = st->reward.step_mean[j] * st->n_rows;
        mine[PK_TOTAL] = st->reward.total_mean * st->n_rows;
        mine[PK_PASS] = st->reward.pass_rate * st->n_rows;
        mine[PK_ALL_PASS] = st->reward.n_all_pass, mine[PK_ALL_FAIL] = st->reward.n_all_fail;
    }
    const she_adv_stats_t *a = &st->adv;
    mine[PK_ADV_N] = (double)a->n_tokens, mine[PK_ADV_SUM] = a->mean * (double)a->n_tokens;
    mine[PK_ADV_SUM2] = (a->std * a->std + a->mean * a->mean) * (double)a->n_tokens;
    mine[PK_ADV_MIN] = a->min, mine[PK_ADV_MAX] = a->max;
    mine[PK_ADV_CLIPPED] = (double)a->n_clipped, mine[PK_ADV_DEGENERATE] = a->n_degenerate;
    for (int i = 0; i < 10; i++)
        mine[PK_LOSS + i] = *loss_sums(&st->loss, i);
    mine[PK_RATIO_MIN] = st->loss.ratio_min, mine[PK_RATIO_MAX] = st->loss.ratio_max;
    mine[PK_LOSS_TOKENS] = (double)st->loss.n_tokens;
    mine[PK_LOSS_RESPONSES] = st->loss.n_responses;
    mine[PK_GAP_SUM] = *gap_sum, mine[PK_GAP_MAX] = st->logp_gap_max;
    mine[PK_GAP_TOKENS] = (double)st->gap_tokens;
    mine[PK_N_GAP] = ln->n_gap;
    for (int k = 0; k < ln->n_gap; k++)
        pack_gap(mine + PK_GAP_TAB + 5 * k, &ln->gap[k]);
    pack_gap(mine + PK_GAP_TAB + 5 * GAP_CAP, &ln->gap_older);
    SHE_TRY(she_dist_allgather(ln->dist, mine, sizeof(mine), ln->packed, errstr, errstr_size));

    /* grad norms and the update count are the same on every rank already */
    she_learner_stats_t c = {.grad_norm = st->grad_norm, .grad_norm_max = st->grad_norm_max,
                             .n_updates = st->n_updates};
    double sum[PACK] = {0};
    ln->n_gap = 0;
    memset(&ln->gap_older, 0, sizeof(ln->gap_older));
    for (int r = 0; r < ln->world; r++) {
        const double *p = ln->packed + (size_t)r * PACK;
        for (int i = 0; i < PACK; i++)
            sum[i] += p[i];
        if (p[PK_ADV_N] > 0) {
            int first = c.adv.n_tokens == 0;
            c.adv.min = first || p[PK_ADV_MIN] < c.adv.min ? p[PK_ADV_MIN] : c.adv.min;
            c.adv.max = first || p[PK_ADV_MAX] > c.adv.max ? p[PK_ADV_MAX] : c.adv.max;
            c.adv.n_tokens += (long)p[PK_ADV_N];
        }
        if (p[PK_LOSS_TOKENS] > 0) {
            int first = c.loss.n_tokens == 0;
            c.loss.ratio_min = first || p[PK_RATIO_MIN] < c.loss.ratio_min ? p[PK_RATIO_MIN]
                                                                           : c.loss.ratio_min;
            c.loss.ratio_max = first || p[PK_RATIO_MAX] > c.loss.ratio_max ? p[PK_RATIO_MAX]
                                                                           : c.loss.ratio_max;
            c.loss.n_tokens += (long)p[PK_LOSS_TOKENS];
        }
        c.logp_gap_max = p[PK_GAP_MAX] > c.logp_gap_max ? p[PK_GAP_MAX] : c.logp_gap_max;
        for (int k = 0; k < (int)p[PK_N_GAP]; k++) {
            gap_acc_t e = unpack_gap(p + PK_GAP_TAB + 5 * k);
            gap_add(ln->gap, &ln->n_gap, &ln->gap_older, &e);
        }
        gap_acc_t pooled = unpack_gap(p + PK_GAP_TAB + 5 * GAP_CAP);
        if (pooled.n_groups > 0)
            gap_pool(&ln->gap_older, &pooled);
    }
    c.n_groups = (int)sum[PK_GROUPS], c.n_rows = (int)sum[PK_ROWS];
    c.n_tokens = (long)sum[PK_TOKENS];
    if (c.n_rows > 0) {
        for (int j = 0; j < J; j++)
            c.reward.step_mean[j] = sum[PK_REWARD + j] / c.n_rows;
        c.reward.total_mean = sum[PK_TOTAL] / c.n_rows;
        c.reward.pass_rate = sum[PK_PASS] / c.n_rows;
    }
    c.reward.n_all_pass = (int)sum[PK_ALL_PASS], c.reward.n_all_fail = (int)sum[PK_ALL_FAIL];
    if (c.adv.n_tokens > 0) {
        c.adv.mean = sum[PK_ADV_SUM] / (double)c.adv.n_tokens;
        double var = sum[PK_ADV_SUM2] / (double)c.adv.n_tokens - c.adv.mean * c.adv.mean;
        c.adv.std = var > 0 ? sqrt(var) : 0.0;
    }
    c.adv.n_clipped = (long)sum[PK_ADV_CLIPPED], c.adv.n_degenerate = (int)sum[PK_ADV_DEGENERATE];
    for (int i = 0; i < 10; i++)
        *loss_sums(&c.loss, i) = sum[PK_LOSS + i];
    c.loss.n_responses = (int)sum[PK_LOSS_RESPONSES];
    c.gap_tokens = (long)sum[PK_GAP_TOKENS];
    *gap_sum = sum[PK_GAP_SUM];
    *st = c;
    return SHE_OK;
}

she_err_t she_learner_set_dist(she_learner_t *ln, she_dist_t *d, char *errstr,
                               size_t errstr_size) {
    int W = she_dist_world(d);
    if (W > 1 && ln->cfg.adv.norm == SHE_ADV_NORM_BATCH)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                        "learner: batch normalisation of advantages needs the whole batch on one "
                        "rank, not %d (normalise per group, or not at all)",
                        W);
    ln->dist = d;
    ln->world = W;
    size_t per_rank = ln->cfg.mini_batches > 2 ? (size_t)ln->cfg.mini_batches : 2;
    ln->gathered = grow(ln->gathered, sizeof(int64_t) * (size_t)W * per_rank);
    ln->packed = grow(ln->packed, sizeof(double) * (size_t)W * PACK);
    return SHE_OK;
}

she_err_t she_learner_check_group(const she_learner_t *ln, const she_rewarded_group_t *g,
                                  char *errstr, size_t errstr_size) {
    const she_rollout_group_t *ro = &g->rollout;
    if (ro->n_responses < 1 || g->n_rewards != ro->n_responses || !g->rewards)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                        "%d responses and %d rewards: not one reward per response",
                        ro->n_responses, g->n_rewards);
    if (ro->n_prompt_tokens < 1)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size, "no prompt tokens");
    const int V = ln->policy->cfg.vocab_size;
    int max_seq = ln->policy->max_seq;
    if (ln->ref && ln->ref->max_seq < max_seq)
        max_seq = ln->ref->max_seq;
    for (int t = 0; t < ro->n_prompt_tokens; t++)
        if (ro->prompt_tokens[t] < 0 || ro->prompt_tokens[t] >= V)
            return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                            "prompt token %d outside the policy's vocabulary of %d",
                            (int)ro->prompt_tokens[t], V);
    for (int k = 0; k < ro->n_responses; k++) {
        const she_response_t *resp = &ro->responses[k];
        if (ro->n_prompt_tokens + resp->n_tokens > max_seq)
            return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                            "a prompt + response of %d tokens exceeds the %d reserved",
                            ro->n_prompt_tokens + resp->n_tokens, max_seq);
        for (int t = 0; t < resp->n_tokens; t++)
            if (resp->tokens[t] < 0 || resp->tokens[t] >= V)
                return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                                "response %d: token %d outside the policy's vocabulary of %d", k,
                                (int)resp->tokens[t], V);
    }
    return SHE_OK;
}

/* Checks the groups; data parallel, every rank learns whether any refused its groups and how
 * many groups there are in all (*n_all). */
static she_err_t check_groups(she_learner_t *ln, const she_rewarded_group_t *groups, int n,
                              int *n_all, char *errstr, size_t errstr_size) {
    she_err_t bad = SHE_OK;
    char why[SHE_ERRSTR_SIZE];
    for (int i = 0; i < n && bad == SHE_OK; i++) {
        int G = groups[0].rollout.n_responses;
        if (she_learner_check_group(ln, &groups[i], why, sizeof(why)) != SHE_OK)
            bad = she_errf(SHE_ERR_INVALID, errstr, errstr_size, "learner: group %d: %s", i, why);
        else if (groups[i].rollout.n_responses != G)
            bad = she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                           "learner: group %d has %d responses, group 0 %d", i,
                           groups[i].rollout.n_responses, G);
    }
    *n_all = n;
    if (ln->dist) {
        int64_t mine[2] = {n, bad != SHE_OK}, *g = ln->gathered;
        SHE_TRY(she_dist_allgather_i64(ln->dist, mine, 2, g, errstr, errstr_size));
        char refused[128] = "";
        int n_refused = 0;
        *n_all = 0;
        for (int r = 0, len = 0; r < ln->world; r++) {
            *n_all += (int)g[2 * r];
            if (g[2 * r + 1] && len < 100) {
                n_refused++;
                len += snprintf(refused + len, sizeof(refused) - (size_t)len, " %d", r);
            }
        }
        if (bad != SHE_OK)
            return bad;
        if (n_refused > 0)
            return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                            "learner: rank(s)%s refused their groups: nothing trained", refused);
    }
    if (bad != SHE_OK)
        return bad;
    if (*n_all < 1)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size, "learner: no groups");
    return SHE_OK;
}

/* Rows with tokens of each part on every rank: counts[k] = the sum over ranks for part k. */
static she_err_t part_counts(she_learner_t *ln, int n, int G, int parts, int64_t *counts,
                             char *errstr, size_t errstr_size) {
    for (int k = 0; k < parts; k++) {
        int p0 = (int)((long)n * k / parts) * G, p1 = (int)((long)n * (k + 1) / parts) * G;
        counts[k] = rows_with_tokens(ln, p0, p1);
    }
    if (!ln->dist)
        return SHE_OK;
    SHE_TRY(she_dist_allgather_i64(ln->dist, counts, (size_t)parts, ln->gathered, errstr,
                                   errstr_size));
    for (int k = 0; k < parts; k++) {
        counts[k] = 0;
        for (int r = 0; r < ln->world; r++)
            counts[k] += ln->gathered[(size_t)r * parts + k];
    }
    return SHE_OK;
}

/* The ranks' gradients summed (dist.h: the losses are normalised by the global counts): on
 * the device with NCCL when the engine's gradients live there, else on the host. */
static she_err_t sum_grads(she_learner_t *ln, char *errstr, size_t errstr_size) {
    size_t n;
    int on_device;
    float *g = she_engine_grads(ln->pe, &n, &on_device);
    if (on_device)
        return she_dist_allreduce_device(ln->dist, g, n, SHE_DIST_SUM, she_engine_stream(ln->pe),
                                         errstr, errstr_size);
    return she_dist_allreduce(ln->dist, g, n, SHE_DIST_SUM, errstr, errstr_size);
}

she_err_t she_learner_set_device(she_learner_t *ln, const she_device_t *dev, char *errstr,
                                 size_t errstr_size) {
    she_engine_t *pe = NULL, *re = NULL;
    she_err_t err = she_engine_new(ln->policy, ln->opt, dev, &pe, errstr, errstr_size);
    if (err == SHE_OK && ln->ref)
        err = she_engine_new(ln->ref, NULL, dev, &re, errstr, errstr_size);
    if (err != SHE_OK) {
        she_engine_free(pe);
        return err;
    }
    she_engine_free(ln->pe);
    she_engine_free(ln->re);
    ln->pe = pe;
    ln->re = re;
    return SHE_OK;
}

she_err_t she_learner_sync_host(she_learner_t *ln, char *errstr, size_t errstr_size) {
    return she_engine_download(ln->pe, errstr, errstr_size);
}

she_err_t she_learner_step(she_learner_t *ln, const she_rewarded_group_t *groups, int n, float lr,
                           she_learner_stats_t *st, char *errstr, size_t errstr_size) {
    she_learner_stats_t local;
    if (!st)
        st = &local;
    memset(st, 0, sizeof(*st));
    int n_all = 0;
    SHE_TRY(check_groups(ln, groups, n, &n_all, errstr, errstr_size));
    const int G = n > 0 ? groups[0].rollout.n_responses : 0;
    int Tr = 1;
    for (int i = 0; i < n; i++)
        for (int k = 0; k < G; k++)
            Tr = groups[i].rollout.responses[k].n_tokens > Tr
                     ? groups[i].rollout.responses[k].n_tokens : Tr;
    const int B = n * G;
    reserve(ln, B, Tr);
    for (int i = 0, r = 0; i < n; i++)
        for (int k = 0; k < G; k++, r++) {
            const she_response_t *resp = &groups[i].rollout.responses[k];
            ln->row_group[r] = &groups[i].rollout;
            ln->row_resp[r] = resp;
            memcpy(ln->rewards + (size_t)r * J, groups[i].rewards[k].step_rewards,
                   sizeof(float) * J);
            uint8_t *step = ln->step + (size_t)r * Tr;
            she_response_token_steps(resp, step);
            for (int t = 0; t < Tr; t++) {
                size_t at = (size_t)r * Tr + t;
                int in = t < resp->n_tokens;
                ln->mask[at] = (uint8_t)in;
                ln->old_logp[at] = in ? resp->logprobs[t] : 0.0f;
                if (!in)
                    step[t] = 1;
            }
            st->n_tokens += resp->n_tokens;
        }
    st->n_groups = n;
    st->n_rows = B;
    for (int i = 0, r = 0; i < n; i++)
        for (int k = 0; k < G; k++, r++)
            ln->pass[r] = (uint8_t)(groups[i].rewards[k].pass != 0);
    if (B > 0) {
        she_rl_reward_stats(ln->rewards, ln->pass, B, G, &st->reward);
        she_rl_advantages(&ln->cfg.adv, ln->rewards, B, G, ln->step, ln->mask, Tr, NULL, ln->adv,
                          &st->adv);
    }
    gap_table(ln, groups, n, G);

    const int MB = ln->cfg.micro_batch;
    int use_ref = ln->ref && ln->cfg.loss.kl_beta > 0;
    if (use_ref)
        for (int r0 = 0; r0 < B; r0 += MB) {
            int r1 = r0 + MB < B ? r0 + MB : B;
            SHE_TRY(forward_rows(ln, ln->re, r0, r1, Tr, ln->ref_logp, NULL, errstr,
                                 errstr_size));
        }

    double gap_sum = 0;
    /* the parts are counted over every rank's groups, so all ranks step together */
    int parts = ln->cfg.mini_batches < n_all ? ln->cfg.mini_batches : n_all;
    int64_t *n_resp_parts = ln->part_rows;
    SHE_TRY(part_counts(ln, n, G, parts, n_resp_parts, errstr, errstr_size));
    for (int e = 0; e < ln->cfg.epochs; e++)
        for (int k = 0; k < parts; k++) {
            /* part k: groups [n*k/parts, n*(k+1)/parts) */
            int p0 = (int)((long)n * k / parts) * G, p1 = (int)((long)n * (k + 1) / parts) * G;
            int64_t n_resp = n_resp_parts[k];
            if (n_resp == 0)
                continue;
            SHE_TRY(she_engine_zero_grad(ln->pe, errstr, errstr_size));
            for (int r0 = p0; r0 < p1; r0 += MB) {
                int r1 = r0 + MB < p1 ? r0 + MB : p1;
                size_t o = (size_t)r0 * Tr;
                SHE_TRY(forward_rows(ln, ln->pe, r0, r1, Tr, ln->logp, ln->entropy, errstr,
                                     errstr_size));
                if (e == 0 && k == 0)
                    for (int r = r0; r < r1; r++) {
                        int gi = ln->row_gap[r];
                        gap_acc_t *acc = gi < ln->n_gap ? &ln->gap[gi] : &ln->gap_older;
                        for (size_t i = (size_t)r * Tr; i < (size_t)(r + 1) * Tr; i++)
                            if (ln->mask[i]) {
                                double d = fabs((double)ln->logp[i] - (double)ln->old_logp[i]);
                                gap_sum += d;
                                st->logp_gap_max = d > st->logp_gap_max ? d : st->logp_gap_max;
                                st->gap_tokens++;
                                acc->sum += d;
                                acc->max = d > acc->max ? d : acc->max;
                                acc->tokens++;
                            }
                    }
                she_rl_loss_stats_t ls;
                she_rl_policy_loss(&ln->cfg.loss, ln->logp + o, ln->old_logp + o,
                                   use_ref ? ln->ref_logp + o : NULL, ln->adv + o, ln->mask + o,
                                   ln->entropy + o, r1 - r0, Tr, ln->dlogp + o, &ls);
                add_loss_stats(&st->loss, &ls);
                /* the call's loss is a mean over its rows; the part's over n_resp rows (of
                 * every rank: the ranks' gradients are summed) */
                float scale = (float)ls.n_responses / (float)n_resp;
                int T = layout(ln, r0, r1);
                memset(ln->fdlogp, 0, sizeof(float) * (size_t)(r1 - r0) * T);
                for (int r = r0; r < r1; r++) {
                    int P = ln->row_group[r]->n_prompt_tokens, R = ln->row_resp[r]->n_tokens;
                    for (int t = 0; t < R; t++)
                        ln->fdlogp[(size_t)(r - r0) * T + P - 1 + t] =
                            ln->dlogp[(size_t)r * Tr + t] * scale;
                }
                /* the layout above matches the forward's (same rows), as backward needs */
                SHE_TRY(she_engine_backward(ln->pe, ln->fdlogp, NULL, errstr, errstr_size));
            }
            float gn = 0;
            if (ln->dist)
                SHE_TRY(sum_grads(ln, errstr, errstr_size));
            SHE_TRY(she_engine_adamw_step(ln->pe, &ln->cfg.adamw, lr, 1.0f,
                                          ln->cfg.max_grad_norm, &gn, errstr, errstr_size));
            st->grad_norm += gn;
            st->grad_norm_max = gn > st->grad_norm_max ? gn : st->grad_norm_max;
            st->n_updates++;
        }
    if (ln->dist)
        SHE_TRY(combine_ranks(ln, st, &gap_sum, errstr, errstr_size));
    finish_loss_stats(&st->loss);
    if (st->n_updates)
        st->grad_norm /= st->n_updates;
    st->logp_gap_mean = st->gap_tokens ? gap_sum / (double)st->gap_tokens : 0.0;
    st->n_gap = ln->n_gap;
    for (int k = 0; k < ln->n_gap; k++)
        gap_out(&ln->gap[k], &st->gap[k]);
    gap_out(&ln->gap_older, &st->gap_older);
    return SHE_OK;
}
