/* test_metrics_registry.c -- the Prometheus registry: exact text exposition (escaping,
 * every type, callbacks), exact sums under concurrent updates, histogram bucket and
 * quantile math, and the naming rules.
 *
 * With the argument --promtool it instead writes a registry's exposition to a file and
 * runs `promtool check metrics` on it (skipped when promtool is not installed). */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <unistd.h>

#include "metrics.h"
#include "test.h"

/* Registers one metric of each kind with label values that need escaping. */
static void fill_registry(she_metrics_t *reg);

static void collect_lag(void *ud, she_metrics_scrape_t *sc) {
    (void)ud;
    she_metrics_emit(sc, (const char *[]){"she.samples", "0"}, 5);
    she_metrics_emit(sc, (const char *[]){"she.samples", "1"}, 0);
}

static void collect_nothing(void *ud, she_metrics_scrape_t *sc) { (void)ud, (void)sc; }

static void fill_registry(she_metrics_t *reg) {
    char errstr[512];
    she_metric_t *msgs, *ratio, *step, *wait, *unused;
    SHE_ASSERT(she_metrics_counter(reg, "she_messages_total",
                                   "Messages handled, by topic and direction.", "topic,direction",
                                   &msgs, errstr, sizeof(errstr)) == SHE_OK);
    she_metrics_add(she_metrics_series(msgs, (const char *[]){"she.samples", "in"}), 3);
    she_metrics_inc(she_metrics_series(msgs, (const char *[]){"she.samples", "out"}));
    she_metrics_add(she_metrics_series(msgs, (const char *[]){"we\\ird\"topic\nx", "in"}), 0.5);
    SHE_ASSERT(she_metrics_gauge(reg, "she_temperature_ratio",
                                 "A gauge: backslash \\ and\nnewline, \"quotes\" kept.", NULL,
                                 &ratio, errstr, sizeof(errstr)) == SHE_OK);
    she_metrics_set(she_metrics_series(ratio, NULL), -2.5);
    const double bounds[] = {0.125, 0.5, 1};
    SHE_ASSERT(she_metrics_histogram(reg, "she_step_seconds", "Learner step time.", "policy",
                                     bounds, 3, &step, errstr, sizeof(errstr)) == SHE_OK);
    she_metric_series_t *v1 = she_metrics_series(step, (const char *[]){"v1"});
    she_metrics_observe(v1, 0.0625);
    she_metrics_observe(v1, 0.125); /* on a bound: counts in that bucket ("le") */
    she_metrics_observe(v1, 0.25);
    she_metrics_observe(v1, 2);
    SHE_ASSERT(she_metrics_histogram(reg, "she_wait_seconds", "Waiting time.", NULL,
                                     (const double[]){1}, 1, &wait, errstr,
                                     sizeof(errstr)) == SHE_OK);
    SHE_ASSERT(she_metrics_callback(reg, SHE_METRIC_GAUGE, "she_consumer_lag_messages",
                                    "Consumer lag.", "topic,partition", collect_lag, NULL,
                                    errstr, sizeof(errstr)) == SHE_OK);
    SHE_ASSERT(she_metrics_callback(reg, SHE_METRIC_GAUGE, "she_silent", "Emits nothing.", NULL,
                                    collect_nothing, NULL, errstr, sizeof(errstr)) == SHE_OK);
    SHE_ASSERT(she_metrics_counter(reg, "she_unused_total", "Never updated.", "x", &unused,
                                   errstr, sizeof(errstr)) == SHE_OK);
}

static void test_exposition_exact(void) {
    static const char expected[] =
        "# HELP she_messages_total Messages handled, by topic and direction.\n"
        "# TYPE she_messages_total counter\n"
        "she_messages_total{topic=\"she.samples\",direction=\"in\"} 3\n"
        "she_messages_total{topic=\"she.samples\",direction=\"out\"} 1\n"
        "she_messages_total{topic=\"we\\\\ird\\\"topic\\nx\",direction=\"in\"} 0.5\n"
        "# HELP she_temperature_ratio A gauge: backslash \\\\ and\\nnewline, \"quotes\" kept.\n"
        "# TYPE she_temperature_ratio gauge\n"
        "she_temperature_ratio -2.5\n"
        "# HELP she_step_seconds Learner step time.\n"
        "# TYPE she_step_seconds histogram\n"
        "she_step_seconds_bucket{policy=\"v1\",le=\"0.125\"} 2\n"
        "she_step_seconds_bucket{policy=\"v1\",le=\"0.5\"} 3\n"
        "she_step_seconds_bucket{policy=\"v1\",le=\"1\"} 3\n"
        "she_step_seconds_bucket{policy=\"v1\",le=\"+Inf\"} 4\n"
        "she_step_seconds_sum{policy=\"v1\"} 2.4375\n"
        "she_step_seconds_count{policy=\"v1\"} 4\n"
        "# HELP she_wait_seconds Waiting time.\n"
        "# TYPE she_wait_seconds histogram\n"
        "she_wait_seconds_bucket{le=\"1\"} 0\n"
        "she_wait_seconds_bucket{le=\"+Inf\"} 0\n"
        "she_wait_seconds_sum 0\n"
        "she_wait_seconds_count 0\n"
        "# HELP she_consumer_lag_messages Consumer lag.\n"
        "# TYPE she_consumer_lag_messages gauge\n"
        "she_consumer_lag_messages{topic=\"she.samples\",partition=\"0\"} 5\n"
        "she_consumer_lag_messages{topic=\"she.samples\",partition=\"1\"} 0\n";
    she_metrics_t *reg = she_metrics_new();
    fill_registry(reg);
    size_t len = 0;
    char *text = she_metrics_render(reg, &len);
    REQUIRE(text != NULL);
    CHECK_EQ_INT(len, strlen(text));
    CHECK_MSG(strcmp(text, expected) == 0, "got:\n%s\nexpected:\n%s", text, expected);
    free(text);
    she_metrics_free(reg);

    /* An empty registry renders as an empty string, not NULL. */
    reg = she_metrics_new();
    text = she_metrics_render(reg, &len);
    CHECK(text && len == 0 && text[0] == '\0');
    free(text);
    she_metrics_free(reg);
}

/* Values print as the shortest text that reads back exactly; non-finite as Prometheus
 * spells them; invalid UTF-8 in a label value becomes U+FFFD and still finds its series. */
static void test_values_and_utf8(void) {
    char errstr[512];
    she_metrics_t *reg = she_metrics_new();
    she_metric_t *g;
    REQUIRE_OK(she_metrics_gauge(reg, "she_value", "Values.", "v", &g, errstr, sizeof(errstr)));
    const struct {
        const char *label;
        double v;
    } cases[] = {{"a", 0.1},        {"b", 1e-7},      {"c", 1e21},     {"d", 123456789},
                 {"e", NAN},        {"f", INFINITY},  {"g", -INFINITY}, {"h", 1.0 / 3},
                 {"i", 4503599627370497.0}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        she_metrics_set(she_metrics_series(g, (const char *[]){cases[i].label}), cases[i].v);
    she_metric_series_t *bad = she_metrics_series(g, (const char *[]){"x\xff\xc3y\xe2\x82"});
    CHECK(she_metrics_series(g, (const char *[]){"x\xff\xc3y\xe2\x82"}) == bad);
    she_metrics_set(bad, 7);
    char *text = she_metrics_render(reg, NULL);
    REQUIRE(text != NULL);
    static const char *const want[] = {
        "she_value{v=\"a\"} 0.1\n",       "she_value{v=\"b\"} 1e-07\n",
        "she_value{v=\"c\"} 1e+21\n",     "she_value{v=\"d\"} 123456789\n",
        "she_value{v=\"e\"} NaN\n",       "she_value{v=\"f\"} +Inf\n",
        "she_value{v=\"g\"} -Inf\n",      "she_value{v=\"h\"} 0.3333333333333333\n",
        "she_value{v=\"i\"} 4503599627370497\n",
        "she_value{v=\"x\xef\xbf\xbd\xef\xbf\xbdy\xef\xbf\xbd\xef\xbf\xbd\"} 7\n"};
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
        CHECK_MSG(strstr(text, want[i]) != NULL, "missing %s in\n%s", want[i], text);
    free(text);
    she_metrics_free(reg);
}

typedef struct worker {
    she_metric_t *counter, *hist, *gauge;
    she_metric_series_t *shared;
    int iters, id;
} worker_t;

static void *work(void *arg) {
    worker_t *w = arg;
    char id[16];
    snprintf(id, sizeof(id), "w%d", w->id % 2);
    she_metric_series_t *g = she_metrics_series(w->gauge, NULL);
    for (int i = 0; i < w->iters; i++) {
        she_metrics_inc(w->shared);
        /* the lookup path, racing with series creation in the other threads */
        she_metrics_add(she_metrics_series(w->counter, (const char *[]){id}), 2);
        she_metrics_observe(she_metrics_series(w->hist, NULL), (i % 4) * 0.5);
        she_metrics_add(g, 1);
        she_metrics_add(g, -1);
    }
    return NULL;
}

static void test_concurrent_updates(void) {
    enum { THREADS = 8, ITERS = 50000 };
    char errstr[512];
    she_metrics_t *reg = she_metrics_new();
    she_metric_t *c, *h, *g, *lc;
    REQUIRE_OK(she_metrics_counter(reg, "she_hits_total", "Hits.", NULL, &c, errstr,
                                   sizeof(errstr)));
    REQUIRE_OK(she_metrics_counter(reg, "she_work_total", "Work.", "worker", &lc, errstr,
                                   sizeof(errstr)));
    REQUIRE_OK(she_metrics_histogram(reg, "she_value_seconds", "Values.", NULL,
                                     (const double[]){0.5, 1}, 2, &h, errstr, sizeof(errstr)));
    REQUIRE_OK(she_metrics_gauge(reg, "she_inflight", "In flight.", NULL, &g, errstr,
                                 sizeof(errstr)));
    pthread_t th[THREADS];
    worker_t w[THREADS];
    for (int i = 0; i < THREADS; i++) {
        w[i] = (worker_t){lc, h, g, she_metrics_series(c, NULL), ITERS, i};
        pthread_create(&th[i], NULL, work, &w[i]);
    }
    /* Scrape while they run: must not crash or deadlock. */
    for (int i = 0; i < 20; i++)
        free(she_metrics_render(reg, NULL));
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    CHECK_EQ_INT(she_metrics_get(she_metrics_series(c, NULL)), THREADS * ITERS);
    CHECK_EQ_INT(she_metrics_get(she_metrics_series(lc, (const char *[]){"w0"})),
                 2 * (THREADS / 2) * ITERS);
    CHECK_EQ_INT(she_metrics_get(she_metrics_series(lc, (const char *[]){"w1"})),
                 2 * (THREADS / 2) * ITERS);
    CHECK_EQ_INT(she_metrics_get(she_metrics_series(g, NULL)), 0);
    uint64_t cum[3];
    double sum;
    she_metrics_hist_read(she_metrics_series(h, NULL), cum, &sum);
    /* values 0, 0.5, 1, 1.5 in turn: two land <= 0.5, three <= 1, four in all */
    CHECK_EQ_INT(cum[0], THREADS * ITERS / 2);
    CHECK_EQ_INT(cum[1], THREADS * ITERS / 4 * 3);
    CHECK_EQ_INT(cum[2], THREADS * ITERS);
    CHECK_EQ_INT(sum, THREADS * ITERS / 4 * 3.0);
    char *text = she_metrics_render(reg, NULL);
    REQUIRE(text != NULL);
    CHECK(strstr(text, "she_hits_total 400000\n") != NULL);
    CHECK(strstr(text, "she_value_seconds_count 400000\n") != NULL);
    free(text);
    she_metrics_free(reg);
}

static void test_histogram_math(void) {
    char errstr[512];
    she_metrics_t *reg = she_metrics_new();
    she_metric_t *h, *d;
    double lin[5];
    she_metrics_buckets_linear(0.2, 0.2, 5, lin);
    CHECK_CLOSE(lin[0], 0.2, 1e-12, 0);
    CHECK_CLOSE(lin[4], 1.0, 1e-12, 0);
    double ex[4];
    she_metrics_buckets_exp(0.001, 10, 4, ex);
    CHECK_CLOSE(ex[3], 1.0, 1e-12, 0);
    const double b[] = {1, 2, 4, 8};
    REQUIRE_OK(she_metrics_histogram(reg, "she_size_bytes", "Sizes.", NULL, b, 4, &h, errstr,
                                     sizeof(errstr)));
    she_metric_series_t *s = she_metrics_series(h, NULL);
    CHECK(isnan(she_metrics_hist_quantile(s, 0.5)));
    const double obs[] = {0.5, 1, 1.5, 2, 3, 3, 4, 5, 100, NAN};
    for (int i = 0; i < 10; i++)
        she_metrics_observe(s, obs[i]);
    uint64_t cum[5];
    double sum;
    she_metrics_hist_read(s, cum, &sum);
    const uint64_t want[5] = {2, 4, 7, 8, 10}; /* 100 and NaN only in +Inf */
    for (int i = 0; i < 5; i++)
        CHECK_EQ_INT(cum[i], want[i]);
    CHECK(isnan(sum));
    /* histogram_quantile: rank q*count inside its bucket, linear from the lower bound */
    CHECK_CLOSE(she_metrics_hist_quantile(s, 0.1), 0.5, 1e-12, 0); /* rank 1 of 2 in (0,1] */
    CHECK_CLOSE(she_metrics_hist_quantile(s, 0.3), 1.5, 1e-12, 0); /* rank 3: (1,2], 1 of 2 */
    CHECK_CLOSE(she_metrics_hist_quantile(s, 0.5), 2 + 2.0 / 3, 1e-12, 0); /* (2,4], 1 of 3 */
    CHECK_CLOSE(she_metrics_hist_quantile(s, 0.8), 8, 1e-12, 0); /* rank 8 = top of (4,8] */
    CHECK_CLOSE(she_metrics_hist_quantile(s, 0.95), 8, 1e-12, 0); /* +Inf: last finite bound */
    CHECK_CLOSE(she_metrics_hist_quantile(s, 0), 0, 1e-12, 0);
    const double *bounds;
    CHECK_EQ_INT(she_metrics_bounds(h, &bounds), 4);
    CHECK(bounds[3] == 8);
    /* default buckets */
    REQUIRE_OK(she_metrics_histogram(reg, "she_default_seconds", "Defaults.", NULL, NULL, 0, &d,
                                     errstr, sizeof(errstr)));
    CHECK_EQ_INT(she_metrics_bounds(d, &bounds), SHE_METRICS_DEFAULT_N_BUCKETS);
    CHECK(bounds[0] == 0.005 && bounds[SHE_METRICS_DEFAULT_N_BUCKETS - 1] == 60);
    she_metrics_free(reg);
}

static void test_name_rules(void) {
    char errstr[512];
    she_metrics_t *reg = she_metrics_new();
    she_metric_t *m = NULL, *m2 = NULL;
    static const struct {
        she_metric_type_t type;
        const char *name, *labels;
    } bad[] = {
        {SHE_METRIC_COUNTER, "messages_total", NULL},       /* no she_ prefix */
        {SHE_METRIC_COUNTER, "she_messages", NULL},         /* counter without _total */
        {SHE_METRIC_GAUGE, "she_messages_total", NULL},     /* gauge with _total */
        {SHE_METRIC_HISTOGRAM, "she_lat_total", NULL},      /* histogram with _total */
        {SHE_METRIC_GAUGE, "she_latency_ms", NULL},         /* non-base unit */
        {SHE_METRIC_GAUGE, "she_step_milliseconds", NULL},  /* non-base unit */
        {SHE_METRIC_GAUGE, "she_age_minutes", NULL},        /* non-base unit */
        {SHE_METRIC_GAUGE, "she_heap_mb", NULL},            /* non-base unit */
        {SHE_METRIC_GAUGE, "she_bad-name", NULL},           /* charset */
        {SHE_METRIC_GAUGE, "she_rec:rule", NULL},           /* colon reserved for rules */
        {SHE_METRIC_GAUGE, "she_1", "le"},                  /* reserved label */
        {SHE_METRIC_GAUGE, "she_2", "quantile"},
        {SHE_METRIC_GAUGE, "she_3", "__meta"},              /* reserved prefix */
        {SHE_METRIC_GAUGE, "she_4", "a,a"},                 /* repeated */
        {SHE_METRIC_GAUGE, "she_5", "a,,b"},                /* empty */
        {SHE_METRIC_GAUGE, "she_6", "a, b"},                /* space */
        {SHE_METRIC_GAUGE, "she_7", "1a"},                  /* starts with a digit */
        {SHE_METRIC_GAUGE, "", NULL},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        she_err_t err = bad[i].type == SHE_METRIC_COUNTER
                            ? she_metrics_counter(reg, bad[i].name, "h", bad[i].labels, &m,
                                                  errstr, sizeof(errstr))
                        : bad[i].type == SHE_METRIC_GAUGE
                            ? she_metrics_gauge(reg, bad[i].name, "h", bad[i].labels, &m, errstr,
                                                sizeof(errstr))
                            : she_metrics_histogram(reg, bad[i].name, "h", bad[i].labels, NULL, 0,
                                                    &m, errstr, sizeof(errstr));
        CHECK_MSG(err == SHE_ERR_INVALID && m == NULL, "'%s' {%s} accepted", bad[i].name,
                  bad[i].labels ? bad[i].labels : "");
        CHECK(errstr[0] != '\0');
    }
    CHECK(she_metrics_gauge(reg, "she_x", "", NULL, &m, errstr, sizeof(errstr)) ==
          SHE_ERR_INVALID); /* help required */
    CHECK(she_metrics_gauge(reg, "she_x", "bad \xff", NULL, &m, errstr, sizeof(errstr)) ==
          SHE_ERR_INVALID);
    CHECK(she_metrics_histogram(reg, "she_h_seconds", "h", NULL, (const double[]){1, 1}, 2, &m,
                                errstr, sizeof(errstr)) == SHE_ERR_INVALID);
    CHECK(she_metrics_histogram(reg, "she_h_seconds", "h", NULL, (const double[]){1, INFINITY},
                                2, &m, errstr, sizeof(errstr)) == SHE_ERR_INVALID);
    CHECK(she_metrics_callback(reg, SHE_METRIC_HISTOGRAM, "she_cb", "h", NULL, collect_nothing,
                               NULL, errstr, sizeof(errstr)) == SHE_ERR_INVALID);

    /* good names, the same registration twice, and clashes */
    CHECK_OK(she_metrics_counter(reg, "she_messages_total", "h", "topic,direction", &m, errstr,
                                 sizeof(errstr)));
    CHECK_OK(she_metrics_counter(reg, "she_messages_total", "other help", "topic,direction",
                                 &m2, errstr, sizeof(errstr)));
    CHECK(m && m == m2);
    CHECK(she_metrics_counter(reg, "she_messages_total", "h", "topic", &m2, errstr,
                              sizeof(errstr)) == SHE_ERR_INVALID);
    CHECK(she_metrics_gauge(reg, "she_messages_total_x", "h", NULL, &m2, errstr,
                            sizeof(errstr)) == SHE_OK);
    CHECK_OK(she_metrics_histogram(reg, "she_latency_seconds", "h", "policy_version", NULL, 0,
                                   &m, errstr, sizeof(errstr)));
    CHECK(she_metrics_gauge(reg, "she_latency_seconds_count", "h", NULL, &m2, errstr,
                            sizeof(errstr)) == SHE_ERR_INVALID);
    CHECK(she_metrics_histogram(reg, "she_latency_seconds", "h", "policy_version",
                                (const double[]){1}, 1, &m2, errstr,
                                sizeof(errstr)) == SHE_ERR_INVALID); /* other buckets */
    CHECK_OK(she_metrics_gauge(reg, "she_queue_bucket", "h", NULL, &m, errstr, sizeof(errstr)));
    CHECK(she_metrics_histogram(reg, "she_queue", "h", NULL, NULL, 0, &m2, errstr,
                                sizeof(errstr)) == SHE_ERR_INVALID);
    CHECK_OK(she_metrics_callback(reg, SHE_METRIC_GAUGE, "she_lag_messages", "h", NULL,
                                  collect_nothing, NULL, errstr, sizeof(errstr)));
    CHECK(she_metrics_callback(reg, SHE_METRIC_GAUGE, "she_lag_messages", "h", NULL,
                               collect_nothing, NULL, errstr,
                               sizeof(errstr)) == SHE_ERR_INVALID);
    CHECK(she_metrics_gauge(reg, "she_lag_messages", "h", NULL, &m2, errstr, sizeof(errstr)) ==
          SHE_ERR_INVALID);
    CHECK_OK(she_metrics_gauge(reg, "she_checkpoint_age_seconds", "h", NULL, &m, errstr,
                               sizeof(errstr)));
    CHECK_OK(she_metrics_gauge(reg, "she_serve_canary_share_ratio", "h", NULL, &m, errstr,
                               sizeof(errstr)));
    she_metrics_free(reg);
}

/* promtool's own parser and linter over the exposition of fill_registry plus defaults. */
static void test_promtool(void) {
    if (system("command -v promtool >/dev/null 2>&1") != 0)
        TEST_SKIP("promtool not installed (Debian package prometheus)");
    const char *tmp = getenv("SHE_TEST_TMP");
    char path[4096], cmd[8400];
    snprintf(path, sizeof(path), "%s/metrics_promtool_%d.prom", tmp ? tmp : "/tmp", (int)getpid());
    char errstr[512];
    she_metrics_t *reg = she_metrics_new();
    fill_registry(reg);
    she_metric_t *lat;
    REQUIRE_OK(she_metrics_histogram(reg, "she_serve_request_duration_seconds", "Latency.",
                                     "policy_version,role", NULL, 0, &lat, errstr,
                                     sizeof(errstr)));
    she_metrics_observe(she_metrics_series(lat, (const char *[]){"7", "canary"}), 0.3);
    size_t len;
    char *text = she_metrics_render(reg, &len);
    REQUIRE(text != NULL);
    FILE *f = fopen(path, "w");
    REQUIRE(f != NULL);
    CHECK(fwrite(text, 1, len, f) == len);
    fclose(f);
    snprintf(cmd, sizeof(cmd), "promtool check metrics < '%s' 2>&1", path);
    FILE *p = popen(cmd, "r");
    REQUIRE(p != NULL);
    char out[4096];
    size_t n = fread(out, 1, sizeof(out) - 1, p);
    out[n] = '\0';
    int rc = pclose(p);
    CHECK_MSG(rc == 0 && n == 0, "promtool exit %d: %s", rc, out);
    free(text);
    she_metrics_free(reg);
    unlink(path);
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--promtool") == 0) {
        RUN(test_promtool);
        TEST_DONE();
    }
    RUN(test_exposition_exact);
    RUN(test_values_and_utf8);
    RUN(test_concurrent_updates);
    RUN(test_histogram_math);
    RUN(test_name_rules);
    TEST_DONE();
}
