/* test_learner.c -- the learner on a tiny policy: the loss gradient raises the probability of
 * rewarded responses (GRPO) and of rewarded steps (SRPO), the learner's log-probs equal the
 * sampler's behaviour log-probs when the policy has not changed, malformed batches are refused
 * without touching the model; and the DPO loss decreases on a tiny set. */
#include "sampler.h"
#include "test.h"
#include "trainer/dpo.h"
#include "trainer/learner.h"

enum { V = 50, MAXB = 8, MAXS = 40, G = 4, PL = 4, RL = 6 };

static she_model_t *tiny_model(uint64_t seed) {
    char errstr[512];
    she_model_config_t cfg = {.vocab_size = V, .hidden_size = 32, .intermediate_size = 64,
                              .n_layers = 2, .n_heads = 2, .n_kv_heads = 1,
                              .max_position_embeddings = 64, .rope_theta = 10000.0,
                              .rms_norm_eps = 1e-5, .tie_word_embeddings = 1};
    snprintf(cfg.model_type, sizeof(cfg.model_type), "llama");
    she_model_t *m = NULL;
    if (she_model_new(&cfg, MAXB, MAXS, &m, errstr, sizeof(errstr)) != SHE_OK)
        return NULL;
    she_model_init_weights(m, seed, 0.1f);
    return m;
}

static const int32_t prompt[PL] = {1, 2, 3, 4};

/* Per-token log-probs of response r after the prompt at temperature 1. */
static void response_logp(she_model_t *m, const int32_t *r, int n, float *out) {
    char errstr[512];
    int32_t tok[MAXS], tg[MAXS];
    float lp[MAXS];
    int T = PL + n;
    for (int t = 0; t < T; t++) {
        tok[t] = t < PL ? prompt[t] : r[t - PL];
        tg[t] = t >= PL - 1 && t < T - 1 ? r[t + 1 - PL] : -1;
    }
    CHECK_OK(she_model_forward(m, tok, NULL, tg, 1, T, 1.0f, lp, NULL, errstr, sizeof(errstr)));
    for (int t = 0; t < n; t++)
        out[t] = lp[PL - 1 + t];
}

/* One group of G fixed responses, behaviour log-probs from the current policy. */
typedef struct fixture {
    int32_t prompt[PL];
    int32_t tok[G][RL];
    float lp[G][RL];
    she_step_span_t spans[G][2];
    she_response_t resp[G];
    she_response_reward_t rew[G];
    she_rewarded_group_t group;
} fixture_t;

static void fixture_fill(fixture_t *f, she_model_t *m) {
    memset(&f->group, 0, sizeof(f->group));
    memcpy(f->prompt, prompt, sizeof(prompt));
    for (int k = 0; k < G; k++) {
        for (int t = 0; t < RL; t++)
            f->tok[k][t] = (int32_t)(10 + 7 * k + t) % V;
        response_logp(m, f->tok[k], RL, f->lp[k]);
        /* tokens 0..2 are step 1, 3..5 step 5 */
        f->spans[k][0] = (she_step_span_t){1, 0, 3};
        f->spans[k][1] = (she_step_span_t){5, 3, RL};
        f->resp[k] = (she_response_t){.tokens = f->tok[k], .logprobs = f->lp[k], .n_tokens = RL,
                                      .spans = f->spans[k], .n_spans = 2};
    }
    f->group.rollout.prompt_tokens = f->prompt;
    f->group.rollout.n_prompt_tokens = PL;
    f->group.rollout.responses = f->resp;
    f->group.rollout.n_responses = G;
    f->group.rewards = f->rew;
    f->group.n_rewards = G;
}

static double sum_range(const float *v, int a, int b) {
    double s = 0;
    for (int i = a; i < b; i++)
        s += v[i];
    return s;
}

static void test_grpo_raises_rewarded_response(void) {
    char errstr[512];
    she_model_t *m = tiny_model(3);
    REQUIRE(m != NULL);
    she_adamw_t *opt = she_adamw_new(m->n_params);
    she_learner_config_t lc = she_learner_defaults();
    lc.adv.algo = SHE_ADV_ALGO_GRPO;
    lc.loss.kl_beta = 0;
    lc.temperature = 1.0f;
    lc.micro_batch = 3; /* 4 rows: two micro-batches, gradients accumulated */
    she_learner_t *ln = NULL;
    REQUIRE_OK(she_learner_new(m, opt, NULL, &lc, &ln, errstr, sizeof(errstr)));
    fixture_t f;
    float before[G][RL], after[G][RL];
    fixture_fill(&f, m);
    memcpy(before, f.lp, sizeof(before));
    for (int it = 0; it < 8; it++) {
        fixture_fill(&f, m); /* on-policy: behaviour log-probs of the current policy */
        memset(f.rew, 0, sizeof(f.rew));
        f.rew[0].step_rewards[4] = 1.0f; /* only response 0 is right */
        f.rew[0].pass = 1;
        she_learner_stats_t st;
        REQUIRE_OK(she_learner_step(ln, &f.group, 1, 1e-2f, &st, errstr, sizeof(errstr)));
        CHECK(st.grad_norm > 0);
        CHECK_EQ_INT(st.n_rows, G);
        CHECK_EQ_INT(st.n_tokens, G * RL);
        CHECK(st.logp_gap_max < 1e-4); /* the forward reproduces the log-probs just computed */
    }
    for (int k = 0; k < G; k++)
        response_logp(m, f.tok[k], RL, after[k]);
    double d0 = sum_range(after[0], 0, RL) - sum_range(before[0], 0, RL);
    double dother = 0;
    for (int k = 1; k < G; k++)
        dother += sum_range(after[k], 0, RL) - sum_range(before[k], 0, RL);
    fprintf(stderr, "   rewarded response log-prob %+.3f, the others %+.3f\n", d0, dother);
    CHECK(d0 > 0.5);
    CHECK(dother < 0);
    she_learner_free(ln);
    she_adamw_free(opt);
    she_model_free(m);
}

/* SRPO: a reward on step 1 only moves step 1's tokens (step 5's advantage is a degenerate 0). */
static void test_srpo_credits_the_rewarded_step(void) {
    char errstr[512];
    she_model_t *m = tiny_model(4);
    REQUIRE(m != NULL);
    she_adamw_t *opt = she_adamw_new(m->n_params);
    she_learner_config_t lc = she_learner_defaults();
    lc.adv.algo = SHE_ADV_ALGO_SRPO;
    lc.adv.norm = SHE_ADV_NORM_GROUP;
    lc.loss.kl_beta = 0;
    lc.temperature = 1.0f;
    lc.micro_batch = G;
    she_learner_t *ln = NULL;
    REQUIRE_OK(she_learner_new(m, opt, NULL, &lc, &ln, errstr, sizeof(errstr)));
    fixture_t f;
    fixture_fill(&f, m);
    float before[G][RL], after[G][RL];
    memcpy(before, f.lp, sizeof(before));
    for (int it = 0; it < 8; it++) {
        fixture_fill(&f, m);
        memset(f.rew, 0, sizeof(f.rew));
        f.rew[0].step_rewards[0] = 0.2f;
        she_learner_stats_t st;
        REQUIRE_OK(she_learner_step(ln, &f.group, 1, 1e-2f, &st, errstr, sizeof(errstr)));
        /* steps 2..5 of every response: degenerate sets */
        CHECK(st.adv.n_degenerate >= 1);
    }
    for (int k = 0; k < G; k++)
        response_logp(m, f.tok[k], RL, after[k]);
    double d1 = sum_range(after[0], 0, 3) - sum_range(before[0], 0, 3);
    double d5 = sum_range(after[0], 3, RL) - sum_range(before[0], 3, RL);
    fprintf(stderr, "   rewarded step 1 log-prob %+.3f, its step 5 %+.3f\n", d1, d5);
    CHECK(d1 > 0.3);
    CHECK(fabs(d5) < d1);
    she_learner_free(ln);
    she_adamw_free(opt);
    she_model_free(m);
}

/* Behaviour log-probs from the sampler (temperature 0.99, top-k) equal the learner's forward on
 * an unchanged policy; lr 0 leaves the parameters as they were. */
static void test_rollout_learner_gap(void) {
    char errstr[512];
    she_model_t *m = tiny_model(5);
    REQUIRE(m != NULL);
    she_sampler_t *s = NULL;
    REQUIRE_OK(she_sampler_new(m, 2 * G, MAXS, &s, errstr, sizeof(errstr)));
    enum { NEW = 12 };
    const int32_t p2[PL] = {7, 8, 9, 10};
    const int32_t *rows[2 * G];
    int lens[2 * G];
    for (int b = 0; b < 2 * G; b++) {
        rows[b] = b < G ? prompt : p2;
        lens[b] = PL;
    }
    she_sample_params_t sp = {.temperature = 0.99f, .top_k = 20, .top_p = 1.0f,
                              .max_new_tokens = NEW};
    int32_t out[2 * G * NEW];
    float lp[2 * G * NEW];
    int olen[2 * G];
    REQUIRE_OK(she_sampler_generate(s, rows, lens, 2 * G, &sp, 9, out, lp, NULL, olen, NULL,
                                    errstr, sizeof(errstr)));
    she_response_t resp[2 * G];
    she_response_reward_t rew[2 * G];
    she_rewarded_group_t groups[2];
    memset(groups, 0, sizeof(groups));
    memset(rew, 0, sizeof(rew));
    for (int b = 0; b < 2 * G; b++) {
        resp[b] = (she_response_t){.tokens = out + b * NEW, .logprobs = lp + b * NEW,
                                   .n_tokens = olen[b]};
        rew[b].step_rewards[4] = (float)(b % 2);
    }
    for (int i = 0; i < 2; i++) {
        groups[i].rollout.prompt_tokens = (int32_t *)(i == 0 ? prompt : p2);
        groups[i].rollout.n_prompt_tokens = PL;
        groups[i].rollout.responses = resp + i * G;
        groups[i].rollout.n_responses = G;
        groups[i].rewards = rew + i * G;
        groups[i].n_rewards = G;
    }
    float *saved = malloc(sizeof(float) * m->n_params);
    memcpy(saved, m->params, sizeof(float) * m->n_params);
    she_adamw_t *opt = she_adamw_new(m->n_params);
    she_model_t *ref = tiny_model(5);
    she_learner_config_t lc = she_learner_defaults();
    lc.temperature = 0.99f;
    lc.micro_batch = 5;
    she_learner_t *ln = NULL;
    REQUIRE_OK(she_learner_new(m, opt, ref, &lc, &ln, errstr, sizeof(errstr)));
    she_learner_stats_t st;
    REQUIRE_OK(she_learner_step(ln, groups, 2, 0.0f, &st, errstr, sizeof(errstr)));
    fprintf(stderr, "   rollout-vs-learner log-prob gap: mean %.2e, max %.2e over %ld tokens\n",
            st.logp_gap_mean, st.logp_gap_max, st.gap_tokens);
    CHECK_EQ_INT(st.gap_tokens, st.n_tokens);
    CHECK(st.logp_gap_max < 1e-4);
    CHECK_CLOSE(st.loss.ratio_min, 1.0, 1e-4, 0);
    CHECK_CLOSE(st.loss.ratio_max, 1.0, 1e-4, 0);
    CHECK_CLOSE(st.loss.kl_mean, 0.0, 1e-6, 0); /* the reference is the same policy */
    CHECK_CLOSE(st.loss.clip_frac, 0.0, 0, 0);
    CHECK(memcmp(saved, m->params, sizeof(float) * m->n_params) == 0);

    /* malformed batches are refused before anything changes */
    groups[1].rollout.n_responses = G - 1;
    CHECK(she_learner_step(ln, groups, 2, 1e-2f, NULL, errstr, sizeof(errstr)) ==
          SHE_ERR_INVALID);
    groups[1].rollout.n_responses = G;
    int32_t keep = out[3];
    out[3] = V + 3;
    CHECK(she_learner_step(ln, groups, 2, 1e-2f, NULL, errstr, sizeof(errstr)) ==
          SHE_ERR_INVALID);
    out[3] = keep;
    CHECK(memcmp(saved, m->params, sizeof(float) * m->n_params) == 0);
    free(saved);
    she_learner_free(ln);
    she_adamw_free(opt);
    she_model_free(ref);
    she_sampler_free(s);
    she_model_free(m);
}

static void test_dpo_loss_decreases(void) {
    char errstr[512];
    she_model_t *m = tiny_model(6), *ref = tiny_model(6);
    REQUIRE(m != NULL && ref != NULL);
    she_dpo_set_t set = {0};
    for (int i = 0; i < 6; i++) {
        int32_t c[5], r[7];
        for (int t = 0; t < 5; t++)
            c[t] = (int32_t)(11 + 3 * i + t) % V;
        for (int t = 0; t < 7; t++)
            r[t] = (int32_t)(29 + 5 * i + 2 * t) % V;
        she_dpo_set_add(&set, prompt, PL - (i % 2), c, 5, r, 7 - (i % 3));
    }
    she_device_t cpu = {SHE_DEVICE_CPU, 0, SHE_MATH_FP32};
    she_engine_t *e = NULL, *ref_e = NULL;
    REQUIRE_OK(she_engine_new(ref, NULL, &cpu, &ref_e, errstr, sizeof(errstr)));
    REQUIRE_OK(she_dpo_ref_logps(ref_e, &set, 4, errstr, sizeof(errstr)));
    she_adamw_t *opt = she_adamw_new(m->n_params);
    REQUIRE_OK(she_engine_new(m, opt, &cpu, &e, errstr, sizeof(errstr)));
    she_adamw_config_t hp = she_adamw_defaults();
    int idx[6] = {0, 1, 2, 3, 4, 5};
    double first = 0, last = 0;
    for (int it = 0; it < 10; it++) {
        she_dpo_stats_t st;
        float gn;
        REQUIRE_OK(she_dpo_step(e, &hp, 5e-3f, 1.0f, 0.5f, &set, idx, 6, 4, &st, &gn, errstr,
                                sizeof(errstr)));
        CHECK_EQ_INT(st.n_pairs, 6);
        if (it == 0) {
            first = st.loss;
            /* the policy equals the reference: z = 0 for every pair */
            CHECK_CLOSE(st.loss, log(2.0), 1e-5, 0);
        }
        last = st.loss;
    }
    fprintf(stderr, "   DPO loss %.4f -> %.4f\n", first, last);
    CHECK(last < first - 0.1);
    she_dpo_set_free(&set);
    she_engine_free(e);
    she_engine_free(ref_e);
    she_adamw_free(opt);
    she_model_free(m);
    she_model_free(ref);
}

int main(void) {
    RUN(test_grpo_raises_rewarded_response);
    RUN(test_srpo_credits_the_rewarded_step);
    RUN(test_rollout_learner_gap);
    RUN(test_dpo_loss_decreases);
    TEST_DONE();
}
