/* test_selection.c -- trainer/selection: offline rejection sampling drops exactly the all-same
 * groups; the dynamic difficulty sampler admits in-band prompts, widens and never deadlocks on
 * all-hard, all-easy or never-observed data; quotas balance a skewed mix and release a cell that
 * stops arriving; curriculum stages filter and stop on steps and on a plateau; the reward-model
 * band; query-type caps (a capped type's share stays at its cap, caps replaced at run time keep
 * the counts of types still capped, bad caps refused); streaming curriculum stages placing
 * prompts by their recent pass rate; and the JSON state round trip (identical decisions after a
 * reload). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"
#include "trainer/selection.h"

static uint64_t rng_state = 7;
static double urand(void) {
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(rng_state >> 11) * 0x1.0p-53;
}

static she_sel_item_t item(const char *id) {
    she_sel_item_t it = {.id = id, .offline_pass = NAN, .rm_score = NAN};
    return it;
}

static void test_rejection_exact(void) {
    enum { N = 300, G = 8 };
    uint8_t pass[N * G], keep[N];
    float rate[N];
    int want_kept = 0, want_right = 0, want_wrong = 0;
    for (int p = 0; p < N; p++) {
        int kind = p % 5; /* all right, all wrong, exactly one right, exactly one wrong, random */
        int k = 0;
        for (int i = 0; i < G; i++) {
            int v = kind == 0 ? 1 : kind == 1 ? 0 : kind == 2 ? i == 3 : kind == 3 ? i != 5
                                                                                   : urand() < 0.5;
            pass[p * G + i] = (uint8_t)(v ? 1 + (i % 3) : 0); /* any non-zero is a pass */
            k += v;
        }
        want_kept += k > 0 && k < G;
        want_right += k == G;
        want_wrong += k == 0;
    }
    she_sel_counts_t counts;
    memset(&counts, 0, sizeof(counts));
    int kept = she_sel_reject(pass, N, G, keep, rate, &counts);
    CHECK_EQ_INT(kept, want_kept);
    CHECK_EQ_INT(counts.n[SHE_SEL_KEEP_MIXED], want_kept);
    CHECK_EQ_INT(counts.n[SHE_SEL_DROP_ALL_CORRECT], want_right);
    CHECK_EQ_INT(counts.n[SHE_SEL_DROP_ALL_WRONG], want_wrong);
    for (int p = 0; p < N; p++) {
        int k = 0;
        for (int i = 0; i < G; i++)
            k += pass[p * G + i] != 0;
        CHECK_EQ_INT(keep[p], k > 0 && k < G);
        CHECK_CLOSE(rate[p], (double)k / G, 1e-7, 0);
    }
    CHECK(keep[2] == 1 && keep[3] == 1 && keep[0] == 0 && keep[1] == 0);
    CHECK_STR(she_sel_reason_name(SHE_SEL_DROP_ALL_WRONG), "drop_all_wrong");
}

static she_selector_t *make(const she_selector_config_t *cfg) {
    char errstr[512] = "";
    she_selector_t *sel = she_selector_new(cfg, errstr, sizeof(errstr));
    CHECK_MSG(sel != NULL, "%s", errstr);
    return sel;
}

/* Offers n_offers prompts drawn round-robin from n_prompts ids; every admitted prompt's G = 8
 * rollouts pass with probability rate(prompt index).  Returns the admitted count of the last
 * `tail` offers and the longest run of consecutive skips. */
static int run_stream(she_selector_t *sel, int n_prompts, int n_offers, double (*rate)(int),
                      int tail, int *longest_skip_run) {
    int admitted_tail = 0, run = 0;
    *longest_skip_run = 0;
    char id[32];
    for (int o = 0; o < n_offers; o++) {
        int p = o % n_prompts;
        snprintf(id, sizeof(id), "p%d", p);
        she_sel_item_t it = item(id);
        she_sel_reason_t r = she_selector_decide(sel, &it);
        if (she_sel_admitted(r)) {
            int k = 0;
            for (int i = 0; i < 8; i++)
                k += urand() < rate(p);
            she_selector_observe(sel, id, k, 8);
            admitted_tail += o >= n_offers - tail;
            run = 0;
        } else if (++run > *longest_skip_run) {
            *longest_skip_run = run;
        }
    }
    return admitted_tail;
}

static double rate_zero(int p) { (void)p; return 0.0; }
static double rate_one(int p) { (void)p; return 1.0; }
static double rate_half_or_one(int p) { return p % 2 ? 1.0 : 0.5; }

static void test_difficulty_all_hard(void) {
    she_selector_config_t cfg = she_selector_defaults();
    she_selector_t *sel = make(&cfg);
    REQUIRE(sel != NULL);
    int longest;
    int tail = run_stream(sel, 40, 4000, rate_zero, 1000, &longest);
    she_selector_status_t st;
    she_selector_status(sel, &st);
    CHECK_CLOSE(st.lo, cfg.lo_min, 1e-7, 0);
    CHECK(st.n_widen >= 1);
    /* after the unseen prompts only retries and the fallback admit: about min_admit */
    CHECK_MSG(tail >= 200 && tail <= 400, "admitted %d of the last 1000", tail);
    CHECK(st.counts.n[SHE_SEL_ADMIT_FALLBACK] > 0);
    CHECK(st.counts.n[SHE_SEL_SKIP_TOO_HARD] > 0);
    CHECK_EQ_INT(st.counts.n[SHE_SEL_ADMIT_IN_BAND], 0);
    CHECK_MSG(longest <= 2 * cfg.window, "longest run of skips %d", longest);
    she_selector_free(sel);
}

static void test_difficulty_all_easy(void) {
    she_selector_config_t cfg = she_selector_defaults();
    she_selector_t *sel = make(&cfg);
    REQUIRE(sel != NULL);
    int longest;
    int tail = run_stream(sel, 40, 4000, rate_one, 1000, &longest);
    she_selector_status_t st;
    she_selector_status(sel, &st);
    CHECK_CLOSE(st.hi, cfg.hi_max, 1e-7, 0);
    CHECK_CLOSE(st.lo, cfg.lo0, 1e-7, 0); /* only the rejecting side widens */
    CHECK_MSG(tail >= 200 && tail <= 400, "admitted %d of the last 1000", tail);
    CHECK(st.counts.n[SHE_SEL_SKIP_TOO_EASY] > 0);
    CHECK_MSG(longest <= 4 * cfg.window, "longest run of skips %d", longest);
    CHECK_EQ_INT(st.n_prompts_seen, 40);
    CHECK_CLOSE(she_selector_pass_rate(sel, "p3"), 1.0, 0, 0);
    CHECK_CLOSE(she_selector_pass_rate(sel, "nope"), -1.0, 0, 0);
    she_selector_free(sel);
}

static void test_difficulty_band(void) {
    /* half the prompts pass at 0.5 (in band), half always (too easy): enough flows, so the band
     * stays put, every in-band prompt is admitted and no easy one is */
    she_selector_config_t cfg = she_selector_defaults();
    cfg.ema_alpha = 1.0f; /* the recent pass rate is the last group's */
    cfg.retry_after = 0;  /* no re-measuring: the easy prompts stay skipped */
    she_selector_t *sel = make(&cfg);
    REQUIRE(sel != NULL);
    char id[32];
    for (int p = 0; p < 40; p++) { /* observed once beforehand, exactly */
        snprintf(id, sizeof(id), "p%d", p);
        she_selector_observe(sel, id, p % 2 ? 8 : 4, 8);
    }
    int64_t admitted_easy = 0, admitted_mid = 0;
    for (int o = 0; o < 2000; o++) {
        int p = o % 40;
        snprintf(id, sizeof(id), "p%d", p);
        she_sel_item_t it = item(id);
        she_sel_reason_t r = she_selector_decide(sel, &it);
        if (she_sel_admitted(r)) {
            admitted_easy += p % 2;
            admitted_mid += !(p % 2);
            she_selector_observe(sel, id, p % 2 ? 8 : 4, 8);
        }
    }
    she_selector_status_t st;
    she_selector_status(sel, &st);
    CHECK_EQ_INT(admitted_mid, 1000);
    CHECK_EQ_INT(admitted_easy, 0);
    CHECK_EQ_INT(st.counts.n[SHE_SEL_SKIP_TOO_EASY], 1000);
    CHECK_EQ_INT(st.n_widen, 0);
    CHECK_CLOSE(st.lo, cfg.lo0, 1e-7, 0);
    CHECK_CLOSE(st.hi, cfg.hi0, 1e-7, 0);
    she_selector_free(sel);

    /* the same stream with random pass-rate draws: a mid prompt that once drew 8/8 (or 0/8) is
     * re-measured after retry_after skips instead of being lost for good */
    cfg.retry_after = 8;
    sel = make(&cfg);
    REQUIRE(sel != NULL);
    int longest;
    int tail = run_stream(sel, 40, 4000, rate_half_or_one, 1000, &longest);
    CHECK_MSG(tail >= 300, "admitted %d of the last 1000", tail);
    she_selector_free(sel);
}

static void test_difficulty_retry(void) {
    she_selector_config_t cfg = she_selector_defaults();
    cfg.retry_after = 4;
    cfg.ema_alpha = 1.0f;
    she_selector_t *sel = make(&cfg);
    REQUIRE(sel != NULL);
    she_selector_observe(sel, "easy", 8, 8);
    she_selector_observe(sel, "mid", 4, 8);
    she_sel_item_t e = item("easy"), m = item("mid");
    /* in-band traffic keeps the window well fed, so no fallback */
    for (int round = 0; round < 3; round++) {
        for (int k = 0; k < 4; k++) {
            CHECK(she_selector_decide(sel, &m) == SHE_SEL_ADMIT_IN_BAND);
            CHECK(she_selector_decide(sel, &e) == SHE_SEL_SKIP_TOO_EASY);
        }
        CHECK(she_selector_decide(sel, &e) == SHE_SEL_ADMIT_RETRY);
    }
    /* the retry measured it in band now: admitted from then on */
    she_selector_observe(sel, "easy", 5, 8);
    CHECK(she_selector_decide(sel, &e) == SHE_SEL_ADMIT_IN_BAND);
    she_selector_free(sel);
}

static void test_difficulty_restores(void) {
    /* starve the band wide open, then give it plenty: it moves back to the initial band */
    she_selector_config_t cfg = she_selector_defaults();
    cfg.ema_alpha = 1.0f;
    she_selector_t *sel = make(&cfg);
    REQUIRE(sel != NULL);
    int longest;
    run_stream(sel, 40, 2000, rate_one, 10, &longest);
    she_selector_status_t st;
    she_selector_status(sel, &st);
    CHECK_CLOSE(st.hi, cfg.hi_max, 1e-7, 0);
    char id[32];
    for (int o = 0; o < 2000; o++) { /* 40 fresh prompts at 0.5: all in band */
        snprintf(id, sizeof(id), "q%d", o % 40);
        she_sel_item_t it = item(id);
        if (she_sel_admitted(she_selector_decide(sel, &it)))
            she_selector_observe(sel, id, 4, 8);
    }
    she_selector_status(sel, &st);
    CHECK_CLOSE(st.hi, cfg.hi0, 1e-6, 0);
    CHECK(st.n_restore >= 1);
    she_selector_free(sel);
}

static void test_unseen_probability(void) {
    /* prompts that are never observed: p_unseen decides; with p_unseen = 0 the fallback still
     * lets min_admit of them through (otherwise nothing could ever be observed) */
    const float ps[3] = {0.0f, 0.5f, 1.0f};
    for (int k = 0; k < 3; k++) {
        she_selector_config_t cfg = she_selector_defaults();
        cfg.p_unseen = ps[k];
        she_selector_t *sel = make(&cfg);
        REQUIRE(sel != NULL);
        char id[32];
        int admitted = 0;
        for (int o = 0; o < 4000; o++) {
            snprintf(id, sizeof(id), "u%d", o);
            she_sel_item_t it = item(id);
            admitted += she_sel_admitted(she_selector_decide(sel, &it));
        }
        double f = admitted / 4000.0;
        double want = ps[k] > cfg.min_admit ? ps[k] : cfg.min_admit;
        CHECK_MSG(fabs(f - want) < 0.04, "p_unseen %g: admitted fraction %g", ps[k], f);
        she_selector_free(sel);
    }
}

static void test_quota_balance(void) {
    she_selector_config_t cfg = she_selector_defaults();
    cfg.difficulty = 0;
    cfg.stages[0].balance = SHE_SEL_DIM_GRADE;
    she_selector_t *sel = make(&cfg);
    REQUIRE(sel != NULL);
    /* grades 4: 70%, 3: 20%, 2: 7%, 1: 3% */
    int64_t admitted[5] = {0}, offered[5] = {0};
    char id[32];
    for (int o = 0; o < 20000; o++) {
        double u = urand();
        int g = u < 0.70 ? 4 : u < 0.90 ? 3 : u < 0.97 ? 2 : 1;
        snprintf(id, sizeof(id), "x%d", o);
        she_sel_item_t it = item(id);
        it.grade = g;
        she_sel_reason_t r = she_selector_decide(sel, &it);
        offered[g]++;
        admitted[g] += she_sel_admitted(r);
        CHECK(r == SHE_SEL_ADMIT_NO_DIFFICULTY || r == SHE_SEL_SKIP_QUOTA);
    }
    /* nearly every rare item is admitted (a burst of them may exceed the slack); the common
     * grades are held near the rarest's count */
    CHECK_MSG(admitted[1] >= offered[1] * 0.9, "grade 1: %lld of %lld", (long long)admitted[1],
              (long long)offered[1]);
    for (int g = 2; g <= 4; g++)
        CHECK_MSG(fabs((double)admitted[g] - admitted[1]) <= 0.06 * admitted[1],
                  "grade %d admitted %lld, grade 1 %lld", g, (long long)admitted[g],
                  (long long)admitted[1]);
    she_selector_status_t st;
    she_selector_status(sel, &st);
    CHECK(st.counts.n[SHE_SEL_SKIP_QUOTA] > 10000);

    /* grade 1 stops arriving: after its offers decay, grade 4 flows freely again */
    int late = 0;
    for (int o = 0; o < 3000; o++) {
        snprintf(id, sizeof(id), "y%d", o);
        she_sel_item_t it = item(id);
        it.grade = 4 - (o % 3 == 0); /* grades 4 and 3 */
        int a = she_sel_admitted(she_selector_decide(sel, &it));
        late += o >= 2000 && a;
    }
    CHECK_MSG(late >= 600, "admitted %d of the last 1000 once the rare grades stopped", late);
    she_selector_free(sel);
}

static void test_quota_joint_cells(void) {
    /* domain x query type: two domains x two types, one cell flooding */
    she_selector_config_t cfg = she_selector_defaults();
    cfg.difficulty = 0;
    cfg.stages[0].balance = SHE_SEL_DIM_DOMAIN | SHE_SEL_DIM_QUERY_TYPE;
    she_selector_t *sel = make(&cfg);
    REQUIRE(sel != NULL);
    const char *dom[2] = {"apparel", "tools"}, *qt[2] = {"plain", "negation"};
    int admitted[4] = {0};
    char id[32];
    for (int o = 0; o < 8000; o++) {
        int cell = o % 2 ? 0 : o % 8 / 2; /* half the offers are cell 0, the rest round-robin */
        snprintf(id, sizeof(id), "z%d", o);
        she_sel_item_t it = item(id);
        it.domain = dom[cell / 2];
        it.query_type = qt[cell % 2];
        it.grade = o % 4 + 1; /* not balanced on: must not split cells */
        admitted[cell] += she_sel_admitted(she_selector_decide(sel, &it));
    }
    for (int c = 1; c < 4; c++)
        CHECK_MSG(abs(admitted[c] - admitted[0]) <= 0.03 * admitted[c], "cell %d: %d vs cell 0: %d", c, admitted[c],
                  admitted[0]);
    she_selector_free(sel);
}

static void test_curriculum(void) {
    she_selector_config_t cfg = she_selector_defaults();
    cfg.difficulty = 0;
    cfg.n_stages = 2;
    she_sel_stage_t easier = {.name = "easier", .offline_lo = 0.5f, .offline_hi = 1.0f,
                              .balance = SHE_SEL_DIM_QUERY_TYPE, .max_steps = 3};
    she_sel_stage_t harder = {.name = "harder", .offline_lo = 0.0f, .offline_hi = 0.49f,
                              .balance = SHE_SEL_DIM_GRADE, .plateau_patience = 2,
                              .plateau_delta = 0.01f};
    cfg.stages[0] = easier;
    cfg.stages[1] = harder;
    she_selector_t *sel = make(&cfg);
    REQUIRE(sel != NULL);
    she_sel_item_t e = item("easy"), h = item("hard"), u = item("unknown");
    e.offline_pass = 0.8f;
    h.offline_pass = 0.2f;
    CHECK(she_selector_decide(sel, &e) == SHE_SEL_ADMIT_NO_DIFFICULTY);
    CHECK(she_selector_decide(sel, &h) == SHE_SEL_SKIP_CURRICULUM);
    CHECK(she_selector_decide(sel, &u) == SHE_SEL_SKIP_CURRICULUM);
    CHECK_EQ_INT(she_selector_end_step(sel, 0.5), 0);
    CHECK_EQ_INT(she_selector_end_step(sel, 0.5), 0);
    CHECK_EQ_INT(she_selector_end_step(sel, 0.5), 1); /* max_steps 3 */
    she_selector_status_t st;
    she_selector_status(sel, &st);
    CHECK_EQ_INT(st.stage, 1);
    CHECK_STR(st.stage_name, "harder");
    CHECK(she_selector_decide(sel, &e) == SHE_SEL_SKIP_CURRICULUM);
    CHECK(she_selector_decide(sel, &h) == SHE_SEL_ADMIT_NO_DIFFICULTY);
    /* rising pass rate: no plateau; then flat for `patience` steps: the stage ends */
    CHECK_EQ_INT(she_selector_end_step(sel, 0.1), 0);
    CHECK_EQ_INT(she_selector_end_step(sel, 0.5), 0);
    CHECK_EQ_INT(she_selector_end_step(sel, 0.9), 0);
    she_selector_status(sel, &st);
    double ema = st.pass_ema;
    CHECK_CLOSE(ema, 0.1 + 0.1 * (0.5 - 0.1) + 0.1 * (0.9 - 0.1 - 0.1 * 0.4), 1e-6, 0);
    CHECK_EQ_INT(she_selector_end_step(sel, ema), 0);
    CHECK_EQ_INT(she_selector_end_step(sel, ema), 1);
    she_selector_status(sel, &st);
    CHECK_EQ_INT(st.stage, 2);
    CHECK_STR(st.stage_name, "");
    CHECK_EQ_INT(st.n_stage_advance, 2);
    CHECK(she_selector_decide(sel, &h) == SHE_SEL_SKIP_CURRICULUM_DONE);
    CHECK_EQ_INT(she_selector_end_step(sel, 0.5), 0);
    she_selector_status(sel, &st);
    CHECK_EQ_INT(st.counts.n[SHE_SEL_SKIP_CURRICULUM], 3);
    CHECK_EQ_INT(st.counts.n[SHE_SEL_SKIP_CURRICULUM_DONE], 1);
    she_selector_free(sel);
}

/* A mix with 60% negation queries under a 0.2 cap: negation's share of the admissions is held
 * at the cap; the other types take the rest; skips are counted as quota skips. */
static void test_query_type_caps(void) {
    she_selector_config_t cfg = she_selector_defaults();
    cfg.difficulty = 0;
    cfg.quota_window = 200;
    cfg.n_caps = 1;
    snprintf(cfg.caps[0].query_type, SHE_SEL_CAP_NAME, "negation");
    cfg.caps[0].share = 0.2f;
    char errstr[SHE_ERRSTR_SIZE];
    she_selector_t *sel = she_selector_new(&cfg, errstr, sizeof(errstr));
    REQUIRE(sel != NULL);
    int admitted = 0, neg = 0, neg_offered = 0, late_admitted = 0, late_neg = 0;
    char id[32];
    for (int i = 0; i < 4000; i++) {
        snprintf(id, sizeof(id), "p%d", i);
        she_sel_item_t it = item(id);
        int is_neg = urand() < 0.6;
        it.query_type = is_neg ? "negation" : (i % 2 ? "plain" : "qa");
        neg_offered += is_neg;
        she_sel_reason_t r = she_selector_decide(sel, &it);
        if (she_sel_admitted(r)) {
            admitted++;
            neg += is_neg;
            if (i >= 2000) {
                late_admitted++;
                late_neg += is_neg;
            }
        } else {
            CHECK(r == SHE_SEL_SKIP_QUOTA);
            CHECK(is_neg); /* only the capped type is ever held back */
        }
    }
    CHECK(neg_offered > 2200);
    CHECK(late_admitted > 900); /* ~800 others + their 20% of negation */
    double share = (double)late_neg / late_admitted;
    CHECK(share > 0.17 && share < 0.23);
    she_selector_status_t st;
    she_selector_status(sel, &st);
    CHECK_EQ_INT(st.counts.n[SHE_SEL_SKIP_QUOTA], 4000 - admitted);
    CHECK(neg < admitted / 4);

    /* caps replaced at run time: the new cap is in force at once, a cap lifted frees the type */
    she_sel_cap_t caps[2] = {{"qa", 0.1f}, {"negation", 1.0f}};
    CHECK_OK(she_selector_set_caps(sel, caps, 2, errstr, sizeof(errstr)));
    int qa_adm = 0, qa_off = 0, neg_adm = 0, neg_off = 0;
    for (int i = 0; i < 2000; i++) {
        snprintf(id, sizeof(id), "q%d", i);
        she_sel_item_t it = item(id);
        it.query_type = i % 2 ? "qa" : "negation";
        she_sel_reason_t r = she_selector_decide(sel, &it);
        if (i % 2) {
            qa_off++;
            qa_adm += she_sel_admitted(r);
        } else {
            neg_off++;
            neg_adm += she_sel_admitted(r);
        }
    }
    CHECK_EQ_INT(neg_adm, neg_off);
    CHECK(qa_adm < qa_off / 4);
    /* bad caps are refused and leave the selector as it was */
    she_sel_cap_t bad[2] = {{"qa", 0.0f}, {"", 0.5f}};
    CHECK(she_selector_set_caps(sel, bad, 1, errstr, sizeof(errstr)) == SHE_ERR_INVALID);
    CHECK(she_selector_set_caps(sel, bad + 1, 1, errstr, sizeof(errstr)) == SHE_ERR_INVALID);
    she_sel_cap_t twice[2] = {{"qa", 0.5f}, {"qa", 0.5f}};
    CHECK(she_selector_set_caps(sel, twice, 2, errstr, sizeof(errstr)) == SHE_ERR_INVALID);
    she_selector_config_t now;
    she_selector_get_config(sel, &now);
    CHECK_EQ_INT(now.n_caps, 2);
    CHECK_STR(now.caps[0].query_type, "qa");
    /* the caps' counts survive the JSON state */
    json_t *state = she_selector_state_json(sel);
    REQUIRE(state != NULL);
    she_selector_t *b = she_selector_new(&now, errstr, sizeof(errstr));
    REQUIRE(b != NULL);
    CHECK_OK(she_selector_load_state(b, state, errstr, sizeof(errstr)));
    for (int i = 0; i < 300; i++) {
        snprintf(id, sizeof(id), "r%d", i);
        she_sel_item_t it = item(id);
        it.query_type = i % 3 ? "qa" : "plain";
        CHECK(she_selector_decide(sel, &it) == she_selector_decide(b, &it));
    }
    json_decref(state);
    she_selector_free(b);
    she_selector_free(sel);
}

/* Streaming: no offline pass rates.  With stage_recent a narrowed stage admits a prompt never
 * rolled out (it has to be measured), then places it by its recent pass rate; without it the
 * same prompt is outside the stage (the offline meaning). */
static void test_curriculum_recent_rates(void) {
    she_selector_config_t cfg = she_selector_defaults();
    cfg.difficulty = 0;
    cfg.stage_recent = 1;
    she_sel_stage_t easier = {.name = "easier", .offline_lo = 0.5f, .offline_hi = 1.0f};
    cfg.stages[0] = easier;
    char errstr[SHE_ERRSTR_SIZE];
    she_selector_t *sel = she_selector_new(&cfg, errstr, sizeof(errstr));
    REQUIRE(sel != NULL);
    she_sel_item_t e = item("easy"), h = item("hard"), o = item("offline-hard");
    o.offline_pass = 0.1f; /* an offline rate, when there is one, still decides */
    CHECK(she_selector_decide(sel, &e) == SHE_SEL_ADMIT_NO_DIFFICULTY);
    CHECK(she_selector_decide(sel, &h) == SHE_SEL_ADMIT_NO_DIFFICULTY);
    CHECK(she_selector_decide(sel, &o) == SHE_SEL_SKIP_CURRICULUM);
    she_selector_observe(sel, "easy", 7, 8);
    she_selector_observe(sel, "hard", 1, 8);
    CHECK(she_selector_decide(sel, &e) == SHE_SEL_ADMIT_NO_DIFFICULTY);
    CHECK(she_selector_decide(sel, &h) == SHE_SEL_SKIP_CURRICULUM);
    she_selector_free(sel);
    cfg.stage_recent = 0;
    sel = she_selector_new(&cfg, errstr, sizeof(errstr));
    REQUIRE(sel != NULL);
    CHECK(she_selector_decide(sel, &e) == SHE_SEL_SKIP_CURRICULUM);
    she_selector_free(sel);
}

static void test_rm_band(void) {
    she_selector_config_t cfg = she_selector_defaults();
    cfg.difficulty = 0;
    cfg.rm_select = 1;
    cfg.rm_lo = 0.2f;
    cfg.rm_hi = 0.8f;
    she_selector_t *sel = make(&cfg);
    REQUIRE(sel != NULL);
    const float scores[5] = {0.1f, 0.5f, NAN, 0.9f, 0.2f};
    const int want[5] = {0, 1, 0, 0, 1};
    for (int i = 0; i < 5; i++) {
        she_sel_item_t it = item("r");
        it.rm_score = scores[i];
        she_sel_reason_t r = she_selector_decide(sel, &it);
        CHECK_EQ_INT(she_sel_admitted(r), want[i]);
        if (!want[i])
            CHECK(r == SHE_SEL_SKIP_RM_BAND);
    }
    she_selector_free(sel);
}

static void test_config_invalid(void) {
    char errstr[512];
    she_selector_config_t cfg = she_selector_defaults();
    cfg.lo0 = 0.95f; /* above hi0 */
    CHECK(she_selector_new(&cfg, errstr, sizeof(errstr)) == NULL);
    CHECK(strstr(errstr, "band") != NULL);
    cfg = she_selector_defaults();
    cfg.n_stages = 0;
    CHECK(she_selector_new(&cfg, errstr, sizeof(errstr)) == NULL);
    cfg = she_selector_defaults();
    cfg.window = 0;
    CHECK(she_selector_new(&cfg, errstr, sizeof(errstr)) == NULL);
    cfg = she_selector_defaults();
    cfg.stages[0].offline_lo = 0.7f;
    cfg.stages[0].offline_hi = 0.6f;
    CHECK(she_selector_new(&cfg, errstr, sizeof(errstr)) == NULL);
}

/* a stream that touches every part of the state */
static void drive(she_selector_t *sel, int from, int to, she_sel_reason_t *out) {
    static const char *doms[3] = {"apparel", "tools", "garden"};
    char id[32];
    for (int o = from; o < to; o++) {
        int p = (o * 7) % 90;
        snprintf(id, sizeof(id), "s%d", p);
        she_sel_item_t it = item(id);
        it.domain = doms[p % 3];
        it.query_type = p % 4 ? "plain" : "qa";
        it.grade = 1 + p % 4;
        it.offline_pass = (float)(p % 10) / 10.0f;
        it.rm_score = (float)(p % 7) / 7.0f;
        she_sel_reason_t r = she_selector_decide(sel, &it);
        out[o - from] = r;
        if (she_sel_admitted(r))
            she_selector_observe(sel, id, (p * 3 + o / 50) % 9, 8);
        if (o % 25 == 24)
            she_selector_end_step(sel, (double)(o % 100) / 100.0);
    }
}

static char *dump(const she_selector_t *sel) {
    json_t *j = she_selector_state_json(sel);
    char *s = j ? json_dumps(j, JSON_SORT_KEYS | JSON_COMPACT) : NULL;
    json_decref(j);
    return s;
}

static void test_state_roundtrip(void) {
    char errstr[512];
    she_selector_config_t cfg = she_selector_defaults();
    cfg.p_unseen = 0.6f; /* random draws: the generator state must survive the trip */
    cfg.rm_select = 1;
    cfg.rm_lo = 0.1f;
    cfg.n_stages = 2;
    she_sel_stage_t s0 = {.name = "types", .offline_lo = 0.0f, .offline_hi = 1.0f,
                          .balance = SHE_SEL_DIM_QUERY_TYPE | SHE_SEL_DIM_DOMAIN,
                          .max_steps = 30};
    she_sel_stage_t s1 = {.name = "labels", .offline_lo = 0.0f, .offline_hi = 0.8f,
                          .balance = SHE_SEL_DIM_GRADE, .plateau_patience = 500,
                          .plateau_delta = 0.01f};
    cfg.stages[0] = s0;
    cfg.stages[1] = s1;
    she_selector_t *a = make(&cfg);
    REQUIRE(a != NULL);
    enum { N1 = 1000, N2 = 1500 };
    static she_sel_reason_t ra[N2], rb[N2];
    drive(a, 0, N1, ra);
    char *text = dump(a);
    REQUIRE(text != NULL);
    CHECK(strstr(text, "\"prompts\"") && strstr(text, "\"cells\"") && strstr(text, "\"rng\""));

    json_error_t jerr;
    json_t *j = json_loads(text, 0, &jerr);
    REQUIRE(j != NULL);
    she_selector_t *b = make(&cfg);
    REQUIRE(b != NULL);
    CHECK_OK(she_selector_load_state(b, j, errstr, sizeof(errstr)));
    json_decref(j);
    char *text_b = dump(b);
    CHECK_STR(text_b, text);
    free(text_b);

    drive(a, N1, N1 + N2, ra);
    drive(b, N1, N1 + N2, rb);
    int same = memcmp(ra, rb, sizeof(ra)) == 0;
    CHECK_MSG(same, "decisions differ after reload");
    she_selector_status_t sa, sb;
    she_selector_status(a, &sa);
    she_selector_status(b, &sb);
    CHECK(memcmp(&sa.counts, &sb.counts, sizeof(sa.counts)) == 0);
    CHECK_EQ_INT(sa.stage, sb.stage);
    CHECK(sa.stage == 1); /* the first stage ended on its step budget */
    CHECK(sa.counts.n[SHE_SEL_ADMIT_UNSEEN] > 0 && sa.counts.n[SHE_SEL_SKIP_UNSEEN] > 0);
    CHECK(sa.counts.n[SHE_SEL_SKIP_QUOTA] > 0 && sa.counts.n[SHE_SEL_SKIP_RM_BAND] > 0);
    char *ta = dump(a), *tb = dump(b);
    CHECK_STR(ta, tb);
    free(ta);
    free(tb);

    /* malformed states are refused and leave the selector as it was */
    const char *bad[] = {
        "[]",
        "{\"format\": \"other\", \"version\": 1}",
        "{\"format\": \"she-selector\", \"version\": 2}",
        "{\"format\": \"she-selector\", \"version\": 1, \"lo\": 0.1}",
    };
    char *before = dump(b);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        json_t *jb = json_loads(bad[i], 0, &jerr);
        REQUIRE(jb != NULL);
        CHECK(she_selector_load_state(b, jb, errstr, sizeof(errstr)) == SHE_ERR_FORMAT);
        json_decref(jb);
    }
    /* a valid state with one mistyped prompt entry */
    json_t *jt = json_loads(text, 0, &jerr);
    REQUIRE(jt != NULL);
    json_object_set_new(json_object_get(jt, "prompts"), "s1", json_string("oops"));
    CHECK(she_selector_load_state(b, jt, errstr, sizeof(errstr)) == SHE_ERR_FORMAT);
    json_decref(jt);
    char *after = dump(b);
    CHECK_STR(after, before);
    free(before);
    free(after);
    free(text);
    she_selector_free(a);
    she_selector_free(b);
}

int main(void) {
    RUN(test_rejection_exact);
    RUN(test_difficulty_all_hard);
    RUN(test_difficulty_all_easy);
    RUN(test_difficulty_band);
    RUN(test_difficulty_retry);
    RUN(test_difficulty_restores);
    RUN(test_unseen_probability);
    RUN(test_quota_balance);
    RUN(test_quota_joint_cells);
    RUN(test_curriculum);
    RUN(test_query_type_caps);
    RUN(test_curriculum_recent_rates);
    RUN(test_rm_band);
    RUN(test_config_invalid);
    RUN(test_state_roundtrip);
    TEST_DONE();
}
