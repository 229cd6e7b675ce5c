/* dpo.c -- DPO pairs, reference log-probs and the training step (see dpo.h). */
#include "dpo.h"

#include <stdlib.h>
#include <string.h>

static int32_t *dup_ids(const int32_t *ids, int n) {
    int32_t *p = malloc(sizeof(int32_t) * (n > 0 ? n : 1));
    SHE_CHECK_ALLOC(p);
    memcpy(p, ids, sizeof(int32_t) * n);
    return p;
}

void she_dpo_set_add(she_dpo_set_t *set, const int32_t *prompt, int n_prompt,
                     const int32_t *chosen, int n_chosen, const int32_t *rejected,
                     int n_rejected) {
    if (set->n == set->cap) {
        set->cap = set->cap ? 2 * set->cap : 64;
        set->pairs = realloc(set->pairs, sizeof(*set->pairs) * set->cap);
        SHE_CHECK_ALLOC(set->pairs);
    }
    set->pairs[set->n++] = (she_dpo_pair_t){dup_ids(prompt, n_prompt), dup_ids(chosen, n_chosen),
                                            dup_ids(rejected, n_rejected), n_prompt, n_chosen,
                                            n_rejected, 0.0f, 0.0f};
}

void she_dpo_set_free(she_dpo_set_t *set) {
    if (!set)
        return;
    for (int i = 0; i < set->n; i++) {
        free(set->pairs[i].prompt);
        free(set->pairs[i].chosen);
        free(set->pairs[i].rejected);
    }
    free(set->pairs);
    memset(set, 0, sizeof(*set));
}

/* Rows of one forward: row 2i is pair i's chosen answer, 2i+1 its rejected one, each after
 * the prompt.  Buffers sized [rows, T]. */
typedef struct rows {
    int32_t *tokens, *targets;
    uint8_t *mask;
    float *logp, *dlogp;    /* [rows, T] engine layout */
    float *alogp;           /* [rows, A] answer positions */
    uint8_t *amask;         /* [rows, A] */
    float *adlogp;          /* [rows, A] */
    int T, A;
} rows_t;

static void rows_free(rows_t *r) {
    free(r->tokens);
    free(r->targets);
    free(r->mask);
    free(r->logp);
    free(r->dlogp);
    free(r->alogp);
    free(r->amask);
    free(r->adlogp);
}

static const int32_t *answer(const she_dpo_pair_t *p, int rejected, int *n) {
    *n = rejected ? p->n_rejected : p->n_chosen;
    return rejected ? p->rejected : p->chosen;
}

/* Lays out pairs idx[0..m) (both answers each) and checks the lengths. */
static she_err_t rows_fill(rows_t *r, const she_dpo_set_t *set, const int *idx, int m,
                           int max_seq, char *errstr, size_t errstr_size) {
    int T = 0, A = 1;
    for (int i = 0; i < m; i++)
        for (int c = 0; c < 2; c++) {
            const she_dpo_pair_t *p = &set->pairs[idx[i]];
            int na;
            answer(p, c, &na);
            T = p->n_prompt + na > T ? p->n_prompt + na : T;
            A = na > A ? na : A;
        }
    if (T > max_seq)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                        "dpo: a prompt + answer of %d tokens exceeds the %d reserved", T, max_seq);
    size_t n = (size_t)2 * m * T, na = (size_t)2 * m * A;
    memset(r, 0, sizeof(*r));
    r->T = T;
    r->A = A;
    r->tokens = calloc(n, sizeof(int32_t));
    r->targets = malloc(n * sizeof(int32_t));
    r->mask = calloc(n, 1);
    r->logp = malloc(n * sizeof(float));
    r->dlogp = calloc(n, sizeof(float));
    r->alogp = calloc(na, sizeof(float));
    r->amask = calloc(na, 1);
    r->adlogp = calloc(na, sizeof(float));
    SHE_CHECK_ALLOC(r->tokens);
    SHE_CHECK_ALLOC(r->targets);
    SHE_CHECK_ALLOC(r->mask);
    SHE_CHECK_ALLOC(r->logp);
    SHE_CHECK_ALLOC(r->dlogp);
    SHE_CHECK_ALLOC(r->alogp);
    SHE_CHECK_ALLOC(r->amask);
    SHE_CHECK_ALLOC(r->adlogp);
    for (size_t k = 0; k < n; k++)
        r->targets[k] = -1;
    for (int i = 0; i < m; i++)
        for (int c = 0; c < 2; c++) {
            const she_dpo_pair_t *p = &set->pairs[idx[i]];
            int nans;
            const int32_t *ans = answer(p, c, &nans);
            size_t o = (size_t)(2 * i + c) * T;
            memcpy(r->tokens + o, p->prompt, sizeof(int32_t) * p->n_prompt);
            memcpy(r->tokens + o + p->n_prompt, ans, sizeof(int32_t) * nans);
            memset(r->mask + o, 1, (size_t)(p->n_prompt + nans));
            for (int t = 0; t < nans; t++) {
                r->targets[o + p->n_prompt - 1 + t] = ans[t];
                r->amask[(size_t)(2 * i + c) * A + t] = 1;
            }
        }
    return SHE_OK;
}

/* Forward of the filled rows; answer log-probs into alogp. */
static she_err_t rows_forward(rows_t *r, she_engine_t *e, const she_dpo_set_t *set,
                              const int *idx, int mpairs, char *errstr, size_t errstr_size) {
    SHE_TRY(she_engine_forward(e, r->tokens, r->mask, r->targets, 2 * mpairs, r->T, 1.0f, r->logp,
                               NULL, errstr, errstr_size));
    for (int i = 0; i < mpairs; i++)
        for (int c = 0; c < 2; c++) {
            const she_dpo_pair_t *p = &set->pairs[idx[i]];
            int nans;
            answer(p, c, &nans);
            for (int t = 0; t < nans; t++)
                r->alogp[(size_t)(2 * i + c) * r->A + t] =
                    r->logp[(size_t)(2 * i + c) * r->T + p->n_prompt - 1 + t];
        }
    return SHE_OK;
}

she_err_t she_dpo_ref_logps(she_engine_t *ref_engine, she_dpo_set_t *set, int micro_batch,
                            char *errstr, size_t errstr_size) {
    const she_model_t *ref = she_engine_model(ref_engine);
    int mp = micro_batch / 2;
    if (mp < 1 || micro_batch > ref->max_batch)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                        "dpo: micro-batch %d for a model of %d rows", micro_batch, ref->max_batch);
    int *idx = malloc(sizeof(int) * mp);
    SHE_CHECK_ALLOC(idx);
    she_err_t err = SHE_OK;
    for (int i0 = 0; i0 < set->n && err == SHE_OK; i0 += mp) {
        int m = set->n - i0 < mp ? set->n - i0 : mp;
        for (int i = 0; i < m; i++)
            idx[i] = i0 + i;
        rows_t r;
        err = rows_fill(&r, set, idx, m, ref->max_seq, errstr, errstr_size);
        if (err != SHE_OK)
            break;
        err = rows_forward(&r, ref_engine, set, idx, m, errstr, errstr_size);
        for (int i = 0; i < m && err == SHE_OK; i++)
            for (int c = 0; c < 2; c++) {
                double s = 0;
                for (int t = 0; t < r.A; t++)
                    s += r.alogp[(size_t)(2 * i + c) * r.A + t];
                if (c)
                    set->pairs[idx[i]].ref_rejected = (float)s;
                else
                    set->pairs[idx[i]].ref_chosen = (float)s;
            }
        rows_free(&r);
    }
    free(idx);
    return err;
}

she_err_t she_dpo_step(she_engine_t *e, const she_adamw_config_t *hp, float lr, float clip,
                       float beta, const she_dpo_set_t *set, const int *idx, int P,
                       int micro_batch, she_dpo_stats_t *st, float *grad_norm, char *errstr,
                       size_t errstr_size) {
    const she_model_t *policy = she_engine_model(e);
    int mp = micro_batch / 2;
    if (mp < 1 || micro_batch > policy->max_batch || P < 1)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                        "dpo: micro-batch %d for a model of %d rows, %d pairs", micro_batch,
                        policy->max_batch, P);
    for (int i = 0; i < P; i++) {
        const she_dpo_pair_t *p = &set->pairs[idx[i]];
        int longest = p->n_prompt + (p->n_chosen > p->n_rejected ? p->n_chosen : p->n_rejected);
        if (longest > policy->max_seq)
            return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                            "dpo: pair %d: %d tokens exceed the %d reserved", idx[i], longest,
                            policy->max_seq);
    }
    she_dpo_stats_t acc = {0};
    SHE_TRY(she_engine_zero_grad(e, errstr, errstr_size));
    for (int i0 = 0; i0 < P; i0 += mp) {
        int m = P - i0 < mp ? P - i0 : mp;
        rows_t r;
        SHE_TRY(rows_fill(&r, set, idx + i0, m, policy->max_seq, errstr, errstr_size));
        she_err_t err = rows_forward(&r, e, set, idx + i0, m, errstr, errstr_size);
        if (err != SHE_OK) {
            rows_free(&r);
            return err;
        }
        float ref_c[m], ref_r[m];
        for (int i = 0; i < m; i++) {
            ref_c[i] = set->pairs[idx[i0 + i]].ref_chosen;
            ref_r[i] = set->pairs[idx[i0 + i]].ref_rejected;
        }
        /* the forward interleaves chosen and rejected rows; the loss takes them apart */
        size_t A = (size_t)r.A;
        float *lc = malloc(sizeof(float) * m * A), *lr = malloc(sizeof(float) * m * A);
        float *dc = malloc(sizeof(float) * m * A), *dr = malloc(sizeof(float) * m * A);
        uint8_t *mc = malloc(m * A), *mr = malloc(m * A);
        SHE_CHECK_ALLOC(lc);
        SHE_CHECK_ALLOC(lr);
        SHE_CHECK_ALLOC(dc);
        SHE_CHECK_ALLOC(dr);
        SHE_CHECK_ALLOC(mc);
        SHE_CHECK_ALLOC(mr);
        for (int i = 0; i < m; i++) {
            memcpy(lc + i * A, r.alogp + (2 * i) * A, sizeof(float) * A);
            memcpy(lr + i * A, r.alogp + (2 * i + 1) * A, sizeof(float) * A);
            memcpy(mc + i * A, r.amask + (2 * i) * A, A);
            memcpy(mr + i * A, r.amask + (2 * i + 1) * A, A);
        }
        she_dpo_stats_t s;
        she_dpo_loss(beta, lc, mc, ref_c, lr, mr, ref_r, m, (int)A, dc, dr, &s);
        float scale = (float)m / (float)P; /* the loss is a mean over this call's pairs */
        for (int i = 0; i < m; i++) {
            const she_dpo_pair_t *p = &set->pairs[idx[i0 + i]];
            for (int c = 0; c < 2; c++) {
                const float *d = c ? dr + i * A : dc + i * A;
                int nans;
                answer(p, c, &nans);
                for (int t = 0; t < nans; t++)
                    r.dlogp[(size_t)(2 * i + c) * r.T + p->n_prompt - 1 + t] = d[t] * scale;
            }
        }
        err = she_engine_backward(e, r.dlogp, NULL, errstr, errstr_size);
        acc.loss += s.loss * m;
        acc.reward_acc += s.reward_acc * m;
        acc.margin_mean += s.margin_mean * m;
        acc.chosen_reward += s.chosen_reward * m;
        acc.rejected_reward += s.rejected_reward * m;
        acc.n_pairs += m;
        free(lc);
        free(lr);
        free(dc);
        free(dr);
        free(mc);
        free(mr);
        rows_free(&r);
        SHE_TRY(err);
    }
    SHE_TRY(she_engine_adamw_step(e, hp, lr, 1.0f, clip, grad_norm, errstr, errstr_size));
    if (st) {
        double n = acc.n_pairs;
        *st = acc;
        st->loss /= n;
        st->reward_acc /= n;
        st->margin_mean /= n;
        st->chosen_reward /= n;
        st->rejected_reward /= n;
    }
    return SHE_OK;
}
