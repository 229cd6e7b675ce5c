/* rl.c -- stepwise rewards, GRPO/SRPO advantages, the clipped policy loss and DPO (see rl.h). */
#include "rl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

#define J SHE_RL_N_STEPS

/* ---- rewards ---- */

static const char *const reward_mode_names[SHE_REWARD_MODE__COUNT] = {"outcome", "sum", "rm",
                                                                      "hybrid"};

she_reward_config_t she_reward_defaults(void) {
    she_reward_config_t cfg = {.mode = SHE_REWARD_MODE_HYBRID,
                               .weight = {0.2f, 0.2f, 0.2f, 0.2f, 1.0f}};
    return cfg;
}

she_err_t she_reward_weights_parse(const char *key, const char *text,
                                   float w[SHE_RL_N_STEPS], char *errstr, size_t errstr_size) {
    const char *p = text;
    for (int j = 0; j < SHE_RL_N_STEPS; j++) {
        char *end;
        w[j] = strtof(p, &end);
        if (end == p || !(w[j] >= 0) || *end != (j < SHE_RL_N_STEPS - 1 ? ',' : '\0'))
            return she_errf(SHE_ERR_CONFIG, errstr, errstr_size,
                            "%s: expected five non-negative numbers, got '%s'", key, text);
        p = end + 1;
    }
    return SHE_OK;
}

const char *she_reward_mode_name(she_reward_mode_t mode) {
    return (unsigned)mode < SHE_REWARD_MODE__COUNT ? reward_mode_names[mode] : NULL;
}

int she_reward_mode_parse(const char *name) {
    for (int i = 0; name && i < SHE_REWARD_MODE__COUNT; i++)
        if (strcmp(name, reward_mode_names[i]) == 0)
            return i;
    return -1;
}

/* A verdict as a reward fraction in [0, 1]; missing verdicts earn nothing. */
static double gt_value(int8_t gt) { return gt > 0 ? 1.0 : 0.0; }
static double rm_value(float rm) { return rm > 0.0f ? (rm > 1.0f ? 1.0 : (double)rm) : 0.0; }

void she_rl_step_rewards(const she_reward_config_t *cfg, const she_step_verdict_t *verdicts,
                         int n, float *rewards, uint8_t *pass) {
    SHE_ASSERT((unsigned)cfg->mode < SHE_REWARD_MODE__COUNT);
    for (int i = 0; i < n; i++) {
        const she_step_verdict_t *v = &verdicts[i];
        double r[J] = {0};
        for (int j = 0; j < J; j++) {
            if (!v->parsed[j])
                continue;
            double x = 0.0;
            if (j == J - 1) /* S5: the grade, in every mode */
                x = gt_value(v->gt[j]);
            else if (cfg->mode == SHE_REWARD_MODE_RM)
                x = rm_value(v->rm[j]);
            else if (cfg->mode == SHE_REWARD_MODE_HYBRID)
                x = j < 2 ? rm_value(v->rm[j]) : gt_value(v->gt[j]);
            else if (cfg->mode == SHE_REWARD_MODE_SUM)
                x = j < 2 ? 0.0 : gt_value(v->gt[j]);
            r[j] = cfg->weight[j] * x;
        }
        if (cfg->mode == SHE_REWARD_MODE_SUM) {
            double total = 0.0;
            for (int j = 0; j < J; j++) {
                total += r[j];
                r[j] = 0.0;
            }
            r[J - 1] = total;
        }
        for (int j = 0; j < J; j++)
            if (!v->parsed[j]) {
                r[J - 1] -= cfg->format_penalty;
                break;
            }
        for (int j = 0; j < J; j++)
            rewards[(size_t)i * J + j] = (float)r[j];
        if (pass)
            pass[i] = v->parsed[J - 1] && v->gt[J - 1] == 1;
    }
}

void she_rl_reward_stats(const float *rewards, const uint8_t *pass, int B, int G,
                         she_reward_stats_t *st) {
    SHE_ASSERT(G > 0 && B % G == 0);
    memset(st, 0, sizeof(*st));
    st->pass_rate = NAN;
    if (B == 0)
        return;
    for (int i = 0; i < B; i++)
        for (int j = 0; j < J; j++) {
            st->step_mean[j] += rewards[(size_t)i * J + j];
            st->total_mean += rewards[(size_t)i * J + j];
        }
    for (int j = 0; j < J; j++)
        st->step_mean[j] /= B;
    st->total_mean /= B;
    if (!pass)
        return;
    long n_pass = 0;
    for (int g = 0; g < B; g += G) {
        int k = 0;
        for (int i = g; i < g + G; i++)
            k += pass[i] != 0;
        n_pass += k;
        st->n_all_pass += k == G;
        st->n_all_fail += k == 0;
    }
    st->pass_rate = (double)n_pass / B;
}

/* ---- advantages ---- */

she_adv_config_t she_adv_defaults(void) {
    she_adv_config_t cfg = {.algo = SHE_ADV_ALGO_GRPO, .norm = SHE_ADV_NORM_GROUP, .gamma = 1.0f,
                            .clip = 2.0f, .delta = 1e-6f};
    return cfg;
}

static const char *const algo_names[] = {"grpo", "srpo"};
static const char *const norm_names[] = {"none", "group", "batch"};

static int name_index(const char *const *names, int n, const char *name) {
    for (int i = 0; name && i < n; i++)
        if (strcmp(name, names[i]) == 0)
            return i;
    return -1;
}

const char *she_adv_algo_name(she_adv_algo_t algo) {
    return (unsigned)algo < 2 ? algo_names[algo] : NULL;
}
int she_adv_algo_parse(const char *name) { return name_index(algo_names, 2, name); }
const char *she_adv_norm_name(she_adv_norm_t norm) {
    return (unsigned)norm < 3 ? norm_names[norm] : NULL;
}
int she_adv_norm_parse(const char *name) { return name_index(norm_names, 3, name); }

/* The value an advantage is built from: the sequence reward (GRPO) or the step-k reward (SRPO). */
static double adv_value(const she_adv_config_t *cfg, const float *rewards, int i, int k) {
    const float *r = rewards + (size_t)i * J;
    if (cfg->algo == SHE_ADV_ALGO_SRPO)
        return r[k];
    double total = 0.0;
    for (int j = 0; j < J; j++)
        total += r[j];
    return total;
}

/* z-score parameters of the values (row, k) for rows [r0, r1): x -> (x - mu) * scale.  A
 * degenerate set (all values exactly equal) gets scale 0, so every member maps to exactly 0. */
static void zscore(const she_adv_config_t *cfg, const float *rewards, int r0, int r1, int k,
                   double *mu, double *scale, int *n_degenerate) {
    double sum = 0.0, lo = INFINITY, hi = -INFINITY;
    for (int i = r0; i < r1; i++) {
        double x = adv_value(cfg, rewards, i, k);
        sum += x;
        lo = x < lo ? x : lo;
        hi = x > hi ? x : hi;
    }
    int n = r1 - r0;
    *mu = sum / n;
    if (!(hi > lo)) {
        *scale = 0.0;
        (*n_degenerate)++;
        return;
    }
    double ss = 0.0;
    for (int i = r0; i < r1; i++) {
        double d = adv_value(cfg, rewards, i, k) - *mu;
        ss += d * d;
    }
    *scale = 1.0 / (sqrt(ss / (n - 1)) + cfg->delta);
}

void she_rl_advantages(const she_adv_config_t *cfg, const float *rewards, int B, int G,
                       const uint8_t *step, const uint8_t *mask, int T, float *step_adv,
                       float *adv, she_adv_stats_t *st) {
    SHE_ASSERT(G > 0 && B % G == 0);
    SHE_ASSERT(cfg->algo == SHE_ADV_ALGO_GRPO || cfg->algo == SHE_ADV_ALGO_SRPO);
    SHE_ASSERT(cfg->norm >= SHE_ADV_NORM_NONE && cfg->norm <= SHE_ADV_NORM_BATCH);
    SHE_ASSERT(!adv || mask);
    SHE_ASSERT(!adv || cfg->algo == SHE_ADV_ALGO_GRPO || step);
    /* GRPO normalises one value per response (k = 0 stands for the sequence reward). */
    int n_k = cfg->algo == SHE_ADV_ALGO_SRPO ? J : 1;
    double mu[J] = {0}, scale[J] = {1, 1, 1, 1, 1};
    int n_degenerate = 0;
    if (cfg->norm == SHE_ADV_NORM_BATCH && B > 0)
        for (int k = 0; k < n_k; k++)
            zscore(cfg, rewards, 0, B, k, &mu[k], &scale[k], &n_degenerate);
    double sum = 0.0, sum2 = 0.0, amin = INFINITY, amax = -INFINITY;
    long n_tok = 0, n_clipped = 0;
    double clip = cfg->clip > 0.0f ? cfg->clip : INFINITY;

    for (int g = 0; g < B; g += G) {
        if (cfg->norm == SHE_ADV_NORM_GROUP)
            for (int k = 0; k < n_k; k++)
                zscore(cfg, rewards, g, g + G, k, &mu[k], &scale[k], &n_degenerate);
        for (int i = g; i < g + G; i++) {
            /* a[j]: the unclipped advantage of a token in step j+1 (Eq. 6 suffix sums) */
            double a[J], z[J];
            for (int k = 0; k < n_k; k++)
                z[k] = (adv_value(cfg, rewards, i, k) - mu[k]) * scale[k];
            if (cfg->algo == SHE_ADV_ALGO_SRPO) {
                double acc = 0.0;
                for (int j = J - 1; j >= 0; j--) {
                    acc = z[j] + cfg->gamma * acc;
                    a[j] = acc;
                }
            } else {
                for (int j = 0; j < J; j++)
                    a[j] = z[0];
            }
            double ac[J];
            for (int j = 0; j < J; j++) {
                ac[j] = a[j] > clip ? clip : (a[j] < -clip ? -clip : a[j]);
                if (step_adv)
                    step_adv[(size_t)i * J + j] = (float)ac[j];
            }
            if (!adv)
                continue;
            for (int t = 0; t < T; t++) {
                size_t p = (size_t)i * T + t;
                if (!mask[p]) {
                    adv[p] = 0.0f;
                    continue;
                }
                int j = 0;
                if (cfg->algo == SHE_ADV_ALGO_SRPO) {
                    SHE_ASSERT(step[p] >= 1 && step[p] <= J);
                    j = step[p] - 1;
                }
                double v = ac[j];
                adv[p] = (float)v;
                n_tok++;
                n_clipped += v != a[j];
                sum += v;
                sum2 += v * v;
                amin = v < amin ? v : amin;
                amax = v > amax ? v : amax;
            }
        }
    }
    if (!st)
        return;
    memset(st, 0, sizeof(*st));
    st->n_degenerate = n_degenerate;
    st->n_tokens = n_tok;
    st->n_clipped = n_clipped;
    if (n_tok > 0) {
        st->mean = sum / n_tok;
        double var = sum2 / n_tok - st->mean * st->mean;
        st->std = var > 0.0 ? sqrt(var) : 0.0;
        st->min = amin;
        st->max = amax;
    }
}

/* ---- policy loss ---- */

she_rl_loss_config_t she_rl_loss_defaults(void) {
    she_rl_loss_config_t cfg = {.clip_eps = 0.2f, .kl_beta = 0.04f};
    return cfg;
}

double she_rl_policy_loss(const she_rl_loss_config_t *cfg, const float *logp,
                          const float *old_logp, const float *ref_logp, const float *adv,
                          const uint8_t *mask, const float *entropy, int B, int T, float *dlogp,
                          she_rl_loss_stats_t *st) {
    double beta = cfg->kl_beta, eps = cfg->clip_eps;
    SHE_ASSERT(beta == 0.0 || ref_logp);
    int n_rows = 0;
    for (int i = 0; i < B; i++)
        for (int t = 0; t < T; t++)
            if (mask[(size_t)i * T + t]) {
                n_rows++;
                break;
            }
    double pg = 0.0, klterm = 0.0;
    double kl_sum = 0.0, ratio_sum = 0.0, adv_sum = 0.0, ent_sum = 0.0;
    double rmin = INFINITY, rmax = -INFINITY;
    long n_tok = 0, n_low = 0, n_high = 0;
    for (int i = 0; i < B; i++) {
        long n_i = 0;
        for (int t = 0; t < T; t++)
            n_i += mask[(size_t)i * T + t] != 0;
        double w = n_i ? 1.0 / ((double)n_rows * (double)n_i) : 0.0;
        double pg_i = 0.0, kl_i = 0.0;
        for (int t = 0; t < T; t++) {
            size_t p = (size_t)i * T + t;
            if (!mask[p]) {
                dlogp[p] = 0.0f;
                continue;
            }
            double lp = logp[p], a = adv[p];
            double rho = exp(lp - (double)old_logp[p]);
            double rc = rho < 1.0 - eps ? 1.0 - eps : (rho > 1.0 + eps ? 1.0 + eps : rho);
            double s1 = rho * a, s2 = rc * a;
            /* the clipped branch is a constant: it carries no gradient when it is the minimum */
            int clipped = s2 < s1;
            double surr = clipped ? s2 : s1;
            double dsurr = clipped ? 0.0 : s1;
            double k3 = 0.0, dk3 = 0.0;
            if (beta != 0.0) {
                double d = (double)ref_logp[p] - lp, e = exp(d);
                k3 = e - d - 1.0;
                dk3 = 1.0 - e;
            }
            pg_i -= surr;
            kl_i += beta * k3;
            dlogp[p] = (float)(-w * (dsurr - beta * dk3));
            n_tok++;
            n_low += clipped && rho < 1.0 - eps;
            n_high += clipped && rho > 1.0 + eps;
            kl_sum += k3;
            ratio_sum += rho;
            adv_sum += a;
            if (entropy)
                ent_sum += entropy[p];
            rmin = rho < rmin ? rho : rmin;
            rmax = rho > rmax ? rho : rmax;
        }
        pg += w * pg_i;
        klterm += w * kl_i;
    }
    double loss = pg + klterm;
    if (!st)
        return loss;
    memset(st, 0, sizeof(*st));
    st->loss = loss;
    st->pg_loss = pg;
    st->kl_loss = klterm;
    st->n_tokens = n_tok;
    st->n_responses = n_rows;
    st->entropy_mean = NAN;
    if (n_tok > 0) {
        st->kl_mean = kl_sum / n_tok;
        st->clip_frac_low = (double)n_low / n_tok;
        st->clip_frac_high = (double)n_high / n_tok;
        st->clip_frac = (double)(n_low + n_high) / n_tok;
        st->ratio_mean = ratio_sum / n_tok;
        st->ratio_min = rmin;
        st->ratio_max = rmax;
        st->adv_mean = adv_sum / n_tok;
        if (entropy)
            st->entropy_mean = ent_sum / n_tok;
    }
    return loss;
}

/* ---- DPO ---- */

/* log(1 + exp(x)) without overflow */
static double softplus(double x) { return x > 0.0 ? x + log1p(exp(-x)) : log1p(exp(x)); }

static double masked_sum(const float *x, const uint8_t *mask, int T) {
    double s = 0.0;
    for (int t = 0; t < T; t++)
        if (mask[t])
            s += x[t];
    return s;
}

double she_dpo_loss(float beta, const float *logp_c, const uint8_t *mask_c, const float *ref_c,
                    const float *logp_r, const uint8_t *mask_r, const float *ref_r, int P, int T,
                    float *dlogp_c, float *dlogp_r, she_dpo_stats_t *st) {
    double loss = 0.0, acc = 0.0, margin = 0.0, rc_sum = 0.0, rr_sum = 0.0;
    for (int i = 0; i < P; i++) {
        size_t o = (size_t)i * T;
        double rc = beta * (masked_sum(logp_c + o, mask_c + o, T) - ref_c[i]);
        double rr = beta * (masked_sum(logp_r + o, mask_r + o, T) - ref_r[i]);
        double z = rc - rr;
        loss += softplus(-z);
        /* d softplus(-z)/dz = -sigmoid(-z) */
        double g = -beta / (1.0 + exp(z)) / P;
        for (int t = 0; t < T; t++) {
            dlogp_c[o + t] = mask_c[o + t] ? (float)g : 0.0f;
            dlogp_r[o + t] = mask_r[o + t] ? (float)-g : 0.0f;
        }
        acc += rc > rr;
        margin += z;
        rc_sum += rc;
        rr_sum += rr;
    }
    loss = P > 0 ? loss / P : 0.0;
    if (st) {
        memset(st, 0, sizeof(*st));
        st->loss = loss;
        st->n_pairs = P;
        if (P > 0) {
            st->reward_acc = acc / P;
            st->margin_mean = margin / P;
            st->chosen_reward = rc_sum / P;
            st->rejected_reward = rr_sum / P;
        }
    }
    return loss;
}
