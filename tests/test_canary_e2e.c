/* test_canary_e2e.c -- the evaluation and canary path end to end, with `she broker`, `she
 * evaluate --follow`, `she serve --follow` and `she canary` as separate processes on one
 * machine (one case per run, chosen by argv[1]):
 *
 *   follow  `she evaluate --follow` alone: a malformed announcement goes to the dead-letter
 *           topic, an announcement whose SHA-256 does not match its checkpoint is refused, and
 *           each good policy gets one evaluation record on she.evaluations (keyed by version)
 *           that decodes, names the checkpoint and its hash and carries the same numbers as
 *           `she evaluate --model` on the same rows; the she_eval_* series are on /metrics;
 *           SIGTERM ends it with status 0.
 *   deploy  a small policy trained for the test (v1, stable in serve) and a traffic loop
 *           against serve.  A canary controller with the default gates ABORTs a broken policy
 *           (v2: the weights drowned in noise, so its answers do not parse) offline.  A second
 *           controller, restarted from the deployment log with offline gates opened wide,
 *           STARTs a good policy (v3: v1 with a touch of noise), PROMOTEs it after the soak,
 *           then STARTs another broken one (v4) and ROLLs it BACK on the live error rate.
 *           serve ends with v3 stable and no canary; every decision is on she.deployments with
 *           its reason, in the controllers' logs and in she_canary_decisions_total.
 *
 * The policy: `she train-sft` of a 2-layer, 64-wide model on 64 generated rows for 400 steps
 * (about 10 s on one core); it grades almost every row it was trained on (the rows the traffic
 * and the evaluation use), though it garbles a step of about a third of its chains.  The deploy
 * case skips (77) when the `she` binary has no `serve` command. */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <math.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ckptdir.h"
#include "messages.h"
#include "model.h"
#include "policy_watch.h"
#include "proc.h"
#include "test.h"
#include "tokenizer.h"

static const char *she_bin;
static char dir[1024]; /* this case's scratch directory */
static char bootstrap[256];
static pid_t broker_pid = -1;

/* ---- processes ---- */

/* Lines of dir/<name> containing needle. */
static int log_lines(const char *name, const char *needle) {
    char path[1200];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    return tp_count_lines(path, needle);
}

/* Runs `she ARGS...` to its end; its exit status. */
static int run(const char *log, const char *const *args, double timeout_s) {
    return tp_wait_exit(tp_spawn(she_bin, dir, log, args), timeout_s);
}

/* The number after `prefix` on the first line of dir/<name> holding it, waiting up to
 * timeout_s for it to appear; -1 if it does not. */
static int wait_number_in_log(const char *name, const char *prefix, double timeout_s) {
    char path[1200], line[16384];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    for (double t0 = she_now_s(); she_now_s() - t0 < timeout_s; usleep(100000)) {
        FILE *f = fopen(path, "r");
        while (f && fgets(line, sizeof(line), f)) {
            char *p = strstr(line, prefix);
            if (p) {
                fclose(f);
                return atoi(p + strlen(prefix));
            }
        }
        if (f)
            fclose(f);
    }
    return -1;
}

/* ---- HTTP on 127.0.0.1 ---- */

/* serve's bearer token in the deploy case ("" elsewhere). */
static const char *token = "";

/* One request (with the bearer token when there is one); the status (0 when there was no
 * answer), the body into out. */
static int http(int port, const char *method, const char *path, const char *body, char *out,
                size_t cap) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct timeval tv = {.tv_sec = 30};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int status = 0;
    size_t n = 0;
    out[0] = '\0';
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
        char req[4096];
        int len = snprintf(req, sizeof(req),
                           "%s %s HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
                           "\r\n%s%s%sContent-Length: %zu\r\n\r\n%s",
                           method, path, token[0] ? "Authorization: Bearer " : "", token,
                           token[0] ? "\r\n" : "", body ? strlen(body) : 0, body ? body : "");
        if (write(fd, req, (size_t)len) == len) {
            ssize_t r;
            while (n + 1 < cap && (r = read(fd, out + n, cap - 1 - n)) > 0)
                n += (size_t)r;
            out[n] = '\0';
            sscanf(out, "HTTP/%*d.%*d %d", &status);
            char *sep = strstr(out, "\r\n\r\n");
            if (sep)
                memmove(out, sep + 4, strlen(sep + 4) + 1);
        }
    }
    close(fd);
    return status;
}

/* The sum of metric `name` samples whose labels contain `label` (NULL: any) in a scrape. */
static double metric(int port, const char *name, const char *label) {
    static char text[1 << 20];
    if (http(port, "GET", "/metrics", NULL, text, sizeof(text)) != 200)
        return NAN;
    double sum = NAN;
    size_t nl = strlen(name);
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        if (strncmp(line, name, nl) != 0 || (line[nl] != ' ' && line[nl] != '{'))
            continue;
        if (label && !strstr(line, label))
            continue;
        char *sp = strrchr(line, ' ');
        sum = (isnan(sum) ? 0 : sum) + strtod(sp + 1, NULL);
    }
    return sum;
}

/* ---- policies ---- */

/* gen-data 64 rows, then `she train-sft` of a tiny model for `steps` steps into dir/sft. */
static int train_policy(int steps) {
    char cfg[1200], data[1200], out[1200], steps_s[16];
    snprintf(cfg, sizeof(cfg), "%s/tiny.json", dir);
    snprintf(data, sizeof(data), "%s/data.jsonl", dir);
    snprintf(out, sizeof(out), "%s/sft", dir);
    snprintf(steps_s, sizeof(steps_s), "%d", steps);
    FILE *f = fopen(cfg, "w");
    if (!f)
        return -1;
    fputs("{\"model_type\": \"llama\", \"hidden_size\": 64, \"intermediate_size\": 128,\n"
          " \"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"num_key_value_heads\": 2,\n"
          " \"vocab_size\": 320, \"max_position_embeddings\": 512, \"rms_norm_eps\": 1e-5,\n"
          " \"tie_word_embeddings\": true}\n",
          f);
    fclose(f);
    const char *gen[] = {"gen-data", "--n", "64", "--seed", "3", "--out", data,
                         "--log-level", "warn", NULL};
    const char *sft[] = {"train-sft", "--data", data, "--model-config", cfg, "--vocab", "320",
                         "--lexicons", "", "--batch", "8", "--seq", "160", "--warmup", "10",
                         "--lr", "5e-3", "--max-steps", steps_s, "--eval-every", "0",
                         "--eval-rows", "8", "--val-fraction", "0.1", "--out", out,
                         "--log-level", "warn", NULL};
    if (run("gen-data", gen, 60) != 0 || run("train-sft", sft, 240) != 0)
        return -1;
    return 0;
}

/* A copy of checkpoint src (weights + tokenizer) with N(0, std) noise on every weight, into
 * dst; std 0 copies. */
static int perturbed_copy(const char *src, const char *dst, float std, uint64_t seed) {
    char errstr[SHE_ERRSTR_SIZE], tmp[1300], a[1400], b[1400];
    she_model_t *m = NULL;
    she_err_t err = she_model_load(src, 1, 16, &m, NULL, errstr, sizeof(errstr));
    uint64_t s = seed * 0x9E3779B97F4A7C15ULL + 1;
    for (size_t i = 0; err == SHE_OK && i < m->n_params; i++) {
        double u[2];
        for (int k = 0; k < 2; k++) { /* xorshift64* uniforms in (0, 1) */
            s ^= s >> 12, s ^= s << 25, s ^= s >> 27;
            u[k] = ((double)((s * 2685821657736338717ULL) >> 11) + 0.5) / 9007199254740992.0;
        }
        m->params[i] += std * (float)(sqrt(-2 * log(u[0])) * cos(2 * M_PI * u[1]));
    }
    if (err == SHE_OK)
        err = she_ckptdir_begin(dst, tmp, sizeof(tmp), errstr, sizeof(errstr));
    if (err == SHE_OK)
        err = she_model_write_files(m, NULL, tmp, errstr, sizeof(errstr));
    snprintf(a, sizeof(a), "%s/tokenizer.json", src);
    snprintf(b, sizeof(b), "%s/tokenizer.json", tmp);
    if (err == SHE_OK) {
        she_tokenizer_t *tok = NULL;
        err = she_tokenizer_load(a, &tok, errstr, sizeof(errstr));
        if (err == SHE_OK)
            err = she_tokenizer_save(tok, b, errstr, sizeof(errstr));
        she_tokenizer_free(tok);
    }
    if (err == SHE_OK)
        err = she_ckptdir_commit(tmp, dst, errstr, sizeof(errstr));
    she_model_free(m);
    if (err != SHE_OK)
        fprintf(stderr, "perturbed copy %s -> %s: %s\n", src, dst, errstr);
    return err == SHE_OK ? 0 : -1;
}

/* ---- Kafka ---- */

static rd_kafka_t *producer(void) {
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, err, sizeof(err));
    return rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
}

static void produce(rd_kafka_t *rk, const char *topic, const char *key, const void *val,
                    size_t len) {
    rd_kafka_resp_err_t e = rd_kafka_producev(
        rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(key, strlen(key)),
        RD_KAFKA_V_VALUE((void *)val, len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_END);
    CHECK(e == RD_KAFKA_RESP_ERR_NO_ERROR);
    CHECK(rd_kafka_flush(rk, 10000) == RD_KAFKA_RESP_ERR_NO_ERROR);
}

/* Announces the checkpoint in ckpt as `version` (sha256 NULL: the manifest's). */
static void announce(rd_kafka_t *rk, she_avro_codec_t *ac, int64_t version, const char *ckpt,
                     const char *sha256) {
    char errstr[SHE_ERRSTR_SIZE], hex[65], key[32];
    if (!sha256) {
        CHECK_OK(she_policy_manifest_sha256(ckpt, "model.safetensors", hex, errstr,
                                            sizeof(errstr)));
        sha256 = hex;
    }
    she_checkpoint_announcement_t a = {.version = version, .uri = (char *)ckpt,
                                       .sha256 = (char *)sha256, .parent_version = -1,
                                       .created_ms = (int64_t)time(NULL) * 1000};
    const uint8_t *buf;
    size_t len;
    CHECK_OK(she_msg_encode_checkpoint(ac, &a, &buf, &len, errstr, sizeof(errstr)));
    snprintf(key, sizeof(key), "%" PRId64, version);
    produce(rk, "she.checkpoints", key, buf, len);
}

/* Everything on a topic's first n_partitions partitions, read from the beginning as it comes
 * (in order for a one-partition topic). */
typedef struct tail {
    rd_kafka_t *rk;
    int n;
    char **key;
    uint8_t **val;
    size_t *len;
} tail_t;

static void tail_open(tail_t *t, const char *topic, int n_partitions) {
    char err[512];
    memset(t, 0, sizeof(*t));
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, err, sizeof(err));
    rd_kafka_conf_set(conf, "group.id", "test-canary-e2e", err, sizeof(err));
    rd_kafka_conf_set(conf, "enable.auto.commit", "false", err, sizeof(err));
    t->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
    rd_kafka_poll_set_consumer(t->rk);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(n_partitions);
    for (int p = 0; p < n_partitions; p++)
        rd_kafka_topic_partition_list_add(l, topic, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
    rd_kafka_assign(t->rk, l);
    rd_kafka_topic_partition_list_destroy(l);
}

/* Reads what has arrived, for up to timeout_s or until there are at least want messages. */
static int tail_read(tail_t *t, int want, double timeout_s) {
    for (double t0 = she_now_s(); t->n < want && she_now_s() - t0 < timeout_s;) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(t->rk, 200);
        if (!m)
            continue;
        if (!m->err) {
            t->key = realloc(t->key, sizeof(*t->key) * (t->n + 1));
            t->val = realloc(t->val, sizeof(*t->val) * (t->n + 1));
            t->len = realloc(t->len, sizeof(*t->len) * (t->n + 1));
            t->key[t->n] = strndup(m->key ? (char *)m->key : "", m->key ? m->key_len : 0);
            t->val[t->n] = malloc(m->len ? m->len : 1);
            memcpy(t->val[t->n], m->payload, m->len);
            t->len[t->n] = m->len;
            t->n++;
        }
        rd_kafka_message_destroy(m);
    }
    return t->n;
}

static void tail_close(tail_t *t) {
    for (int i = 0; i < t->n; i++) {
        free(t->key[i]);
        free(t->val[i]);
    }
    free(t->key);
    free(t->val);
    free(t->len);
    if (t->rk) {
        rd_kafka_consumer_close(t->rk);
        rd_kafka_destroy(t->rk);
    }
}

/* ---- follow ---- */

static pid_t she_evaluate_follow(const char *log, const char *data, const char *limit,
                                 const char *batch) {
    const char *args[] = {"evaluate", "--follow", "--data", data, "--lexicons", "",
                          "--limit", limit, "--batch", batch, "--bootstrap", bootstrap,
                          "--metrics", "127.0.0.1:0", NULL};
    return tp_spawn(she_bin, dir, log, args);
}

static void test_follow(void) {
    char errstr[SHE_ERRSTR_SIZE], data[1200], v1[1200], v2[1200], bad[1200];
    REQUIRE(train_policy(200) == 0); /* enough to write some parseable chains */
    snprintf(data, sizeof(data), "%s/data.jsonl", dir);
    snprintf(v1, sizeof(v1), "%s/sft/last", dir);
    snprintf(v2, sizeof(v2), "%s/v2", dir);
    snprintf(bad, sizeof(bad), "%s/sft/best", dir);
    REQUIRE(perturbed_copy(v1, v2, 0.002f, 2) == 0);
    REQUIRE((broker_pid = tp_start_broker(she_bin, dir, bootstrap, sizeof(bootstrap))) > 0);
    she_avro_codec_t *ac = NULL;
    REQUIRE_OK(she_msg_codec_open(NULL, &ac, errstr, sizeof(errstr)));
    rd_kafka_t *rk = producer();

    pid_t ev = she_evaluate_follow("evaluate", data, "12", "5"); /* 3 batches */
    int metrics_port = wait_number_in_log("evaluate.log", "serving /metrics on port ", 30);
    CHECK(metrics_port > 0);
    produce(rk, "she.checkpoints", "garbage", "\xc3\x01not avro", 10);
    announce(rk, ac, 1, v1, NULL);
    tail_t t;
    tail_open(&t, "she.evaluations", 1);
    CHECK_MSG(tail_read(&t, 1, 90) == 1, "no evaluation of v1 within 90 s");
    /* refused: the announced hash is not the checkpoint's; then v2 */
    announce(rk, ac, 2, bad, "0000000000000000000000000000000000000000000000000000000000000000");
    for (double t0 = she_now_s(); log_lines("evaluate.log", "refused checkpoint v2") == 0 &&
                              she_now_s() - t0 < 30;)
        usleep(100000);
    CHECK_MSG(log_lines("evaluate.log", "refused checkpoint v2") == 1, "v2 not refused");
    announce(rk, ac, 3, v2, NULL);
    CHECK_MSG(tail_read(&t, 2, 90) == 2, "no evaluation of v3 within 90 s");
    tail_read(&t, 3, 2); /* nothing else may follow */
    CHECK_EQ_INT(t.n, 2);

    /* the records: versions 1 and 3 (the refused v2 has none), each like `she evaluate` */
    const char *dirs[] = {v1, v2};
    for (int i = 0; i < t.n && i < 2; i++) {
        she_evaluation_record_t r = {0};
        REQUIRE_OK(she_msg_decode_evaluation(ac, t.val[i], t.len[i], &r, errstr,
                                             sizeof(errstr)));
        int64_t want = i == 0 ? 1 : 3;
        CHECK_EQ_INT(r.policy_version, want);
        CHECK_EQ_INT(atoll(t.key[i]), want);
        CHECK_STR(r.checkpoint_uri, dirs[i]);
        char hex[65];
        CHECK_OK(she_policy_manifest_sha256(dirs[i], "model.safetensors", hex, errstr,
                                            sizeof(errstr)));
        CHECK_STR(r.sha256, hex);
        CHECK_EQ_INT(r.rows, 12);
        CHECK_MSG(strstr(r.dataset, "data.jsonl") && strstr(r.dataset, "first 12 rows"), "%s",
                  r.dataset);
        REQUIRE(r.n_per_class_f1 == 4);
        double mean = 0;
        for (int g = 0; g < 4; g++) {
            char name[3] = {'L', (char)('1' + g), 0};
            CHECK_STR(r.per_class_f1[g].name, name);
            mean += r.per_class_f1[g].value / 4;
        }
        CHECK_CLOSE(r.macro_f1, mean, 1e-12, 0);
        CHECK_MSG(r.format_failure_rate < 1, "v%" PRId64 ": no answer parsed: a weak comparison",
                  r.policy_version);
        /* the one-shot evaluator on the same rows */
        char prefix[1300], json_path[1400];
        snprintf(prefix, sizeof(prefix), "%s/oneshot%d", dir, i);
        snprintf(json_path, sizeof(json_path), "%s.json", prefix);
        const char *args[] = {"evaluate", "--model", dirs[i], "--data", data, "--lexicons", "",
                              "--limit", "12", "--batch", "5", "--out", prefix,
                              "--log-level", "warn", NULL};
        REQUIRE(run("oneshot", args, 120) == 0);
        json_t *j = json_load_file(json_path, 0, NULL);
        json_t *m = json_object_get(json_array_get(json_object_get(j, "systems"), 0), "metrics");
        CHECK_CLOSE(r.macro_f1, json_number_value(json_object_get(m, "macro_f1")), 1e-6, 0);
        CHECK_CLOSE(r.good_f1, json_number_value(json_object_get(m, "good_f1")), 1e-6, 0);
        CHECK_CLOSE(r.accuracy, json_number_value(json_object_get(m, "accuracy")), 1e-6, 0);
        CHECK_CLOSE(r.format_failure_rate,
                    json_number_value(json_object_get(m, "format_failure_rate")), 1e-6, 0);
        json_decref(j);
        she_msg_clear_evaluation(&r);
    }

    /* metrics */
    CHECK_CLOSE(metric(metrics_port, "she_evaluations_total", NULL), 2, 0, 0);
    CHECK_CLOSE(metric(metrics_port, "she_eval_policy_version", NULL), 3, 0, 0);
    CHECK(!isnan(metric(metrics_port, "she_eval_macro_f1", "version=\"1\"")));
    CHECK(!isnan(metric(metrics_port, "she_eval_format_failure_ratio", "version=\"3\"")));
    CHECK(isnan(metric(metrics_port, "she_eval_good_f1", "version=\"2\"")));

    /* the malformed announcement is on the dead-letter topic */
    tail_t dl;
    tail_open(&dl, "she.deadletter", 2);
    int found = 0;
    for (double t0 = she_now_s(); !found && she_now_s() - t0 < 20;) {
        tail_read(&dl, dl.n + 1, 1);
        for (int i = 0; i < dl.n && !found; i++) {
            she_dead_letter_t d = {0};
            if (she_msg_decode_dead_letter(ac, dl.val[i], dl.len[i], &d, errstr,
                                           sizeof(errstr)) == SHE_OK)
                found = strcmp(d.source_topic, "she.checkpoints") == 0 && d.key &&
                        d.key_len == 7 && memcmp(d.key, "garbage", 7) == 0;
            she_msg_clear_dead_letter(&d);
        }
    }
    CHECK_MSG(found, "the malformed announcement is not on she.deadletter");
    tail_close(&dl);

    CHECK_EQ_INT(tp_stop(ev), 0);
    CHECK_EQ_INT(log_lines("evaluate.log", "stopping (SIGTERM)"), 1);
    tail_close(&t);
    rd_kafka_destroy(rk);
    she_avro_codec_free(ac);
}

/* ---- deploy ---- */

/* POSTs the rows of data.jsonl (query, title, description: what the policy was trained on) to
 * serve's /v1/judge round and round until killed. */
static pid_t start_traffic(int port) {
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    char path[1200], line[8192], out[65536];
    snprintf(path, sizeof(path), "%s/data.jsonl", dir);
    char **bodies = NULL;
    int n = 0;
    FILE *f = fopen(path, "r");
    while (f && fgets(line, sizeof(line), f)) {
        json_t *j = json_loads(line, 0, NULL);
        json_t *b = json_pack("{s:O,s:O,s:O}", "query", json_object_get(j, "query"), "title",
                              json_object_get(j, "item_title"), "description",
                              json_object_get(j, "item_desc"));
        bodies = realloc(bodies, sizeof(*bodies) * (n + 1));
        bodies[n++] = json_dumps(b, JSON_COMPACT);
        json_decref(b);
        json_decref(j);
    }
    if (f)
        fclose(f);
    for (long i = 0; n > 0; i++)
        http(port, "POST", "/v1/judge", bodies[i % n], out, sizeof(out));
    _exit(0);
}

/* The deployment events so far, decoded, in order. */
typedef struct events {
    she_deployment_event_t ev[16];
    int64_t version[16];
    int n;
} events_t;

static void read_events(tail_t *t, she_avro_codec_t *ac, events_t *e, int want,
                        double timeout_s) {
    char errstr[SHE_ERRSTR_SIZE];
    tail_read(t, want, timeout_s);
    for (; e->n < t->n && e->n < 16; e->n++) {
        CHECK_OK(she_msg_decode_deployment_event(ac, t->val[e->n], t->len[e->n], &e->ev[e->n],
                                                 errstr, sizeof(errstr)));
        e->version[e->n] = atoll(t->key[e->n]);
        fprintf(stderr, "   event %d: %d v%" PRId64 ": %s\n", e->n, (int)e->ev[e->n].action,
                e->version[e->n], e->ev[e->n].reason ? e->ev[e->n].reason : "?");
    }
}

static double event_metric(const she_deployment_event_t *e, const char *name) {
    for (int i = 0; i < e->n_metrics; i++)
        if (strcmp(e->metrics[i].name, name) == 0)
            return e->metrics[i].value;
    return NAN;
}

static pid_t start_canary(const char *log, int serve_port, int permissive) {
    char url[64], token_file[1100];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", serve_port);
    /* the token as a mounted Secret would hold it: a file, first line */
    snprintf(token_file, sizeof(token_file), "%s/serve-token", dir);
    FILE *tf = fopen(token_file, "w");
    SHE_ASSERT(tf && fputs("e2e-token\n", tf) >= 0 && fclose(tf) == 0);
    const char *common[] = {"canary", "--bootstrap", bootstrap, "--serve-url", url,
                            "--token-file", token_file,
                            "--metrics", "127.0.0.1:0", "--soak", "8",
                            "--set", "canary.poll.seconds=0.5", "--set", "canary.share=0.5",
                            "--set", "canary.min.requests=20", "--set", "canary.min.compared=10",
                            "--set", "canary.max.soak.seconds=90"};
    /* Offline gates opened wide, so the live gates must catch the broken policy.  The error
     * bound is sized for the tiny policy: serve counts an answer with any step that does not
     * parse as a judge failure, and the tiny policy garbles a step of about a third of its
     * answers (the broken ones: all). */
    const char *wide[] = {"--set", "canary.f1.epsilon=1", "--set", "canary.max.format.failures=1",
                          "--set", "canary.max.error.rate=0.6", "--set",
                          "canary.min.agreement=0.5", "--set", "canary.max.latency.factor=20",
                          "--set", "canary.latency.slack.seconds=2"};
    const char *args[64];
    int n = 0;
    for (size_t i = 0; i < sizeof(common) / sizeof(*common); i++)
        args[n++] = common[i];
    for (size_t i = 0; permissive && i < sizeof(wide) / sizeof(*wide); i++)
        args[n++] = wide[i];
    args[n] = NULL;
    return tp_spawn(she_bin, dir, log, args);
}

static void test_deploy(void) {
    char errstr[SHE_ERRSTR_SIZE], data[1200], v1[1200], v2[1200], v3[1200], v4[1200];
    char port_file[1200], out[65536];
    double t_start = she_now_s();
    REQUIRE(train_policy(400) == 0);
    snprintf(data, sizeof(data), "%s/data.jsonl", dir);
    snprintf(v1, sizeof(v1), "%s/sft/last", dir);
    snprintf(v2, sizeof(v2), "%s/broken2", dir);
    snprintf(v3, sizeof(v3), "%s/good3", dir);
    snprintf(v4, sizeof(v4), "%s/broken4", dir);
    REQUIRE(perturbed_copy(v1, v2, 1.0f, 2) == 0);
    REQUIRE(perturbed_copy(v1, v3, 1e-4f, 3) == 0);
    REQUIRE(perturbed_copy(v1, v4, 1.0f, 4) == 0);
    fprintf(stderr, "   policies ready after %.0f s\n", she_now_s() - t_start);
    REQUIRE((broker_pid = tp_start_broker(she_bin, dir, bootstrap, sizeof(bootstrap))) > 0);
    she_avro_codec_t *ac = NULL;
    REQUIRE_OK(she_msg_codec_open(NULL, &ac, errstr, sizeof(errstr)));
    rd_kafka_t *rk = producer();
    announce(rk, ac, 1, v1, NULL);

    snprintf(port_file, sizeof(port_file), "%s/serve.port", dir);
    const char *serve_args[] = {"serve", "--model", v1, "--set", "serve.model.version=1",
                                "--follow", "--listen", "127.0.0.1:0", "--port-file", port_file,
                                "--bootstrap", bootstrap, "--set", "serve.shadow.share=1",
                                "--set", "serve.batch.wait.ms=2", "--set",
                                "serve.auth.token=e2e-token", NULL};
    pid_t serve = tp_spawn(she_bin, dir, "serve", serve_args);
    int port = 0;
    for (double t0 = she_now_s(); port <= 0 && she_now_s() - t0 < 60; usleep(100000)) {
        FILE *f = fopen(port_file, "r");
        if (f) {
            if (fscanf(f, "%d", &port) != 1)
                port = 0;
            fclose(f);
        }
    }
    REQUIRE_MSG(port > 0, "serve wrote no port file");
    for (double t0 = she_now_s(); http(port, "GET", "/readyz", NULL, out, sizeof(out)) != 200 &&
                              she_now_s() - t0 < 60;)
        usleep(100000);
    REQUIRE_MSG(http(port, "GET", "/readyz", NULL, out, sizeof(out)) == 200, "serve not ready");
    CHECK_EQ_INT(http(port, "GET", "/admin/status", NULL, out, sizeof(out)), 401);
    token = "e2e-token"; /* from here on: the traffic, the controllers and this test */

    pid_t ev = she_evaluate_follow("evaluate", data, "32", "16");
    tail_t evals, deps;
    tail_open(&evals, "she.evaluations", 1);
    tail_open(&deps, "she.deployments", 1);
    CHECK_MSG(tail_read(&evals, 1, 120) == 1, "no evaluation of v1");
    pid_t traffic = start_traffic(port);

    /* 1. default gates: the broken v2 is refused offline */
    pid_t canary = start_canary("canary-default", port, 0);
    CHECK(wait_number_in_log("canary-default.log", "stable v", 30) == 1);
    announce(rk, ac, 2, v2, NULL);
    events_t e = {0};
    read_events(&deps, ac, &e, 1, 120);
    REQUIRE_MSG(e.n == 1, "no decision on v2 (%.0f s in)", she_now_s() - t_start);
    CHECK_EQ_INT(e.ev[0].action, SHE_DEPLOY_ACTION_ABORT);
    CHECK_EQ_INT(e.version[0], 2);
    CHECK_EQ_INT(e.ev[0].stable_version, 1);
    CHECK_EQ_INT(e.ev[0].canary_version, -1);
    CHECK_MSG(strstr(e.ev[0].reason, "offline gate failed") &&
                  strstr(e.ev[0].reason, "format failure rate"),
              "%s", e.ev[0].reason);
    CHECK(event_metric(&e.ev[0], "canary_format_failure_rate") > 0.5);
    CHECK_EQ_INT(log_lines("canary-default.log", "abort v2"), 1);
    CHECK_EQ_INT(tp_stop(canary), 0);

    /* 2. offline gates wide open, restarted from the deployment log: the good v3 is promoted */
    canary = start_canary("canary", port, 1);
    int canary_metrics = wait_number_in_log("canary.log", "serving /metrics on port ", 30);
    /* the stable-version line follows the metrics line by a moment (it reads the log first) */
    for (double t0 = she_now_s(); log_lines("canary.log", "stable v1 (from the deployment log)") == 0 &&
                              she_now_s() - t0 < 30;)
        usleep(100000);
    CHECK(log_lines("canary.log", "stable v1 (from the deployment log)") == 1);
    announce(rk, ac, 3, v3, NULL);
    read_events(&deps, ac, &e, 3, 150);
    REQUIRE_MSG(e.n == 3, "v3: %d events (%.0f s in)", e.n, she_now_s() - t_start);
    CHECK_EQ_INT(e.ev[1].action, SHE_DEPLOY_ACTION_START);
    CHECK_EQ_INT(e.version[1], 3);
    CHECK_EQ_INT(e.ev[1].canary_version, 3);
    CHECK_CLOSE(e.ev[1].canary_share, 0.5, 1e-6, 0);
    CHECK_EQ_INT(e.ev[2].action, SHE_DEPLOY_ACTION_PROMOTE);
    CHECK_EQ_INT(e.version[2], 3);
    CHECK_EQ_INT(e.ev[2].stable_version, 3);
    CHECK_EQ_INT(e.ev[2].canary_version, -1);
    CHECK_MSG(strstr(e.ev[2].reason, "live gates held"), "%s", e.ev[2].reason);
    CHECK(event_metric(&e.ev[2], "canary_requests") >= 20);
    CHECK(event_metric(&e.ev[2], "shadow_compared") >= 10);
    CHECK(event_metric(&e.ev[2], "soak_seconds") >= 8);

    /* 3. the broken v4 passes the open offline gates and is rolled back live */
    announce(rk, ac, 4, v4, NULL);
    read_events(&deps, ac, &e, 5, 150);
    REQUIRE_MSG(e.n == 5, "v4: %d events (%.0f s in)", e.n, she_now_s() - t_start);
    CHECK_EQ_INT(e.ev[3].action, SHE_DEPLOY_ACTION_START);
    CHECK_EQ_INT(e.version[3], 4);
    CHECK_EQ_INT(e.ev[3].stable_version, 3);
    CHECK_EQ_INT(e.ev[4].action, SHE_DEPLOY_ACTION_ROLLBACK);
    CHECK_EQ_INT(e.version[4], 4);
    CHECK_EQ_INT(e.ev[4].stable_version, 3);
    CHECK_EQ_INT(e.ev[4].canary_version, -1);
    CHECK_MSG(strstr(e.ev[4].reason, "canary error rate"), "%s", e.ev[4].reason);
    CHECK(event_metric(&e.ev[4], "canary_error_rate") > 0.6);
    CHECK(event_metric(&e.ev[4], "canary_judge_failures") >= 1);

    /* serve follows: v3 stable, no canary */
    double t0 = she_now_s();
    json_t *st = NULL;
    for (;;) {
        json_decref(st);
        st = http(port, "GET", "/admin/status", NULL, out, sizeof(out)) == 200
                 ? json_loads(out, 0, NULL)
                 : NULL;
        json_t *canary_role = json_object_get(st, "canary");
        if ((st && json_integer_value(json_object_get(json_object_get(st, "stable"),
                                                      "version")) == 3 &&
             (!canary_role || json_is_null(canary_role))) ||
            she_now_s() - t0 > 30)
            break;
        usleep(200000);
    }
    CHECK_MSG(st && json_integer_value(json_object_get(json_object_get(st, "stable"),
                                                       "version")) == 3,
              "serve's status: %s", out);
    CHECK(st && json_is_null(json_object_get(st, "canary")));
    json_decref(st);

    /* the controller's log and metrics say the same */
    CHECK_EQ_INT(log_lines("canary.log", "start v3"), 1);
    CHECK_EQ_INT(log_lines("canary.log", "promote v3"), 1);
    CHECK_EQ_INT(log_lines("canary.log", "rollback v4"), 1);
    CHECK(canary_metrics > 0);
    CHECK_CLOSE(metric(canary_metrics, "she_canary_decisions_total", "action=\"start\""), 2, 0,
                0);
    CHECK_CLOSE(metric(canary_metrics, "she_canary_decisions_total", "action=\"promote\""), 1, 0,
                0);
    CHECK_CLOSE(metric(canary_metrics, "she_canary_decisions_total", "action=\"rollback\""), 1,
                0, 0);
    CHECK_CLOSE(metric(canary_metrics, "she_stable_version", NULL), 3, 0, 0);
    CHECK_CLOSE(metric(canary_metrics, "she_canary_active", NULL), 0, 0, 0);
    CHECK_CLOSE(metric(canary_metrics, "she_canary_version", NULL), -1, 0, 0);

    kill(traffic, SIGKILL);
    waitpid(traffic, NULL, 0);
    CHECK_EQ_INT(tp_stop(canary), 0);
    CHECK_EQ_INT(tp_stop(ev), 0);
    CHECK_EQ_INT(tp_stop(serve), 0);
    for (int i = 0; i < e.n; i++)
        she_msg_clear_deployment_event(&e.ev[i]);
    tail_close(&evals);
    tail_close(&deps);
    rd_kafka_destroy(rk);
    she_avro_codec_free(ac);
    fprintf(stderr, "   deploy case: %.0f s\n", she_now_s() - t_start);
}

int main(int argc, char **argv) {
    she_bin = getenv("SHE_BIN");
    const char *tmp = getenv("SHE_TEST_TMP");
    if (!she_bin || argc != 2)
        TEST_SKIP("needs SHE_BIN and a case (follow | deploy)");
    snprintf(dir, sizeof(dir), "%s/canary_e2e_%s", tmp ? tmp : "/tmp", argv[1]);
    char cmd[2200];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s' && mkdir -p '%s'", dir, dir);
    if (system(cmd) != 0)
        TEST_SKIP("cannot make %s", dir);
    if (strcmp(argv[1], "follow") == 0) {
        RUN(test_follow);
    } else if (strcmp(argv[1], "deploy") == 0) {
        snprintf(cmd, sizeof(cmd), "'%s' serve --help >/dev/null 2>&1", she_bin);
        if (system(cmd) != 0)
            TEST_SKIP("this she has no `serve` command");
        RUN(test_deploy);
    } else {
        TEST_SKIP("unknown case %s", argv[1]);
    }
    if (broker_pid > 0)
        tp_stop(broker_pid);
    TEST_DONE();
}
