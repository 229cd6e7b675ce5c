/* test_canary.c -- the canary controller's decisions (consumers/canary.h) on crafted numbers:
 * each offline and live gate failing alone, the minimum-sample rule, the soak before a
 * promotion, supersession of queued versions, counter baselines, and the rollback of a canary
 * that serve never reports or that gets too little traffic; the reader of serve's status
 * document; and the configuration errors `she canary` and `she evaluate --follow` refuse. */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>

#include "consumers/canary.h"
#include "test.h"

static she_canary_config_t config(void) {
    return (she_canary_config_t){.share = 0.2,
                                 .f1_epsilon = 0.02,
                                 .max_format_failures = 0.05,
                                 .max_error_rate = 0.05,
                                 .latency_factor = 1.5,
                                 .latency_slack_s = 0.01,
                                 .min_agreement = 0.8,
                                 .min_requests = 50,
                                 .min_compared = 20,
                                 .soak_s = 60,
                                 .max_soak_s = 180};
}

static she_canary_eval_t eval(int64_t version, double f1, double fail) {
    return (she_canary_eval_t){.version = version, .macro_f1 = f1, .good_f1 = f1,
                               .accuracy = f1, .format_failure_rate = fail, .rows = 200};
}

/* serve's status with stable v`stable` and canary v`canary`: healthy numbers unless changed. */
static she_canary_live_t live(int64_t stable, int64_t canary, int64_t req) {
    she_canary_live_t l;
    memset(&l, 0, sizeof(l));
    l.stable = (she_canary_role_t){.version = stable, .requests = 4 * req,
                                   .latency_p95_s = 0.100, .share = 0};
    l.canary = (she_canary_role_t){.version = canary, .requests = req, .errors = 0,
                                   .judge_failures = 0, .latency_p95_s = 0.120, .share = 0.2};
    l.shadow_compared = req;
    l.shadow_agreed = req * 9 / 10;
    return l;
}

static double metric_of(const she_canary_decision_t *d, const char *name) {
    for (int i = 0; i < d->n_metrics; i++)
        if (strcmp(d->metrics[i].name, name) == 0)
            return d->metrics[i].value;
    return NAN;
}

/* A controller with stable v1 (macro F1 0.60) and canary v2 started at t = 0. */
static she_canary_t *with_canary(const she_canary_config_t *cfg) {
    she_canary_t *c = she_canary_new(cfg);
    she_canary_eval_t e1 = eval(1, 0.60, 0.01), e2 = eval(2, 0.61, 0.01);
    she_canary_offer(c, &e1, NULL);
    she_canary_offer(c, &e2, NULL);
    she_canary_decision_t d;
    if (!she_canary_step(c, 0, NULL, &d) || d.action != SHE_DEPLOY_ACTION_START) {
        she_canary_free(c);
        return NULL;
    }
    return c;
}

static void test_offline_gates_pass_start_canary(void) {
    she_canary_config_t cfg = config();
    she_canary_t *c = she_canary_new(&cfg);
    she_canary_eval_t e1 = eval(1, 0.60, 0.01), e2 = eval(2, 0.59, 0.05);
    CHECK_EQ_INT(she_canary_offer(c, &e1, NULL), SHE_CANARY_OFFER_STABLE);
    CHECK_EQ_INT(she_canary_offer(c, &e2, NULL), SHE_CANARY_OFFER_QUEUED);
    she_canary_decision_t d;
    REQUIRE(she_canary_step(c, 0, NULL, &d) == 1);
    CHECK_EQ_INT(d.action, SHE_DEPLOY_ACTION_START);
    CHECK_EQ_INT(d.version, 2);
    CHECK_EQ_INT(d.stable_version, 1);
    CHECK_EQ_INT(d.canary_version, 2);
    CHECK_CLOSE(d.canary_share, 0.2, 1e-12, 0);
    CHECK_MSG(strstr(d.reason, "offline gates passed") != NULL, "%s", d.reason);
    CHECK_CLOSE(metric_of(&d, "canary_macro_f1"), 0.59, 1e-12, 0);
    CHECK_CLOSE(metric_of(&d, "stable_macro_f1"), 0.60, 1e-12, 0);
    CHECK_EQ_INT(she_canary_step(c, 1, NULL, &d), 0); /* one decision, then it soaks */
    she_canary_state_t st;
    she_canary_state(c, 1, &st);
    CHECK_EQ_INT(st.stable, 1);
    CHECK_EQ_INT(st.canary, 2);
    she_canary_free(c);
}

static void test_offline_f1_gate_alone_aborts(void) {
    she_canary_config_t cfg = config();
    she_canary_t *c = she_canary_new(&cfg);
    she_canary_eval_t e1 = eval(1, 0.60, 0.01), e2 = eval(2, 0.579, 0.0);
    she_canary_offer(c, &e1, NULL);
    she_canary_offer(c, &e2, NULL);
    she_canary_decision_t d;
    REQUIRE(she_canary_step(c, 0, NULL, &d) == 1);
    CHECK_EQ_INT(d.action, SHE_DEPLOY_ACTION_ABORT);
    CHECK_EQ_INT(d.stable_version, 1);
    CHECK_EQ_INT(d.canary_version, -1);
    CHECK_MSG(strstr(d.reason, "macro F1 0.5790 < 0.5800") != NULL, "%s", d.reason);
    CHECK_MSG(strstr(d.reason, "format") == NULL, "%s", d.reason);
    /* aborted: the slot stays free, a re-read of the same evaluation is old news */
    CHECK_EQ_INT(she_canary_offer(c, &e2, NULL), SHE_CANARY_OFFER_OLD);
    CHECK_EQ_INT(she_canary_step(c, 1, NULL, &d), 0);
    she_canary_free(c);
}

static void test_offline_format_gate_alone_aborts(void) {
    she_canary_config_t cfg = config();
    she_canary_t *c = she_canary_new(&cfg);
    she_canary_eval_t e1 = eval(1, 0.60, 0.01), e2 = eval(2, 0.70, 0.051);
    she_canary_offer(c, &e1, NULL);
    she_canary_offer(c, &e2, NULL);
    she_canary_decision_t d;
    REQUIRE(she_canary_step(c, 0, NULL, &d) == 1);
    CHECK_EQ_INT(d.action, SHE_DEPLOY_ACTION_ABORT);
    CHECK_MSG(strstr(d.reason, "format failure rate 0.0510 > 0.0500") != NULL, "%s", d.reason);
    CHECK_MSG(strstr(d.reason, "macro F1") == NULL, "%s", d.reason);
    CHECK_CLOSE(metric_of(&d, "canary_format_failure_rate"), 0.051, 1e-12, 0);
    she_canary_free(c);
}

/* A stable set by version without an evaluation: the F1 gate cannot apply, and says so. */
static void test_stable_without_evaluation(void) {
    she_canary_config_t cfg = config();
    she_canary_t *c = she_canary_new(&cfg);
    she_canary_set_stable(c, 5);
    she_canary_eval_t e4 = eval(4, 0.9, 0.0), e6 = eval(6, 0.10, 0.0);
    CHECK_EQ_INT(she_canary_offer(c, &e4, NULL), SHE_CANARY_OFFER_OLD);
    CHECK_EQ_INT(she_canary_offer(c, &e6, NULL), SHE_CANARY_OFFER_QUEUED);
    she_canary_decision_t d;
    REQUIRE(she_canary_step(c, 0, NULL, &d) == 1);
    CHECK_EQ_INT(d.action, SHE_DEPLOY_ACTION_START);
    CHECK_MSG(strstr(d.reason, "not applied") != NULL, "%s", d.reason);
    CHECK(isnan(metric_of(&d, "stable_macro_f1")));
    she_canary_free(c);
}

static void test_live_gates_hold_promote_after_soak(void) {
    she_canary_config_t cfg = config();
    she_canary_t *c = with_canary(&cfg);
    REQUIRE(c != NULL);
    she_canary_decision_t d;
    /* serve reports the canary at t = 5 with counters from before: they are the baseline */
    she_canary_live_t l = live(1, 2, 30);
    CHECK_EQ_INT(she_canary_step(c, 5, &l, &d), 0);
    l = live(1, 2, 30 + 100);
    CHECK_EQ_INT(she_canary_step(c, 30, &l, &d), 0); /* enough data, all hold, not soaked */
    she_canary_state_t st;
    she_canary_state(c, 30, &st);
    CHECK_CLOSE(st.soak_s, 25, 1e-9, 0);
    l = live(1, 2, 30 + 200);
    REQUIRE(she_canary_step(c, 65, &l, &d) == 1);
    CHECK_EQ_INT(d.action, SHE_DEPLOY_ACTION_PROMOTE);
    CHECK_EQ_INT(d.version, 2);
    CHECK_EQ_INT(d.stable_version, 2);
    CHECK_EQ_INT(d.canary_version, -1);
    CHECK_CLOSE(d.canary_share, 0, 0, 0);
    CHECK_MSG(strstr(d.reason, "live gates held for 60 s") != NULL, "%s", d.reason);
    CHECK_CLOSE(metric_of(&d, "canary_requests"), 200, 0, 0); /* delta from the baseline */
    CHECK_CLOSE(metric_of(&d, "shadow_compared"), 200, 0, 0);
    CHECK_CLOSE(metric_of(&d, "shadow_agreement"), (207 - 27) / 200.0, 1e-12, 0);
    she_canary_state(c, 66, &st);
    CHECK_EQ_INT(st.stable, 2);
    CHECK_EQ_INT(st.canary, -1);
    CHECK(st.stable_has_eval);
    /* the promoted canary's F1 is now the bar */
    she_canary_eval_t e3 = eval(3, 0.585, 0.0);
    CHECK_EQ_INT(she_canary_offer(c, &e3, NULL), SHE_CANARY_OFFER_QUEUED);
    REQUIRE(she_canary_step(c, 70, NULL, &d) == 1);
    CHECK_EQ_INT(d.action, SHE_DEPLOY_ACTION_ABORT);
    CHECK_MSG(strstr(d.reason, "stable v2 0.6100") != NULL, "%s", d.reason);
    she_canary_free(c);
}

/* Each live gate failing alone rolls back, naming it; the others hold in each case. */
static void test_live_gates_each_fail_alone(void) {
    she_canary_config_t cfg = config();
    for (int gate = 0; gate < 3; gate++) {
        she_canary_t *c = with_canary(&cfg);
        REQUIRE(c != NULL);
        she_canary_decision_t d;
        she_canary_live_t l = live(1, 2, 0);
        CHECK_EQ_INT(she_canary_step(c, 1, &l, &d), 0);
        l = live(1, 2, 100);
        const char *want = NULL, *metric = NULL;
        double value = 0;
        if (gate == 0) { /* 3 errors + 3 judge failures in 100 requests */
            l.canary.errors = 3;
            l.canary.judge_failures = 3;
            want = "canary error rate 0.0600 > 0.0500";
            metric = "canary_error_rate";
            value = 0.06;
        } else if (gate == 1) { /* 1.5 x 0.1 + 0.01 = 0.16 */
            l.canary.latency_p95_s = 0.161;
            want = "canary p95 latency 0.1610 s > 0.1600 s";
            metric = "canary_latency_p95_seconds";
            value = 0.161;
        } else {
            l.shadow_agreed = 79;
            want = "shadow agreement 0.7900 < 0.8000";
            metric = "shadow_agreement";
            value = 0.79;
        }
        REQUIRE(she_canary_step(c, 2, &l, &d) == 1); /* at once: no need to soak to fail */
        CHECK_EQ_INT(d.action, SHE_DEPLOY_ACTION_ROLLBACK);
        CHECK_EQ_INT(d.stable_version, 1);
        CHECK_EQ_INT(d.canary_version, -1);
        CHECK_MSG(strstr(d.reason, want) != NULL, "gate %d: %s", gate, d.reason);
        CHECK_CLOSE(metric_of(&d, metric), value, 1e-12, 0);
        /* the same numbers just inside the bounds do not roll back */
        she_canary_free(c);
        c = with_canary(&cfg);
        she_canary_live_t ok = live(1, 2, 0);
        she_canary_step(c, 1, &ok, &d);
        ok = live(1, 2, 100);
        if (gate == 0)
            ok.canary.errors = 5;
        else if (gate == 1)
            ok.canary.latency_p95_s = 0.16;
        else
            ok.shadow_agreed = 80;
        CHECK_MSG(she_canary_step(c, 2, &ok, &d) == 0, "gate %d at its bound: %s", gate,
                  d.reason);
        she_canary_free(c);
    }
}

/* Too few requests or comparisons: nothing is judged, however bad the numbers. */
static void test_min_sample_rule(void) {
    she_canary_config_t cfg = config();
    she_canary_t *c = with_canary(&cfg);
    REQUIRE(c != NULL);
    she_canary_decision_t d;
    she_canary_live_t l = live(1, 2, 0);
    she_canary_step(c, 1, &l, &d);
    l = live(1, 2, 49); /* one request short */
    l.canary.errors = 49;
    CHECK_EQ_INT(she_canary_step(c, 100, &l, &d), 0);
    l = live(1, 2, 50);
    l.canary.errors = 50;
    l.shadow_compared = 19; /* one comparison short */
    l.shadow_agreed = 0;
    CHECK_EQ_INT(she_canary_step(c, 101, &l, &d), 0);
    l.shadow_compared = 20;
    REQUIRE(she_canary_step(c, 102, &l, &d) == 1);
    CHECK_EQ_INT(d.action, SHE_DEPLOY_ACTION_ROLLBACK);
    CHECK_MSG(strstr(d.reason, "error rate 1.0000") != NULL, "%s", d.reason);
    she_canary_free(c);

    /* with min_compared 0 and no shadow traffic the agreement gate does not apply */
    cfg.min_compared = 0;
    c = with_canary(&cfg);
    l = live(1, 2, 0);
    she_canary_step(c, 1, &l, &d);
    l = live(1, 2, 60);
    l.shadow_compared = l.shadow_agreed = 0;
    REQUIRE(she_canary_step(c, 61, &l, &d) == 1);
    CHECK_EQ_INT(d.action, SHE_DEPLOY_ACTION_PROMOTE);
    she_canary_free(c);
}

/* Latency is not compared while serve has no stable p95 (no stable traffic yet). */
static void test_latency_gate_needs_stable_p95(void) {
    she_canary_config_t cfg = config();
    she_canary_t *c = with_canary(&cfg);
    REQUIRE(c != NULL);
    she_canary_decision_t d;
    she_canary_live_t l = live(1, 2, 0);
    she_canary_step(c, 1, &l, &d);
    l = live(1, 2, 100);
    l.stable.latency_p95_s = NAN;
    l.canary.latency_p95_s = 9.0;
    REQUIRE(she_canary_step(c, 70, &l, &d) == 1);
    CHECK_EQ_INT(d.action, SHE_DEPLOY_ACTION_PROMOTE);
    CHECK_MSG(strstr(d.reason, "not compared") != NULL, "%s", d.reason);
    she_canary_free(c);
}

/* One canary at a time: newer versions queue, a queued one is replaced by a newer one. */
static void test_supersession(void) {
    she_canary_config_t cfg = config();
    she_canary_t *c = with_canary(&cfg);
    REQUIRE(c != NULL);
    int64_t skipped = 0;
    she_canary_eval_t e3 = eval(3, 0.62, 0), e4 = eval(4, 0.63, 0), e2 = eval(2, 0.61, 0);
    CHECK_EQ_INT(she_canary_offer(c, &e3, &skipped), SHE_CANARY_OFFER_QUEUED);
    CHECK_EQ_INT(skipped, -1);
    CHECK_EQ_INT(she_canary_offer(c, &e4, &skipped), SHE_CANARY_OFFER_QUEUED);
    CHECK_EQ_INT(skipped, 3);
    CHECK_EQ_INT(she_canary_offer(c, &e3, &skipped), SHE_CANARY_OFFER_SUPERSEDED);
    CHECK_EQ_INT(skipped, 3);
    CHECK_EQ_INT(she_canary_offer(c, &e2, &skipped), SHE_CANARY_OFFER_OLD); /* the canary */
    CHECK_EQ_INT(skipped, -1);
    she_canary_state_t st;
    she_canary_state(c, 1, &st);
    CHECK_EQ_INT(st.canary, 2);
    CHECK_EQ_INT(st.queued, 4);
    /* the canary (v2) is rolled back; then v4 starts, against stable v1 */
    she_canary_decision_t d;
    she_canary_live_t l = live(1, 2, 0);
    she_canary_step(c, 1, &l, &d);
    l = live(1, 2, 100);
    l.canary.judge_failures = 100;
    REQUIRE(she_canary_step(c, 2, &l, &d) == 1);
    CHECK_EQ_INT(d.action, SHE_DEPLOY_ACTION_ROLLBACK);
    CHECK_EQ_INT(d.version, 2);
    REQUIRE(she_canary_step(c, 3, &l, &d) == 1);
    CHECK_EQ_INT(d.action, SHE_DEPLOY_ACTION_START);
    CHECK_EQ_INT(d.version, 4);
    CHECK_EQ_INT(d.stable_version, 1);
    CHECK_EQ_INT(she_canary_step(c, 4, &l, &d), 0); /* serve still reports v2: not v4's data */
    she_canary_free(c);
}

/* A canary never reported by serve, or starved of traffic, is rolled back at max_soak_s. */
static void test_max_soak_rollbacks(void) {
    she_canary_config_t cfg = config();
    she_canary_t *c = with_canary(&cfg);
    REQUIRE(c != NULL);
    she_canary_decision_t d;
    she_canary_live_t none = live(1, -1, 0);
    CHECK_EQ_INT(she_canary_step(c, 179, &none, &d), 0);
    REQUIRE(she_canary_step(c, 180, &none, &d) == 1);
    CHECK_EQ_INT(d.action, SHE_DEPLOY_ACTION_ROLLBACK);
    CHECK_MSG(strstr(d.reason, "did not report canary v2") != NULL &&
                  strstr(d.reason, "serve reports no canary") != NULL,
              "%s", d.reason);
    she_canary_free(c);

    c = with_canary(&cfg);
    REQUIRE(c != NULL);
    CHECK_EQ_INT(she_canary_step(c, 100, NULL, &d), 0);
    REQUIRE(she_canary_step(c, 200, NULL, &d) == 1);
    CHECK_MSG(strstr(d.reason, "no status from serve") != NULL, "%s", d.reason);
    she_canary_free(c);

    c = with_canary(&cfg);
    REQUIRE(c != NULL);
    she_canary_live_t l = live(1, 2, 0);
    she_canary_step(c, 1, &l, &d);
    l = live(1, 2, 10);
    CHECK_EQ_INT(she_canary_step(c, 100, &l, &d), 0);
    REQUIRE(she_canary_step(c, 181, &l, &d) == 1);
    CHECK_EQ_INT(d.action, SHE_DEPLOY_ACTION_ROLLBACK);
    CHECK_MSG(strstr(d.reason, "not enough traffic") != NULL &&
                  strstr(d.reason, "10 of 50 requests") != NULL,
              "%s", d.reason);
    CHECK_CLOSE(metric_of(&d, "canary_requests"), 10, 0, 0);
    she_canary_free(c);
}

/* After a restart: decided versions are not redeployed, a started canary soaks again. */
static void test_restore(void) {
    she_canary_config_t cfg = config();
    she_canary_t *c = she_canary_new(&cfg);
    she_canary_set_stable(c, 3);
    she_canary_mark_decided(c, 4);
    she_canary_resume(c, 5, 100);
    she_canary_eval_t e4 = eval(4, 0.7, 0), e5 = eval(5, 0.7, 0), e3 = eval(3, 0.6, 0);
    CHECK_EQ_INT(she_canary_offer(c, &e3, NULL), SHE_CANARY_OFFER_STABLE);
    CHECK_EQ_INT(she_canary_offer(c, &e4, NULL), SHE_CANARY_OFFER_OLD);
    CHECK_EQ_INT(she_canary_offer(c, &e5, NULL), SHE_CANARY_OFFER_OLD);
    she_canary_decision_t d;
    she_canary_live_t l = live(3, 5, 0);
    CHECK_EQ_INT(she_canary_step(c, 101, &l, &d), 0);
    l = live(3, 5, 100);
    REQUIRE(she_canary_step(c, 161, &l, &d) == 1);
    CHECK_EQ_INT(d.action, SHE_DEPLOY_ACTION_PROMOTE);
    CHECK_EQ_INT(d.stable_version, 5);
    she_canary_state_t st;
    she_canary_state(c, 162, &st);
    CHECK(st.stable_has_eval); /* v5's evaluation arrived while it soaked */
    she_canary_free(c);
}

static void test_parse_status(void) {
    char errstr[512];
    she_canary_live_t lv;
    const char *full = "{\"stable\":{\"version\":3,\"requests\":100,\"errors\":1,"
                       "\"judge_failures\":2,\"latency_p95_s\":0.25},"
                       "\"canary\":{\"version\":4,\"requests\":10,\"errors\":0,"
                       "\"judge_failures\":5,\"latency_p95_s\":null,\"share\":0.1},"
                       "\"shadow\":{\"compared\":7,\"agreed\":6}}";
    REQUIRE_OK(she_canary_parse_status(full, &lv, errstr, sizeof(errstr)));
    CHECK_EQ_INT(lv.stable.version, 3);
    CHECK_EQ_INT(lv.stable.requests, 100);
    CHECK_EQ_INT(lv.stable.errors, 1);
    CHECK_EQ_INT(lv.stable.judge_failures, 2);
    CHECK_CLOSE(lv.stable.latency_p95_s, 0.25, 0, 0);
    CHECK_EQ_INT(lv.canary.version, 4);
    CHECK_EQ_INT(lv.canary.judge_failures, 5);
    CHECK(isnan(lv.canary.latency_p95_s));
    CHECK_CLOSE(lv.canary.share, 0.1, 0, 0);
    CHECK_EQ_INT(lv.shadow_compared, 7);
    CHECK_EQ_INT(lv.shadow_agreed, 6);
    const char *no_canary = "{\"stable\":{\"version\":3,\"requests\":0,\"errors\":0,"
                            "\"judge_failures\":0,\"latency_p95_s\":null},\"canary\":null}";
    REQUIRE_OK(she_canary_parse_status(no_canary, &lv, errstr, sizeof(errstr)));
    CHECK_EQ_INT(lv.canary.version, -1);
    CHECK_EQ_INT(lv.shadow_compared, 0);

    static const struct {
        const char *body, *needle;
    } bad[] = {
        {"", "line 1"},
        {"[1]", "stable is not an object"},
        {"{\"stable\":{\"version\":\"3\"}}", "stable.version is not an integer"},
        {"{\"stable\":{\"version\":3,\"requests\":-1}}", "stable.requests"},
        {"{\"stable\":{\"version\":3,\"requests\":1,\"errors\":0}}", "stable.judge_failures"},
        {"{\"stable\":{\"version\":3,\"requests\":1,\"errors\":0,\"judge_failures\":0},"
         "\"canary\":7}", "canary is not an object"},
        {"{\"stable\":{\"version\":3,\"requests\":1,\"errors\":0,\"judge_failures\":0},"
         "\"shadow\":{\"compared\":1.5,\"agreed\":1}}", "shadow.compared"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        errstr[0] = '\0';
        CHECK_MSG(she_canary_parse_status(bad[i].body, &lv, errstr, sizeof(errstr)) ==
                          SHE_ERR_FORMAT &&
                      strstr(errstr, bad[i].needle),
                  "%s: \"%s\"", bad[i].body, errstr);
    }
}

/* Exit status of `she ARGS` (a shell command line), -1 when it could not run. */
static int she(const char *args) {
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "'%s' %s >/dev/null 2>&1", getenv("SHE_BIN"), args);
    int rc = system(cmd);
    return rc != -1 && WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

/* Bad configuration fails fast with status 2, before any Kafka or HTTP. */
static void test_cli_usage_errors(void) {
    if (!getenv("SHE_BIN")) {
        fprintf(stderr, "   (SHE_BIN not set: command lines not checked)\n");
        return;
    }
    CHECK_EQ_INT(she("canary --serve-url ftp://127.0.0.1:1"), 2);
    CHECK_EQ_INT(she("canary --serve-url http://127.0.0.1:x"), 2);
    CHECK_EQ_INT(she("canary --serve-url http://"), 2);
    CHECK_EQ_INT(she("canary --soak 10 --set canary.max.soak.seconds=5"), 2);
    CHECK_EQ_INT(she("canary --share 0"), 2);
    CHECK_EQ_INT(she("canary --set canary.min.agreement=1.5"), 2);
    CHECK_EQ_INT(she("canary --help"), 0);
    CHECK_EQ_INT(she("evaluate --follow"), 2);                          /* no --data */
    CHECK_EQ_INT(she("evaluate --follow --data x.jsonl --model m"), 2); /* no --model */
    CHECK_EQ_INT(she("evaluate --follow --data x.jsonl --out o"), 2);
}

int main(void) {
    RUN(test_offline_gates_pass_start_canary);
    RUN(test_offline_f1_gate_alone_aborts);
    RUN(test_offline_format_gate_alone_aborts);
    RUN(test_stable_without_evaluation);
    RUN(test_live_gates_hold_promote_after_soak);
    RUN(test_live_gates_each_fail_alone);
    RUN(test_min_sample_rule);
    RUN(test_latency_gate_needs_stable_p95);
    RUN(test_supersession);
    RUN(test_max_soak_rollbacks);
    RUN(test_restore);
    RUN(test_parse_status);
    RUN(test_cli_usage_errors);
    TEST_DONE();
}
