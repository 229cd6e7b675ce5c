/* learner.c -- advantages, forward at the behaviour tokens, clipped loss with KL, backward,
 * AdamW (see learner.h). */
#include "learner.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "rollout.h"

#define J SHE_RL_N_STEPS

struct she_learner {
    she_model_t *policy, *ref;
    she_adamw_t *opt;
    she_learner_config_t cfg;
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

/* Forward of model over rows [r0, r1) into [B, Tr] arrays logp (and entropy when non-NULL). */
static she_err_t forward_rows(she_learner_t *ln, she_model_t *m, int r0, int r1, int Tr,
                              float *logp, float *entropy, char *errstr, size_t errstr_size) {
    int T = layout(ln, r0, r1);
    SHE_TRY(she_model_forward(m, ln->tokens, ln->fmask, ln->targets, r1 - r0, T,
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

she_err_t she_learner_step(she_learner_t *ln, const she_rewarded_group_t *groups, int n, float lr,
                           she_learner_stats_t *st, char *errstr, size_t errstr_size) {
    she_learner_stats_t local;
    if (!st)
        st = &local;
    memset(st, 0, sizeof(*st));
    if (n < 1)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size, "learner: no groups");
    const int G = groups[0].rollout.n_responses;
    int Tr = 0, maxlen = 0;
    for (int i = 0; i < n; i++) {
        const she_rollout_group_t *g = &groups[i].rollout;
        if (g->n_responses != G || G < 1 || groups[i].n_rewards != G || !groups[i].rewards)
            return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                            "learner: group %d has %d responses and %d rewards, expected %d", i,
                            g->n_responses, groups[i].n_rewards, G);
        if (g->n_prompt_tokens < 1)
            return she_errf(SHE_ERR_INVALID, errstr, errstr_size, "learner: group %d has no "
                            "prompt", i);
        const int V = ln->policy->cfg.vocab_size;
        for (int t = 0; t < g->n_prompt_tokens; t++)
            if (g->prompt_tokens[t] < 0 || g->prompt_tokens[t] >= V)
                return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                                "learner: group %d: prompt token %d outside the vocabulary", i,
                                (int)g->prompt_tokens[t]);
        for (int k = 0; k < G; k++) {
            int R = g->responses[k].n_tokens;
            for (int t = 0; t < R; t++)
                if (g->responses[k].tokens[t] < 0 || g->responses[k].tokens[t] >= V)
                    return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                                    "learner: group %d response %d: token %d outside the "
                                    "vocabulary", i, k, (int)g->responses[k].tokens[t]);
            Tr = R > Tr ? R : Tr;
            int len = g->n_prompt_tokens + R;
            maxlen = len > maxlen ? len : maxlen;
        }
    }
    if (maxlen > ln->policy->max_seq || (ln->ref && maxlen > ln->ref->max_seq))
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                        "learner: a prompt + response of %d tokens exceeds the %d reserved",
                        maxlen, ln->policy->max_seq);
    const int B = n * G;
    if (Tr == 0)
        Tr = 1;
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
    she_rl_reward_stats(ln->rewards, ln->pass, B, G, &st->reward);
    she_rl_advantages(&ln->cfg.adv, ln->rewards, B, G, ln->step, ln->mask, Tr, NULL, ln->adv,
                      &st->adv);

    const int MB = ln->cfg.micro_batch;
    int use_ref = ln->ref && ln->cfg.loss.kl_beta > 0;
    if (use_ref)
        for (int r0 = 0; r0 < B; r0 += MB) {
            int r1 = r0 + MB < B ? r0 + MB : B;
            SHE_TRY(forward_rows(ln, ln->ref, r0, r1, Tr, ln->ref_logp, NULL, errstr,
                                 errstr_size));
        }

    double gap_sum = 0;
    int parts = ln->cfg.mini_batches < n ? ln->cfg.mini_batches : n;
    for (int e = 0; e < ln->cfg.epochs; e++)
        for (int k = 0; k < parts; k++) {
            /* part k: groups [n*k/parts, n*(k+1)/parts) */
            int p0 = (int)((long)n * k / parts) * G, p1 = (int)((long)n * (k + 1) / parts) * G;
            int n_resp = rows_with_tokens(ln, p0, p1);
            if (n_resp == 0)
                continue;
            she_model_zero_grad(ln->policy);
            for (int r0 = p0; r0 < p1; r0 += MB) {
                int r1 = r0 + MB < p1 ? r0 + MB : p1;
                size_t o = (size_t)r0 * Tr;
                SHE_TRY(forward_rows(ln, ln->policy, r0, r1, Tr, ln->logp, ln->entropy, errstr,
                                     errstr_size));
                if (e == 0 && k == 0)
                    for (size_t i = o; i < (size_t)r1 * Tr; i++)
                        if (ln->mask[i]) {
                            double d = fabs((double)ln->logp[i] - (double)ln->old_logp[i]);
                            gap_sum += d;
                            st->logp_gap_max = d > st->logp_gap_max ? d : st->logp_gap_max;
                            st->gap_tokens++;
                        }
                she_rl_loss_stats_t ls;
                she_rl_policy_loss(&ln->cfg.loss, ln->logp + o, ln->old_logp + o,
                                   use_ref ? ln->ref_logp + o : NULL, ln->adv + o, ln->mask + o,
                                   ln->entropy + o, r1 - r0, Tr, ln->dlogp + o, &ls);
                add_loss_stats(&st->loss, &ls);
                /* the call's loss is a mean over its rows; the part's over n_resp rows */
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
                she_model_backward(ln->policy, ln->fdlogp, NULL);
            }
            float gn = she_model_adamw_step(ln->policy, ln->opt, &ln->cfg.adamw, lr, 1.0f,
                                            ln->cfg.max_grad_norm);
            st->grad_norm += gn;
            st->grad_norm_max = gn > st->grad_norm_max ? gn : st->grad_norm_max;
            st->n_updates++;
        }
    finish_loss_stats(&st->loss);
    if (st->n_updates)
        st->grad_norm /= st->n_updates;
    st->logp_gap_mean = st->gap_tokens ? gap_sum / (double)st->gap_tokens : 0.0;
    return SHE_OK;
}
