/* test_stream_plumbing.c -- core/stream.h and core/policy_watch.h against an in-process embedded
 * broker (she_broker_new: librdkafka's mock cluster on ephemeral ports of 127.0.0.1):
 *   - offsets tables round-trip through JSON;
 *   - produce, consume in a group, commit: a new member of the group starts after the commit;
 *   - a dead letter carries source topic, partition, offset, key, raw bytes, reason, component;
 *   - offsets that the broker dropped (more than ~5 MiB in a partition) are reported as data
 *     loss with the right count, and consumption goes on;
 *   - the policy watch swaps in a verified announced checkpoint (and measures how long that
 *     takes), refuses a corrupted one, a wrong SHA-256 and another architecture while the old
 *     policy keeps serving, and dead-letters a malformed announcement;
 *   - a control state sets a selector's band and curriculum stage. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "broker.h"
#include "cmd.h"
#include "consumers/selection_conf.h"
#include "messages.h"
#include "policy_watch.h"
#include "stream.h"
#include "test.h"
#include "topics.h"

static she_broker_t *broker;
static she_log_t *lg;
static char tmpdir[1024];

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static she_conf_t *new_conf(void) {
    char errstr[SHE_ERRSTR_SIZE];
    she_conf_t *c = she_conf_new();
    she_conf_allow_prefix(c, "kafka.");
    SHE_ASSERT(she_conf_add_defs(c, she_cmd_common_defs, errstr, sizeof(errstr)) == SHE_OK);
    SHE_ASSERT(she_conf_set(c, "bootstrap.servers", she_broker_bootstrap(broker), "test", errstr,
                            sizeof(errstr)) == SHE_OK);
    /* The mock cluster holds a rebalance for the session timeout after a member leaves. */
    SHE_ASSERT(she_conf_set(c, "kafka.session.timeout.ms", "6000", "test", errstr,
                            sizeof(errstr)) == SHE_OK);
    SHE_ASSERT(she_conf_set(c, "kafka.heartbeat.interval.ms", "1000", "test", errstr,
                            sizeof(errstr)) == SHE_OK);
    return c;
}

static she_stream_t *new_stream(she_conf_t *c, const char *group, int consumer, int producer) {
    char errstr[SHE_ERRSTR_SIZE];
    she_stream_opts_t o = {.component = "test", .consumer = consumer, .producer = producer,
                           .group_id = group};
    she_stream_t *st = NULL;
    if (she_stream_new(c, lg, NULL, &o, &st, errstr, sizeof(errstr)) != SHE_OK)
        fprintf(stderr, "she_stream_new: %s\n", errstr);
    return st;
}

/* Polls until n messages came (or timeout_s); marks them done; returns how many. */
static int drain(she_stream_t *st, int n, double timeout_s, int mark_done) {
    int got = 0;
    for (double t0 = now_s(); got < n && now_s() - t0 < timeout_s;) {
        rd_kafka_message_t *rkm = she_stream_poll(st, 100);
        if (!rkm)
            continue;
        got++;
        if (mark_done)
            she_stream_done(st, rkm);
        rd_kafka_message_destroy(rkm);
    }
    return got;
}

static void test_offsets_json(void) {
    char errstr[SHE_ERRSTR_SIZE];
    she_offsets_t a = {0}, b = {0};
    CHECK_OK(she_offsets_set(&a, "she.rewarded", 3, 120));
    CHECK_OK(she_offsets_set(&a, "she.rewarded", 0, 7));
    CHECK_OK(she_offsets_set(&a, "she.samples", 1, 0));
    CHECK_OK(she_offsets_set(&a, "she.rewarded", 3, 121)); /* replaces */
    CHECK_EQ_INT(a.n, 3);
    json_t *j = she_offsets_to_json(&a);
    REQUIRE(j != NULL);
    CHECK_OK(she_offsets_from_json(&b, j, errstr, sizeof(errstr)));
    json_decref(j);
    CHECK_EQ_INT(b.n, 3);
    CHECK_EQ_INT(she_offsets_get(&b, "she.rewarded", 3), 121);
    CHECK_EQ_INT(she_offsets_get(&b, "she.rewarded", 0), 7);
    CHECK_EQ_INT(she_offsets_get(&b, "she.samples", 1), 0);
    CHECK_EQ_INT(she_offsets_get(&b, "she.samples", 2), -1);
    json_t *bad = json_pack("{s:{s:s}}", "she.x", "0", "seven");
    CHECK(she_offsets_from_json(&b, bad, errstr, sizeof(errstr)) == SHE_ERR_FORMAT);
    json_decref(bad);
}

static void test_produce_consume_commit(void) {
    char errstr[SHE_ERRSTR_SIZE];
    she_conf_t *c = new_conf();
    she_stream_t *prod = new_stream(c, NULL, 0, 1);
    REQUIRE(prod != NULL);
    for (int i = 0; i < 100; i++) {
        char key[16], val[32];
        snprintf(key, sizeof(key), "k%d", i);
        snprintf(val, sizeof(val), "value %d", i);
        CHECK_OK(she_stream_produce(prod, "rollouts", key, strlen(key), val, strlen(val), errstr,
                                    sizeof(errstr)));
    }
    CHECK_OK(she_stream_commit(prod, 10000, errstr, sizeof(errstr)));
    she_stream_stats_t ps;
    she_stream_stats(prod, &ps);
    CHECK_EQ_INT(ps.produced, 100);
    CHECK_EQ_INT(ps.delivered, 100);

    const char *topics[] = {"rollouts"};
    she_stream_t *a = new_stream(c, "plumbing-group", 1, 0);
    REQUIRE(a != NULL);
    CHECK_OK(she_stream_subscribe(a, topics, 1, errstr, sizeof(errstr)));
    CHECK_EQ_INT(drain(a, 100, 30, 1), 100);
    CHECK_OK(she_stream_commit(a, 5000, errstr, sizeof(errstr)));
    she_stream_free(a);

    for (int i = 100; i < 110; i++) {
        char key[16];
        snprintf(key, sizeof(key), "k%d", i);
        CHECK_OK(she_stream_produce(prod, "rollouts", key, strlen(key), "x", 1, errstr,
                                    sizeof(errstr)));
    }
    CHECK_OK(she_stream_commit(prod, 10000, errstr, sizeof(errstr)));
    she_stream_t *b = new_stream(c, "plumbing-group", 1, 0);
    REQUIRE(b != NULL);
    CHECK_OK(she_stream_subscribe(b, topics, 1, errstr, sizeof(errstr)));
    double tj = now_s();
    CHECK_EQ_INT(drain(b, 10, 30, 1), 10);
    fprintf(stderr, "second member got its messages after %.1f s\n", now_s() - tj); /* only what came after the commit */
    she_stream_stats_t bs;
    she_stream_stats(b, &bs);
    CHECK_EQ_INT(bs.data_loss, 0);
    she_stream_free(b);
    she_stream_free(prod);
    she_conf_free(c);
}

static void test_dead_letter(void) {
    char errstr[SHE_ERRSTR_SIZE];
    she_conf_t *c = new_conf();
    she_stream_t *st = new_stream(c, "dl-group", 1, 1);
    REQUIRE(st != NULL);
    const uint8_t raw[] = {0xC3, 0x01, 0xde, 0xad, 0x00, 0xff};
    CHECK_OK(she_stream_produce(st, "rewarded", "sample-7", 8, raw, sizeof(raw), errstr,
                                sizeof(errstr)));
    CHECK_OK(she_stream_commit(st, 10000, errstr, sizeof(errstr)));
    const char *topics[] = {"rewarded"};
    CHECK_OK(she_stream_subscribe(st, topics, 1, errstr, sizeof(errstr)));
    rd_kafka_message_t *rkm = NULL;
    for (double t0 = now_s(); !rkm && now_s() - t0 < 20;)
        rkm = she_stream_poll(st, 100);
    REQUIRE(rkm != NULL);
    int32_t part = rkm->partition;
    int64_t off = rkm->offset;
    she_stream_dead_letter(st, rkm, "bad marker at byte 2");
    rd_kafka_message_destroy(rkm);
    CHECK_OK(she_stream_commit(st, 10000, errstr, sizeof(errstr)));

    she_stream_t *rd = new_stream(c, NULL, 1, 0);
    REQUIRE(rd != NULL);
    const char *dlt[] = {"deadletter"};
    CHECK_OK(she_stream_assign(rd, dlt, 1, NULL, 10000, errstr, sizeof(errstr)));
    int found = 0;
    for (double t0 = now_s(); !found && now_s() - t0 < 20;) {
        rd_kafka_message_t *m = she_stream_poll(rd, 100);
        if (!m)
            continue;
        she_dead_letter_t dl = {0};
        if (she_msg_decode_dead_letter(she_stream_codec(rd), m->payload, m->len, &dl, errstr,
                                       sizeof(errstr)) == SHE_OK &&
            dl.source_topic && strcmp(dl.source_topic, "she.rewarded") == 0) {
            found = 1;
            CHECK_EQ_INT(dl.partition, part);
            CHECK_EQ_INT(dl.offset, off);
            CHECK(dl.key_len == 8 && memcmp(dl.key, "sample-7", 8) == 0);
            CHECK(dl.raw_len == sizeof(raw) && memcmp(dl.raw, raw, sizeof(raw)) == 0);
            CHECK_STR(dl.error, "bad marker at byte 2");
            CHECK_STR(dl.component, "test");
            CHECK(dl.created_ms > 0);
        }
        she_msg_clear_dead_letter(&dl);
        rd_kafka_message_destroy(m);
    }
    CHECK(found);
    she_stream_stats_t ss;
    she_stream_stats(st, &ss);
    CHECK_EQ_INT(ss.dead_lettered, 1);
    she_stream_free(rd);
    she_stream_free(st);
    she_conf_free(c);
}

/* The mock cluster keeps about 5 MiB per partition: 8 MiB into one partition of a topic that is
 * not compacted (a gap in a compacted topic is normal), read from offset 0. */
static void test_data_loss_reported(void) {
    char errstr[SHE_ERRSTR_SIZE];
    she_conf_t *c = new_conf();
    she_stream_t *prod = new_stream(c, NULL, 0, 1);
    REQUIRE(prod != NULL);
    size_t sz = 100 * 1024;
    char *big = malloc(sz);
    memset(big, 'x', sz);
    const int n = 80; /* 8 MiB */
    for (int i = 0; i < n; i++) {
        rd_kafka_resp_err_t e = rd_kafka_producev(
            she_stream_producer(prod), RD_KAFKA_V_TOPIC("she.evaluations"),
            RD_KAFKA_V_PARTITION(0), RD_KAFKA_V_VALUE(big, sz),
            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
        CHECK(e == RD_KAFKA_RESP_ERR_NO_ERROR);
        rd_kafka_flush(she_stream_producer(prod), 10000); /* one message set each */
    }
    free(big);
    she_stream_t *rd = new_stream(c, NULL, 1, 0);
    REQUIRE(rd != NULL);
    she_offsets_t start = {0};
    she_offsets_set(&start, "she.evaluations", 0, 0);
    const char *topics[] = {"evaluations"};
    CHECK_OK(she_stream_assign(rd, topics, 1, &start, 10000, errstr, sizeof(errstr)));
    int got = drain(rd, n, 20, 0);
    she_stream_stats_t ss;
    she_stream_stats(rd, &ss);
    fprintf(stderr, "8 MiB in one partition: %d messages left, %lld reported lost\n", got,
            (long long)ss.data_loss);
    CHECK(ss.data_loss > 0);
    CHECK_EQ_INT(ss.data_loss + got, n);
    she_stream_free(rd);
    she_stream_free(prod);
    she_conf_free(c);
}

/* ---- policy watch ---- */

static she_model_config_t tiny_config(int hidden) {
    she_model_config_t cfg;
    memset(&cfg, 0, sizeof(cfg));
    snprintf(cfg.model_type, sizeof(cfg.model_type), "llama");
    cfg.vocab_size = 64;
    cfg.hidden_size = hidden;
    cfg.intermediate_size = 2 * hidden;
    cfg.n_layers = 1;
    cfg.n_heads = 2;
    cfg.n_kv_heads = 1;
    cfg.max_position_embeddings = 64;
    cfg.rope_theta = 10000;
    cfg.rms_norm_eps = 1e-5;
    cfg.tie_word_embeddings = 1;
    return cfg;
}

/* Saves a tiny model with weights from seed into tmpdir/name; returns its first parameter. */
static float save_model(const char *name, int hidden, uint64_t seed, char *dir, size_t cap) {
    char errstr[SHE_ERRSTR_SIZE];
    she_model_config_t cfg = tiny_config(hidden);
    she_model_t *m = NULL;
    SHE_ASSERT(she_model_new(&cfg, 1, 8, &m, errstr, sizeof(errstr)) == SHE_OK);
    she_model_init_weights(m, seed, 0.02f);
    snprintf(dir, cap, "%s/%s", tmpdir, name);
    SHE_ASSERT(she_model_save(m, NULL, dir, errstr, sizeof(errstr)) == SHE_OK);
    float first = m->params[0];
    she_model_free(m);
    return first;
}

static void announce(she_stream_t *st, int64_t version, const char *dir, const char *sha) {
    char errstr[SHE_ERRSTR_SIZE], hex[65];
    if (!sha) {
        SHE_ASSERT(she_policy_manifest_sha256(dir, "model.safetensors", hex, errstr,
                                              sizeof(errstr)) == SHE_OK);
        sha = hex;
    }
    she_checkpoint_announcement_t a = {.version = version, .uri = (char *)dir,
                                       .sha256 = (char *)sha, .parent_version = version - 1,
                                       .created_ms = she_stream_now_ms()};
    const uint8_t *buf;
    size_t len;
    SHE_ASSERT(she_msg_encode_checkpoint(she_stream_codec(st), &a, &buf, &len, errstr,
                                         sizeof(errstr)) == SHE_OK);
    SHE_ASSERT(she_stream_produce(st, "checkpoints", "v", 1, buf, len, errstr, sizeof(errstr)) ==
               SHE_OK);
    SHE_ASSERT(she_stream_commit(st, 10000, errstr, sizeof(errstr)) == SHE_OK);
}

/* Polls the watch for up to timeout_s; returns 1 when it swapped. */
static int poll_swap(she_policy_watch_t *pw, double timeout_s) {
    for (double t0 = now_s(); now_s() - t0 < timeout_s; usleep(20000))
        if (she_policy_watch_poll(pw))
            return 1;
    return 0;
}

static void test_policy_watch(void) {
    char errstr[SHE_ERRSTR_SIZE], d0[1200], d1[1200], d2[1200], d3[1200], d4[1200], d5[1200];
    save_model("v0", 16, 1, d0, sizeof(d0));
    float w1 = save_model("v1", 16, 2, d1, sizeof(d1));
    save_model("v2", 16, 3, d2, sizeof(d2));
    save_model("v3", 16, 4, d3, sizeof(d3));
    save_model("v4", 32, 5, d4, sizeof(d4));
    float w5 = save_model("v5", 16, 6, d5, sizeof(d5));
    /* corrupt v2's weights after its manifest was written */
    char path[1300];
    snprintf(path, sizeof(path), "%s/model.safetensors", d2);
    FILE *f = fopen(path, "r+b");
    REQUIRE(f != NULL);
    fseek(f, -5, SEEK_END);
    fputc(0x7f, f);
    fclose(f);

    she_conf_t *c = new_conf();
    she_stream_t *st = new_stream(c, NULL, 0, 1);
    REQUIRE(st != NULL);
    she_policy_watch_t *pw = NULL;
    REQUIRE_OK(she_policy_watch_new(c, lg, NULL, st, &pw, errstr, sizeof(errstr)));
    REQUIRE_OK(she_policy_watch_start(pw, d0, 0, 1, 8, 20000, errstr, sizeof(errstr)));
    CHECK_EQ_INT(she_policy_watch_version(pw), 0);
    she_model_t *live = she_policy_watch_model(pw);

    double t0 = now_s();
    announce(st, 1, d1, NULL);
    CHECK(poll_swap(pw, 10));
    fprintf(stderr, "announcement -> policy in use: %.3f s (tiny model)\n", now_s() - t0);
    CHECK_EQ_INT(she_policy_watch_version(pw), 1);
    CHECK(live->params[0] == w1);

    announce(st, 2, d2, NULL); /* corrupted */
    CHECK(!poll_swap(pw, 3));
    CHECK_EQ_INT(she_policy_watch_refused(pw), 1);
    announce(st, 3, d3, "0000000000000000000000000000000000000000000000000000000000000000");
    CHECK(!poll_swap(pw, 3));
    CHECK_EQ_INT(she_policy_watch_refused(pw), 2);
    announce(st, 4, d4, NULL); /* another architecture */
    CHECK(!poll_swap(pw, 3));
    CHECK_EQ_INT(she_policy_watch_refused(pw), 3);
    CHECK_EQ_INT(she_policy_watch_version(pw), 1);
    CHECK(live->params[0] == w1); /* the old policy keeps serving */
    CHECK_EQ_INT(she_policy_watch_lag(pw), 3);

    /* a malformed announcement goes to the dead-letter topic; the watch goes on */
    CHECK_OK(she_stream_produce(st, "checkpoints", "v", 1, "\xc3\x01garbage", 9, errstr,
                                sizeof(errstr)));
    CHECK_OK(she_stream_commit(st, 10000, errstr, sizeof(errstr)));
    announce(st, 5, d5, NULL);
    CHECK(poll_swap(pw, 10));
    CHECK_EQ_INT(she_policy_watch_version(pw), 5);
    CHECK(live->params[0] == w5);
    CHECK_EQ_INT(she_policy_watch_lag(pw), 0);
    she_stream_stats_t ss;
    she_stream_stats(st, &ss);
    CHECK(ss.produced >= 7); /* 5 announcements, the garbage, its dead letter */

    /* a second watch starting now takes the newest good announcement directly */
    she_policy_watch_t *pw2 = NULL;
    REQUIRE_OK(she_policy_watch_new(c, lg, NULL, st, &pw2, errstr, sizeof(errstr)));
    REQUIRE_OK(she_policy_watch_start(pw2, d0, 0, 1, 8, 20000, errstr, sizeof(errstr)));
    CHECK_EQ_INT(she_policy_watch_version(pw2), 5);
    she_policy_watch_free(pw2);
    she_policy_watch_free(pw);
    she_stream_free(st);
    she_conf_free(c);
}

static void test_control_state_sets_selector(void) {
    char errstr[SHE_ERRSTR_SIZE];
    she_conf_t *c = she_conf_new();
    REQUIRE_OK(she_conf_add_defs(c, she_selection_conf_defs, errstr, sizeof(errstr)));
    REQUIRE_OK(she_conf_set(c, "selection.stages", "warm:0-1:type:5,all:0-1:none:0", "test",
                            errstr, sizeof(errstr)));
    she_selector_config_t cfg;
    REQUIRE_OK(she_selection_config_from_conf(c, &cfg, errstr, sizeof(errstr)));
    CHECK_EQ_INT(cfg.n_stages, 2);
    CHECK_EQ_INT(cfg.stages[0].balance, SHE_SEL_DIM_QUERY_TYPE);
    CHECK_EQ_INT(cfg.stages[0].max_steps, 5);
    she_selector_t *sel = she_selector_new(&cfg, errstr, sizeof(errstr));
    REQUIRE(sel != NULL);
    she_control_state_t cs = {.seq = 3, .difficulty_lo = 0.2f, .difficulty_hi = 0.6f,
                              .curriculum_stage = 1, .reason = "test"};
    CHECK_OK(she_selection_apply_control(sel, &cs, errstr, sizeof(errstr)));
    she_selector_status_t s;
    she_selector_status(sel, &s);
    CHECK_CLOSE(s.lo, 0.2, 1e-6, 0);
    CHECK_CLOSE(s.hi, 0.6, 1e-6, 0);
    CHECK_EQ_INT(s.stage, 1);
    cs.curriculum_stage = 7;
    CHECK(she_selection_apply_control(sel, &cs, errstr, sizeof(errstr)) == SHE_ERR_INVALID);
    cs.curriculum_stage = 0;
    cs.difficulty_lo = 0.7f;
    CHECK(she_selection_apply_control(sel, &cs, errstr, sizeof(errstr)) == SHE_ERR_INVALID);
    she_selector_status(sel, &s);
    CHECK_EQ_INT(s.stage, 1); /* unchanged by the refused states */

    /* the quotas map carries the query-type caps: applied, replaced, removed; a bad cap refuses
     * the whole state (band and stage stay) */
    she_msg_metric_t q[2] = {{"negation", 0.2}, {"qa", 0.5}};
    cs.difficulty_lo = 0.1f;
    cs.curriculum_stage = 1;
    cs.quotas = q;
    cs.n_quotas = 2;
    CHECK_OK(she_selection_apply_control(sel, &cs, errstr, sizeof(errstr)));
    she_selector_config_t now;
    she_selector_get_config(sel, &now);
    CHECK_EQ_INT(now.n_caps, 2);
    CHECK_STR(now.caps[1].query_type, "qa");
    CHECK_CLOSE(now.caps[0].share, 0.2, 1e-6, 0);
    she_msg_metric_t badq[1] = {{"qa", 1.5}};
    cs.quotas = badq;
    cs.n_quotas = 1;
    cs.difficulty_lo = 0.05f;
    CHECK(she_selection_apply_control(sel, &cs, errstr, sizeof(errstr)) == SHE_ERR_INVALID);
    CHECK(strstr(errstr, "quotas") != NULL);
    she_selector_status(sel, &s);
    CHECK_CLOSE(s.lo, 0.1, 1e-6, 0);
    she_selector_get_config(sel, &now);
    CHECK_EQ_INT(now.n_caps, 2);
    cs.quotas = NULL;
    cs.n_quotas = 0;
    CHECK_OK(she_selection_apply_control(sel, &cs, errstr, sizeof(errstr)));
    she_selector_get_config(sel, &now);
    CHECK_EQ_INT(now.n_caps, 0);

    /* selection.quota.caps and selection.stage.rate */
    REQUIRE_OK(she_conf_set(c, "selection.stages", "all:0-1:none:0", "test", errstr,
                            sizeof(errstr)));
    REQUIRE_OK(she_conf_set(c, "selection.quota.caps", "negation=0.2,qa=1", "test", errstr,
                            sizeof(errstr)));
    REQUIRE_OK(she_selection_config_from_conf(c, &cfg, errstr, sizeof(errstr)));
    CHECK_EQ_INT(cfg.n_caps, 2);
    CHECK_EQ_INT(cfg.stage_recent, 1);
    CHECK_CLOSE(cfg.caps[1].share, 1.0, 1e-6, 0);
    const char *bad_caps[] = {"negation", "negation=0", "negation=2", "=0.2", "a=0.1,b=x",
                              "negation=0.2,negation=0.3"};
    for (size_t i = 0; i < sizeof(bad_caps) / sizeof(bad_caps[0]); i++) {
        REQUIRE_OK(she_conf_set(c, "selection.quota.caps", bad_caps[i], "test", errstr,
                                sizeof(errstr)));
        CHECK(she_selection_config_from_conf(c, &cfg, errstr, sizeof(errstr)) ==
              SHE_ERR_CONFIG);
    }
    REQUIRE_OK(she_conf_set(c, "selection.quota.caps", "", "test", errstr, sizeof(errstr)));
    CHECK(she_conf_set(c, "selection.stages", "bad", "test", errstr, sizeof(errstr)) == SHE_OK);
    CHECK(she_selection_config_from_conf(c, &cfg, errstr, sizeof(errstr)) == SHE_ERR_CONFIG);
    she_selector_free(sel);
    she_conf_free(c);
}

int main(void) {
    const char *tmp = getenv("SHE_TEST_TMP");
    snprintf(tmpdir, sizeof(tmpdir), "%s/stream_plumbing.%d", tmp ? tmp : "/tmp", (int)getpid());
    mkdir(tmpdir, 0777);
    lg = she_log_new("test", SHE_LOG_WARN, 0, stderr);
    char errstr[SHE_ERRSTR_SIZE];
    if (she_broker_new(1, "127.0.0.1", 0, lg, &broker, errstr, sizeof(errstr)) != SHE_OK ||
        she_broker_create_topics(broker, she_topics(), errstr, sizeof(errstr)) != SHE_OK) {
        fprintf(stderr, "broker: %s\n", errstr);
        return 1;
    }
    RUN(test_offsets_json);
    RUN(test_produce_consume_commit);
    RUN(test_dead_letter);
    RUN(test_data_loss_reported);
    RUN(test_policy_watch);
    RUN(test_control_state_sets_selector);
    she_broker_free(broker);
    she_log_free(lg);
    TEST_DONE();
}
