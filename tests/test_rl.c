/* test_rl.c -- trainer/rl: step rewards on crafted chains, GRPO (Eq. 4) and SRPO (Eq. 6)
 * advantages on hand-computed examples for every normalisation and with clipping, the clipped
 * policy loss by hand and its gradient against central finite differences (of a double-precision
 * re-implementation here, and of the function itself), and DPO by hand and by finite differences.
 * Tolerances are stated at each check: float outputs of double computations are exact to ~1e-7
 * relative; finite differences with h = 1e-4 in double to ~1e-7. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"
#include "trainer/rl.h"

#define J SHE_RL_N_STEPS
#define TOL 2e-6 /* float rounding of a double result of order 1 */

/* ---- rewards ---- */

static she_step_verdict_t correct_chain(void) {
    she_step_verdict_t v = {.parsed = {1, 1, 1, 1, 1},
                            .rm = {1.0f, 1.0f, 1.0f, 1.0f, -1.0f},
                            .gt = {-1, -1, 1, 1, 1}};
    return v;
}

static void check_rewards(she_reward_mode_t mode, const she_step_verdict_t *v, const float *want) {
    she_reward_config_t cfg = she_reward_defaults();
    cfg.mode = mode;
    float r[J];
    she_rl_step_rewards(&cfg, v, 1, r, NULL);
    for (int j = 0; j < J; j++)
        CHECK_MSG(fabsf(r[j] - want[j]) <= 1e-7f, "mode %s step %d: %g != %g",
                  she_reward_mode_name(mode), j + 1, r[j], want[j]);
}

static void test_reward_modes(void) {
    she_reward_config_t def = she_reward_defaults();
    CHECK(def.mode == SHE_REWARD_MODE_HYBRID);
    CHECK(def.weight[0] == 0.2f && def.weight[3] == 0.2f && def.weight[4] == 1.0f);

    /* a correct chain */
    she_step_verdict_t ok = correct_chain();
    check_rewards(SHE_REWARD_MODE_OUTCOME, &ok, (float[]){0, 0, 0, 0, 1.0f});
    check_rewards(SHE_REWARD_MODE_SUM, &ok, (float[]){0, 0, 0, 0, 1.4f});
    check_rewards(SHE_REWARD_MODE_RM, &ok, (float[]){0.2f, 0.2f, 0.2f, 0.2f, 1.0f});
    check_rewards(SHE_REWARD_MODE_HYBRID, &ok, (float[]){0.2f, 0.2f, 0.2f, 0.2f, 1.0f});

    /* wrong step 3 (the ground truth disagrees; the reward model is fooled), right grade */
    she_step_verdict_t w3 = correct_chain();
    w3.gt[2] = 0;
    check_rewards(SHE_REWARD_MODE_OUTCOME, &w3, (float[]){0, 0, 0, 0, 1.0f});
    check_rewards(SHE_REWARD_MODE_SUM, &w3, (float[]){0, 0, 0, 0, 1.2f});
    check_rewards(SHE_REWARD_MODE_RM, &w3, (float[]){0.2f, 0.2f, 0.2f, 0.2f, 1.0f});
    check_rewards(SHE_REWARD_MODE_HYBRID, &w3, (float[]){0.2f, 0.2f, 0.0f, 0.2f, 1.0f});

    /* unparsable step 4: 0 whatever the verdicts say; a wrong grade */
    she_step_verdict_t u4 = correct_chain();
    u4.parsed[3] = 0;
    u4.gt[4] = 0;
    check_rewards(SHE_REWARD_MODE_OUTCOME, &u4, (float[]){0, 0, 0, 0, 0});
    check_rewards(SHE_REWARD_MODE_SUM, &u4, (float[]){0, 0, 0, 0, 0.2f});
    check_rewards(SHE_REWARD_MODE_RM, &u4, (float[]){0.2f, 0.2f, 0.2f, 0, 0});
    check_rewards(SHE_REWARD_MODE_HYBRID, &u4, (float[]){0.2f, 0.2f, 0.2f, 0, 0});

    /* reward-model probabilities scale the weight; a missing verdict earns 0 */
    she_step_verdict_t p = correct_chain();
    p.rm[0] = 0.7f;
    p.rm[1] = -1.0f;
    p.gt[3] = -1;
    check_rewards(SHE_REWARD_MODE_HYBRID, &p, (float[]){0.14f, 0, 0.2f, 0, 1.0f});

    /* the format penalty: on S5 of a response with an unparsable step, in every mode; a
     * response that parses keeps its rewards */
    she_reward_config_t pen = she_reward_defaults();
    pen.format_penalty = 0.5f;
    float rp[J];
    she_rl_step_rewards(&pen, &u4, 1, rp, NULL);
    CHECK_CLOSE(rp[2], 0.2, 1e-7, 0);
    CHECK_CLOSE(rp[3], 0.0, 1e-7, 0);
    CHECK_CLOSE(rp[4], -0.5, 1e-7, 0);
    pen.mode = SHE_REWARD_MODE_SUM;
    she_rl_step_rewards(&pen, &u4, 1, rp, NULL);
    CHECK_CLOSE(rp[4], 0.2 - 0.5, 1e-6, 0);
    pen.mode = SHE_REWARD_MODE_HYBRID;
    she_rl_step_rewards(&pen, &ok, 1, rp, NULL);
    CHECK_CLOSE(rp[4], 1.0, 1e-7, 0);

    /* weights from configuration text: five non-negative numbers, the key named otherwise */
    float w[J];
    char errstr[256];
    CHECK_OK(she_reward_weights_parse("k", "0.2,0.2,0.5,0.2,1", w, errstr, sizeof(errstr)));
    CHECK(w[2] == 0.5f && w[4] == 1.0f);
    const char *bad[] = {"0.2,0.2,0.2,0.2", "0.2,0.2,0.2,0.2,1,1", "0.2,-1,0.2,0.2,1",
                         "0.2,0.2,0.2,0.2,1x", "", "nan,0,0,0,1"};
    for (int i = 0; i < 6; i++) {
        CHECK_MSG(she_reward_weights_parse("rl.weights", bad[i], w, errstr, sizeof(errstr)) ==
                      SHE_ERR_CONFIG, "'%s' accepted", bad[i]);
        CHECK(strstr(errstr, "rl.weights") != NULL);
    }

    /* custom weights */
    she_reward_config_t cfg = she_reward_defaults();
    cfg.weight[2] = 0.5f;
    float r[J];
    she_rl_step_rewards(&cfg, &ok, 1, r, NULL);
    CHECK_CLOSE(r[2], 0.5, 1e-7, 0);

    /* pass: the grade parsed and right, whatever the mode */
    she_step_verdict_t v[3] = {ok, u4, ok};
    v[2].parsed[4] = 0;
    uint8_t pass[3];
    float rr[3 * J];
    cfg.mode = SHE_REWARD_MODE_OUTCOME;
    she_rl_step_rewards(&cfg, v, 3, rr, pass);
    CHECK(pass[0] == 1 && pass[1] == 0 && pass[2] == 0);
    CHECK(rr[2 * J + 4] == 0.0f);

    for (int m = 0; m < SHE_REWARD_MODE__COUNT; m++)
        CHECK_EQ_INT(she_reward_mode_parse(she_reward_mode_name(m)), m);
    CHECK_EQ_INT(she_reward_mode_parse("bogus"), -1);
    CHECK_EQ_INT(she_adv_algo_parse("srpo"), SHE_ADV_ALGO_SRPO);
    CHECK_EQ_INT(she_adv_norm_parse("batch"), SHE_ADV_NORM_BATCH);
    CHECK_EQ_INT(she_adv_norm_parse(NULL), -1);
}

static void test_reward_stats(void) {
    /* two groups of 2: the first all pass, the second mixed */
    float r[4 * J] = {0.2f, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0.2f, 0.2f, 0, 0, 0, 0, 0, 0, 0, 1};
    uint8_t pass[4] = {1, 1, 0, 1};
    she_reward_stats_t st;
    she_rl_reward_stats(r, pass, 4, 2, &st);
    CHECK_CLOSE(st.step_mean[0], 0.1, 1e-7, 0);
    CHECK_CLOSE(st.step_mean[4], 0.75, 1e-7, 0);
    CHECK_CLOSE(st.total_mean, (1.2 + 1 + 0.4 + 1) / 4, 1e-7, 0);
    CHECK_CLOSE(st.pass_rate, 0.75, 1e-12, 0);
    CHECK_EQ_INT(st.n_all_pass, 1);
    CHECK_EQ_INT(st.n_all_fail, 0);
}

/* ---- advantages ---- */

static she_adv_config_t adv_cfg(she_adv_algo_t algo, she_adv_norm_t norm, float gamma, float clip) {
    she_adv_config_t c = she_adv_defaults();
    c.algo = algo;
    c.norm = norm;
    c.gamma = gamma;
    c.clip = clip;
    c.delta = 0.0f; /* exact hand values; delta's only role is checked separately */
    return c;
}

/* rewards whose sums are R = 2, 0, 1, 1 */
static const float grpo_rewards[4 * J] = {
    0.2f, 0.2f, 0.2f, 0.4f, 1.0f, /* 2.0 */
    0, 0, 0, 0, 0,                /* 0.0 */
    0, 0, 0, 0, 1.0f,             /* 1.0 */
    0.5f, 0, 0, 0.5f, 0,          /* 1.0 */
};

static void test_grpo_eq4(void) {
    /* mean 1, deviations 1, -1, 0, 0, unbiased std sqrt(2/3): A = +-sqrt(3/2), 0, 0 */
    const double a = sqrt(1.5);
    const double want[4] = {a, -a, 0, 0};
    she_adv_config_t c = adv_cfg(SHE_ADV_ALGO_GRPO, SHE_ADV_NORM_GROUP, 1.0f, 0.0f);
    float sa[4 * J];
    enum { T = 6 };
    uint8_t mask[4 * T] = {1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1, 0, 1, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0};
    float adv[4 * T];
    she_adv_stats_t st;
    she_rl_advantages(&c, grpo_rewards, 4, 4, NULL, mask, T, sa, adv, &st);
    for (int i = 0; i < 4; i++) {
        for (int j = 0; j < J; j++)
            CHECK_CLOSE(sa[i * J + j], want[i], TOL, 0);
        for (int t = 0; t < T; t++)
            CHECK_CLOSE(adv[i * T + t], mask[i * T + t] ? want[i] : 0.0, TOL, 0);
    }
    CHECK_EQ_INT(st.n_tokens, 13);
    CHECK_EQ_INT(st.n_degenerate, 0);
    CHECK_EQ_INT(st.n_clipped, 0);
    CHECK_CLOSE(st.max, a, TOL, 0);
    CHECK_CLOSE(st.min, -a, TOL, 0);
    CHECK_CLOSE(st.mean, (4 * a - 6 * a) / 13, TOL, 0);

    /* delta enters as std + delta */
    c.delta = 0.5f;
    she_rl_advantages(&c, grpo_rewards, 4, 4, NULL, NULL, 0, sa, NULL, NULL);
    CHECK_CLOSE(sa[0], 1.0 / (sqrt(2.0 / 3.0) + 0.5), TOL, 0);

    /* clipping at 1 */
    c = adv_cfg(SHE_ADV_ALGO_GRPO, SHE_ADV_NORM_GROUP, 1.0f, 1.0f);
    she_rl_advantages(&c, grpo_rewards, 4, 4, NULL, mask, T, sa, adv, &st);
    CHECK_CLOSE(sa[0], 1.0, 0, 0);
    CHECK_CLOSE(sa[J], -1.0, 0, 0);
    CHECK_EQ_INT(st.n_clipped, 4 + 6);

    /* none: the raw sequence reward */
    c = adv_cfg(SHE_ADV_ALGO_GRPO, SHE_ADV_NORM_NONE, 1.0f, 0.0f);
    she_rl_advantages(&c, grpo_rewards, 4, 4, NULL, NULL, 0, sa, NULL, NULL);
    CHECK_CLOSE(sa[0], 2.0, TOL, 0);
    CHECK_CLOSE(sa[3 * J], 1.0, TOL, 0);
}

static void test_grpo_degenerate_and_batch(void) {
    /* group 0: R = 2, 0, 1, 1 ; group 1: all R = 1.4 (all right): degenerate -> exactly 0,
     * also with delta = 0 (no division by zero) */
    float r[8 * J];
    memcpy(r, grpo_rewards, sizeof(grpo_rewards));
    for (int i = 4; i < 8; i++) {
        const float row[J] = {0.2f, 0.2f, 0, 0, 1.0f};
        memcpy(r + i * J, row, sizeof(row));
    }
    she_adv_config_t c = adv_cfg(SHE_ADV_ALGO_GRPO, SHE_ADV_NORM_GROUP, 1.0f, 2.0f);
    float sa[8 * J];
    she_adv_stats_t st;
    she_rl_advantages(&c, r, 8, 4, NULL, NULL, 0, sa, NULL, &st);
    for (int i = 4; i < 8; i++)
        for (int j = 0; j < J; j++)
            CHECK(sa[i * J + j] == 0.0f);
    CHECK_EQ_INT(st.n_degenerate, 1);
    CHECK_CLOSE(sa[0], sqrt(1.5), TOL, 0);

    /* batch: R = 2, 0, 1, 1, 1.4 x4: mean 1.2, sum of squared deviations
     * 0.64 + 1.44 + 0.04 + 0.04 + 4 x 0.04 = 2.32, std sqrt(2.32 / 7); -1.2 / std = -2.08 is
     * clipped to -2 */
    c.norm = SHE_ADV_NORM_BATCH;
    she_rl_advantages(&c, r, 8, 4, NULL, NULL, 0, sa, NULL, &st);
    double sd = sqrt(2.32 / 7.0);
    CHECK_CLOSE(sa[0], 0.8 / sd, 1e-6, 0);
    CHECK_CLOSE(sa[J], -2.0, 0, 0);
    CHECK_CLOSE(sa[4 * J], 0.2 / sd, 1e-6, 0);
    CHECK_EQ_INT(st.n_degenerate, 0);

    /* a group of one is degenerate */
    c.norm = SHE_ADV_NORM_GROUP;
    she_rl_advantages(&c, r, 8, 1, NULL, NULL, 0, sa, NULL, &st);
    CHECK(sa[0] == 0.0f && sa[J] == 0.0f);
    CHECK_EQ_INT(st.n_degenerate, 8);
}

/* steps of one response: 1 1 2 3 3 4 5 5, then two padding positions */
enum { TS = 10 };
static const uint8_t srpo_steps[TS] = {1, 1, 2, 3, 3, 4, 5, 5, 0, 0};
static const uint8_t srpo_mask[TS] = {1, 1, 1, 1, 1, 1, 1, 1, 0, 0};

static void check_srpo_single(float gamma, float clip, const double *want_step, long n_clipped) {
    const float r[J] = {0.2f, 0.0f, 0.2f, 0.2f, 1.0f};
    she_adv_config_t c = adv_cfg(SHE_ADV_ALGO_SRPO, SHE_ADV_NORM_NONE, gamma, clip);
    float sa[J], adv[TS];
    she_adv_stats_t st;
    she_rl_advantages(&c, r, 1, 1, srpo_steps, srpo_mask, TS, sa, adv, &st);
    for (int j = 0; j < J; j++)
        CHECK_MSG(fabs(sa[j] - want_step[j]) <= TOL, "gamma %g clip %g step %d: %.9g != %.9g",
                  gamma, clip, j + 1, sa[j], want_step[j]);
    for (int t = 0; t < TS; t++)
        CHECK_CLOSE(adv[t], srpo_mask[t] ? want_step[srpo_steps[t] - 1] : 0.0, TOL, 0);
    CHECK_EQ_INT(st.n_clipped, n_clipped);
    CHECK_EQ_INT(st.n_tokens, 8);
    CHECK_EQ_INT(st.n_degenerate, 0);
}

static void test_srpo_eq6(void) {
    /* gamma 1: suffix sums of 0.2 0 0.2 0.2 1 */
    check_srpo_single(1.0f, 2.0f, (double[]){1.6, 1.4, 1.4, 1.2, 1.0}, 0);
    /* gamma 0.5: A5 = 1, A4 = 0.2 + 0.5, A3 = 0.2 + 0.35, A2 = 0 + 0.275, A1 = 0.2 + 0.1375 */
    check_srpo_single(0.5f, 2.0f, (double[]){0.3375, 0.275, 0.55, 0.7, 1.0}, 0);
    /* clipping at 1.3: the two step-1 tokens and the step-2 and two step-3 tokens */
    check_srpo_single(1.0f, 1.3f, (double[]){1.3, 1.3, 1.3, 1.2, 1.0}, 5);
}

/* three responses; step 1 is the same for all (degenerate); s = 1/sqrt(3) */
static const float srpo_group_rewards[3 * J] = {
    0.2f, 0.2f, 0.2f, 0.2f, 1.0f, /* z = 0,  2s,  s,   s,   s  */
    0.2f, 0.0f, 0.2f, 0.0f, 0.0f, /* z = 0, -s,   s,  -2s, -2s */
    0.2f, 0.0f, 0.0f, 0.2f, 1.0f, /* z = 0, -s,  -2s,  s,   s  */
};

static void test_srpo_group_norm(void) {
    const double s = 1.0 / sqrt(3.0);
    /* gamma 1 suffix sums, no clipping */
    const double want[3][J] = {{5 * s, 5 * s, 3 * s, 2 * s, s},
                               {-4 * s, -4 * s, -3 * s, -4 * s, -2 * s},
                               {-s, -s, 0, 2 * s, s}};
    she_adv_config_t c = adv_cfg(SHE_ADV_ALGO_SRPO, SHE_ADV_NORM_GROUP, 1.0f, 0.0f);
    float sa[3 * J];
    she_adv_stats_t st;
    she_rl_advantages(&c, srpo_group_rewards, 3, 3, NULL, NULL, 0, sa, NULL, &st);
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < J; j++)
            CHECK_MSG(fabs(sa[i * J + j] - want[i][j]) <= 1e-6, "resp %d step %d: %.9g != %.9g",
                      i, j + 1, sa[i * J + j], want[i][j]);
    CHECK_EQ_INT(st.n_degenerate, 1);

    /* gamma 0.5 on response 0: A5 = s, A4 = s + s/2, A3 = s + 0.75 s, A2 = 2s + 0.875 s,
     * A1 = 0 + 1.4375 s; clip 2 caps none of these (max 2.875 s = 1.66) */
    c.gamma = 0.5f;
    c.clip = 2.0f;
    she_rl_advantages(&c, srpo_group_rewards, 3, 3, NULL, NULL, 0, sa, NULL, NULL);
    const double want05[J] = {1.4375 * s, 2.875 * s, 1.75 * s, 1.5 * s, s};
    for (int j = 0; j < J; j++)
        CHECK_CLOSE(sa[j], want05[j], 1e-6, 0);

    /* gamma 1, clip 2: 5s = 2.89 and -4s = -2.31 are capped */
    c.gamma = 1.0f;
    she_rl_advantages(&c, srpo_group_rewards, 3, 3, NULL, NULL, 0, sa, NULL, NULL);
    CHECK_CLOSE(sa[0], 2.0, 0, 0);
    CHECK_CLOSE(sa[J + 0], -2.0, 0, 0);
    CHECK_CLOSE(sa[J + 2], -3 * s, 1e-6, 0);

    /* batch: two copies of the group.  Per step the sum of squared deviations doubles and the
     * count goes from 3 to 6, so the std shrinks by sqrt((2/5) / (1/2)) = sqrt(0.8) and every
     * z-score (and so every unclipped advantage) grows by 1/sqrt(0.8). */
    float r2[6 * J];
    memcpy(r2, srpo_group_rewards, sizeof(srpo_group_rewards));
    memcpy(r2 + 3 * J, srpo_group_rewards, sizeof(srpo_group_rewards));
    c = adv_cfg(SHE_ADV_ALGO_SRPO, SHE_ADV_NORM_BATCH, 1.0f, 0.0f);
    float sa2[6 * J];
    she_rl_advantages(&c, r2, 6, 3, NULL, NULL, 0, sa2, NULL, &st);
    for (int i = 0; i < 6; i++)
        for (int j = 0; j < J; j++)
            CHECK_CLOSE(sa2[i * J + j], want[i % 3][j] / sqrt(0.8), 1e-6, 0);
    CHECK_EQ_INT(st.n_degenerate, 1);

    /* per-token advantages follow the step indices */
    uint8_t steps[3 * TS], mask[3 * TS];
    for (int i = 0; i < 3; i++) {
        memcpy(steps + i * TS, srpo_steps, TS);
        memcpy(mask + i * TS, srpo_mask, TS);
    }
    float adv[3 * TS];
    c = adv_cfg(SHE_ADV_ALGO_SRPO, SHE_ADV_NORM_GROUP, 1.0f, 0.0f);
    she_rl_advantages(&c, srpo_group_rewards, 3, 3, steps, mask, TS, NULL, adv, &st);
    for (int i = 0; i < 3; i++)
        for (int t = 0; t < TS; t++)
            CHECK_CLOSE(adv[i * TS + t], mask[t] ? want[i][steps[t] - 1] : 0.0, 1e-6, 0);
    CHECK_EQ_INT(st.n_tokens, 24);
}

/* ---- policy loss ---- */

static void test_policy_loss_hand(void) {
    enum { B = 2, T = 3 };
    const float logp[B * T] = {-1.0f, -2.0f, -9.0f, -0.5f, -0.5f, -3.0f};
    const float old[B * T] = {-1.0f, -2.5f, -9.0f, -0.5f, -0.1f, -3.0f};
    const float ref[B * T] = {-1.2f, -2.0f, -9.0f, -0.5f, -0.5f, -3.0f};
    const float adv[B * T] = {1.0f, 1.0f, 7.0f, -1.0f, -1.0f, 0.5f};
    const uint8_t mask[B * T] = {1, 1, 0, 1, 1, 1};
    const float ent[B * T] = {1.0f, 2.0f, 100.0f, 3.0f, 4.0f, 5.0f};
    she_rl_loss_config_t c = {.clip_eps = 0.2f, .kl_beta = 0.1f};
    float d[B * T];
    she_rl_loss_stats_t st;
    double L = she_rl_policy_loss(&c, logp, old, ref, adv, mask, ent, B, T, d, &st);
    /* row 0 (2 tokens, weight 1/(2*2)): t0 rho 1, surrogate 1, KL with d = ref - logp = -0.2;
     *   t1 rho e^0.5 > 1.2 with A > 0: clipped, surrogate 1.2, no gradient; d = 0.
     * row 1 (3 tokens, weight 1/(2*3)), ref = logp (no KL): t0 surrogate -1; t1 rho e^-0.4 < 0.8
     *   with A < 0: clipped, surrogate -0.8, no gradient; t2 surrogate 0.5. */
    double k3 = exp(-0.2) + 0.2 - 1.0, beta = (double)0.1f, eps = (double)0.2f;
    double want = 0.25 * (-(1.0 + (1.0 + eps)) + beta * k3) + (-(-1.0 - (1.0 - eps) + 0.5)) / 6.0;
    CHECK_CLOSE(L, want, 1e-12, 1e-7);
    CHECK_CLOSE(st.loss, want, 1e-12, 1e-7);
    CHECK_CLOSE(st.kl_loss, 0.25 * beta * k3, 1e-12, 1e-6);
    CHECK_CLOSE(st.pg_loss, want - 0.25 * beta * k3, 1e-12, 1e-7);
    const double want_d[B * T] = {-0.25 * (1.0 - beta * (1.0 - exp(-0.2))), 0, 0, 1.0 / 6.0, 0,
                                  -0.5 / 6.0};
    for (int p = 0; p < B * T; p++)
        CHECK_CLOSE(d[p], want_d[p], 1e-7, 1e-6);
    CHECK_EQ_INT(st.n_tokens, 5);
    CHECK_EQ_INT(st.n_responses, 2);
    CHECK_CLOSE(st.clip_frac, 0.4, 1e-12, 0);
    CHECK_CLOSE(st.clip_frac_low, 0.2, 1e-12, 0);
    CHECK_CLOSE(st.clip_frac_high, 0.2, 1e-12, 0);
    CHECK_CLOSE(st.ratio_min, exp(-0.4), 1e-7, 1e-6);
    CHECK_CLOSE(st.ratio_max, exp(0.5), 1e-7, 1e-6);
    CHECK_CLOSE(st.ratio_mean, (3.0 + exp(0.5) + exp(-0.4)) / 5.0, 1e-7, 1e-6);
    CHECK_CLOSE(st.kl_mean, k3 / 5.0, 1e-9, 1e-6);
    CHECK_CLOSE(st.adv_mean, (1.0 + 1.0 - 1.0 - 1.0 + 0.5) / 5.0, 1e-12, 0);
    CHECK_CLOSE(st.entropy_mean, 3.0, 1e-12, 0);

    /* beta 0: no reference needed; an all-padding row changes nothing */
    enum { B3 = 3 };
    float logp3[B3 * T], old3[B3 * T], adv3[B3 * T], d3[B3 * T];
    uint8_t mask3[B3 * T];
    memcpy(logp3, logp, sizeof(logp));
    memcpy(old3, old, sizeof(old));
    memcpy(adv3, adv, sizeof(adv));
    memcpy(mask3, mask, sizeof(mask));
    for (int t = 0; t < T; t++) {
        logp3[B * T + t] = old3[B * T + t] = -1.0f;
        adv3[B * T + t] = 5.0f;
        mask3[B * T + t] = 0;
    }
    c.kl_beta = 0.0f;
    L = she_rl_policy_loss(&c, logp3, old3, NULL, adv3, mask3, NULL, B3, T, d3, &st);
    CHECK_CLOSE(L, want - 0.25 * beta * k3, 1e-12, 1e-7);
    CHECK_EQ_INT(st.n_responses, 2);
    CHECK(isnan(st.entropy_mean));
    CHECK(d3[B * T] == 0.0f && d3[B * T + 2] == 0.0f);
}

/* deterministic pseudo-random numbers for the tests */
static uint64_t rng_state = 42;
static double urand(void) {
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(rng_state >> 11) * 0x1.0p-53;
}

/* The loss of Eq. 6 written out again, in double, for finite differences. */
static double ref_loss(double eps, double beta, const double *logp, const float *old,
                       const float *ref, const float *adv, const uint8_t *mask, int B, int T) {
    int rows = 0;
    double total = 0.0;
    for (int i = 0; i < B; i++) {
        double s = 0.0;
        int n = 0;
        for (int t = 0; t < T; t++) {
            int p = i * T + t;
            if (!mask[p])
                continue;
            double rho = exp(logp[p] - old[p]);
            double rc = fmin(fmax(rho, 1.0 - eps), 1.0 + eps);
            double d = ref[p] - logp[p];
            s += fmin(rho * adv[p], rc * adv[p]) - beta * (exp(d) - d - 1.0);
            n++;
        }
        if (n) {
            total += s / n;
            rows++;
        }
    }
    return rows ? -total / rows : 0.0;
}

static void test_policy_loss_fd(void) {
    enum { G = 4, B = 8, T = 14 };
    float rewards[B * J], logp[B * T], old[B * T], ref[B * T], adv[B * T], d[B * T];
    uint8_t step[B * T], mask[B * T];
    for (int i = 0; i < B; i++) {
        for (int j = 0; j < J; j++)
            rewards[i * J + j] = (j < 4 ? 0.2f : 1.0f) * (float)(urand() < 0.5);
        int len = 3 + (int)(urand() * (T - 3)); /* right padding */
        for (int t = 0; t < T; t++) {
            int p = i * T + t;
            mask[p] = t < len && !(t == 1 && i == 2); /* one hole */
            step[p] = (uint8_t)(1 + (t * J) / T);
            logp[p] = (float)(-0.05 - 3.0 * urand());
            old[p] = logp[p] + (float)(0.6 * (urand() - 0.5));
            ref[p] = logp[p] + (float)(0.6 * (urand() - 0.5));
        }
    }
    const double eps = (double)0.2f;
    /* keep the ratios away from the clip kinks, where the loss is not differentiable */
    for (int p = 0; p < B * T; p++) {
        double rho = exp((double)logp[p] - old[p]);
        if (fabs(rho - (1.0 - eps)) < 1e-3 || fabs(rho - (1.0 + eps)) < 1e-3)
            old[p] += 0.01f;
    }
    for (int algo = 0; algo < 2; algo++)
        for (int norm = 0; norm < 3; norm++) {
            she_adv_config_t ac = adv_cfg(algo, norm, 0.9f, 2.0f);
            ac.delta = 1e-6f;
            she_rl_advantages(&ac, rewards, B, G, step, mask, T, NULL, adv, NULL);
            she_rl_loss_config_t c = {.clip_eps = 0.2f, .kl_beta = 0.3f};
            double beta = (double)c.kl_beta;
            double L = she_rl_policy_loss(&c, logp, old, ref, adv, mask, NULL, B, T, d, NULL);
            double x[B * T];
            for (int p = 0; p < B * T; p++)
                x[p] = logp[p];
            double L_ref = ref_loss(eps, beta, x, old, ref, adv, mask, B, T);
            CHECK_MSG(fabs(L - L_ref) <= 1e-12 + 1e-12 * fabs(L_ref), "%s/%s: L %.15g ref %.15g",
                      she_adv_algo_name(algo), she_adv_norm_name(norm), L, L_ref);
            /* central differences of the double reference, h = 1e-4: error ~ h^2 * L''' */
            for (int p = 0; p < B * T; p++) {
                const double h = 1e-4;
                double keep = x[p];
                x[p] = keep + h;
                double lp = ref_loss(eps, beta, x, old, ref, adv, mask, B, T);
                x[p] = keep - h;
                double lm = ref_loss(eps, beta, x, old, ref, adv, mask, B, T);
                x[p] = keep;
                double fd = (lp - lm) / (2 * h);
                CHECK_MSG(fabs(d[p] - fd) <= 1e-7 + 1e-5 * fabs(fd),
                          "%s/%s p %d: dlogp %.9g fd %.9g", she_adv_algo_name(algo),
                          she_adv_norm_name(norm), p, d[p], fd);
            }

            /* and central differences of the function itself (float inputs, h = 1e-3: the
             * perturbed float carries ~1e-7 rounding, 1e-4 relative of the difference) */
            for (int p = 0; p < B * T; p += 3) {
                const float h = 1e-3f;
                float keep = logp[p];
                logp[p] = keep + h;
                double hp = (double)logp[p] - keep;
                double lp = she_rl_policy_loss(&c, logp, old, ref, adv, mask, NULL, B, T, d, NULL);
                logp[p] = keep - h;
                double hm = keep - (double)logp[p];
                double lm = she_rl_policy_loss(&c, logp, old, ref, adv, mask, NULL, B, T, d, NULL);
                logp[p] = keep;
                she_rl_policy_loss(&c, logp, old, ref, adv, mask, NULL, B, T, d, NULL);
                double fd = (lp - lm) / (hp + hm);
                CHECK_MSG(fabs(d[p] - fd) <= 1e-6 + 1e-3 * fabs(fd),
                          "self %s/%s p %d: dlogp %.9g fd %.9g", she_adv_algo_name(algo),
                          she_adv_norm_name(norm), p, d[p], fd);
            }
        }
}

/* ---- DPO ---- */

static void test_dpo_hand(void) {
    enum { P = 2, T = 3 };
    /* pair 0: chosen sum -3 vs ref -3.5 (+0.5), rejected sum -4 vs ref -3 (-1): z = 0.1 * 1.5
     * pair 1: chosen sum -2 vs ref -1 (-1), rejected sum -1 vs ref -1.5 (+0.5): z = -0.15 */
    const float lc[P * T] = {-1, -2, -50, -1, -1, 0};
    const uint8_t mc[P * T] = {1, 1, 0, 1, 1, 0};
    const float lr[P * T] = {-1, -1, -2, -1, 0, 0};
    const uint8_t mr[P * T] = {1, 1, 1, 1, 0, 0};
    const float rc[P] = {-3.5f, -1.0f}, rr[P] = {-3.0f, -1.5f};
    float dc[P * T], dr[P * T];
    she_dpo_stats_t st;
    double beta = (double)0.1f;
    double L = she_dpo_loss(0.1f, lc, mc, rc, lr, mr, rr, P, T, dc, dr, &st);
    double z0 = beta * 1.5, z1 = -beta * 1.5;
    double want = (log1p(exp(-z0)) + log1p(exp(-z1))) / 2;
    CHECK_CLOSE(L, want, 1e-12, 1e-9);
    double g0 = -beta / (1 + exp(z0)) / 2, g1 = -beta / (1 + exp(z1)) / 2;
    const double want_c[P * T] = {g0, g0, 0, g1, g1, 0};
    const double want_r[P * T] = {-g0, -g0, -g0, -g1, 0, 0};
    for (int p = 0; p < P * T; p++) {
        CHECK_CLOSE(dc[p], want_c[p], 1e-9, 1e-6);
        CHECK_CLOSE(dr[p], want_r[p], 1e-9, 1e-6);
    }
    CHECK_CLOSE(st.reward_acc, 0.5, 0, 0);
    CHECK_CLOSE(st.margin_mean, 0.0, 1e-12, 0);
    CHECK_CLOSE(st.chosen_reward, beta * (0.5 - 1.0) / 2, 1e-9, 0);
    CHECK_CLOSE(st.rejected_reward, beta * (-1.0 + 0.5) / 2, 1e-9, 0);
    CHECK_EQ_INT(st.n_pairs, 2);

    /* a large margin does not overflow */
    const float big_c[1] = {0.0f}, big_r[1] = {-5000.0f}, zero[1] = {0.0f};
    const uint8_t one[1] = {1};
    float d1[1], d2[1];
    L = she_dpo_loss(1.0f, big_c, one, zero, big_r, one, zero, 1, 1, d1, d2, NULL);
    CHECK(isfinite(L) && L >= 0.0 && L < 1e-300);
    L = she_dpo_loss(1.0f, big_r, one, zero, big_c, one, zero, 1, 1, d1, d2, NULL);
    CHECK_CLOSE(L, 5000.0, 0, 1e-12);
    CHECK_CLOSE(d1[0], -1.0, 0, 1e-12);
}

static void test_dpo_fd(void) {
    enum { P = 3, T = 7 };
    float l[2 * P * T], d[2 * P * T], ref[2 * P];
    uint8_t m[2 * P * T];
    for (int p = 0; p < 2 * P * T; p++) {
        l[p] = (float)(-0.1 - 4.0 * urand());
        m[p] = urand() < 0.8;
    }
    for (int i = 0; i < 2 * P; i++)
        ref[i] = (float)(-10.0 - 5.0 * urand());
    /* chosen rows 0..P-1 and rejected rows P..2P-1 of one batch */
    const float beta = 0.2f;
    she_dpo_loss(beta, l, m, ref, l + P * T, m + P * T, ref + P, P, T, d, d + P * T, NULL);
    float dd[2 * P * T];
    for (int p = 0; p < 2 * P * T; p++) {
        const float h = 1e-3f;
        float keep = l[p];
        l[p] = keep + h;
        double hp = (double)l[p] - keep;
        double lp = she_dpo_loss(beta, l, m, ref, l + P * T, m + P * T, ref + P, P, T, dd,
                                 dd + P * T, NULL);
        l[p] = keep - h;
        double hm = keep - (double)l[p];
        double lm = she_dpo_loss(beta, l, m, ref, l + P * T, m + P * T, ref + P, P, T, dd,
                                 dd + P * T, NULL);
        l[p] = keep;
        double fd = (lp - lm) / (hp + hm);
        CHECK_MSG(fabs(d[p] - fd) <= 1e-7 + 1e-4 * fabs(fd), "p %d: d %.9g fd %.9g", p, d[p], fd);
        if (!m[p])
            CHECK(d[p] == 0.0f);
    }
}

int main(void) {
    RUN(test_reward_modes);
    RUN(test_reward_stats);
    RUN(test_grpo_eq4);
    RUN(test_grpo_degenerate_and_batch);
    RUN(test_srpo_eq6);
    RUN(test_srpo_group_norm);
    RUN(test_policy_loss_hand);
    RUN(test_policy_loss_fd);
    RUN(test_dpo_hand);
    RUN(test_dpo_fd);
    TEST_DONE();
}
